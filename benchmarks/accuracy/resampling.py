"""Accuracy of ``resampling`` on a synthetic stack whose only defect is non-uniform z
(jittered steps and a doubled one), against the exact clean volume.

Each output slice at ``z`` is compared with ``stack.clean_at(z)``, the clean volume rendered
exactly at that depth. The **interpolation floor** is the same interpolation applied to the
float clean slices at the input z (no rounding), computed here independently of the step:
a step that adds no error of its own sits on it. Runs: stack3d ``linear`` and ``cubic``, and
PyStack3D 2026.2 (linear only) when an interpreter with it is given
(``STACK3D_PYSTACK3D_PYTHON`` or ``--pystack3d``).

Run: ``python benchmarks/accuracy/resampling.py [OUT_DIR] [--pystack3d PYTHON]``; prints a
Markdown section and writes ``resampling_accuracy.png`` into ``OUT_DIR``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import markdown_table, pyplot, pystack3d_python, run_timed, save_figure, write_project

N, SHAPE, SEED, DZ = 40, (128, 128), 4, 0.01


def _stack() -> Any:
    from stack3d_core.testing.synth import SynthSpec, make_stack

    return make_stack(SynthSpec(n_slices=N, shape=SHAPE, dtype="uint16", seed=SEED, gains=False, background=False,
                                stripes=False, noise_sigma=0.0, nonuniform_z=True, drift_px_per_slice=(0.0, 0.0),
                                jitter_px=0.0))


def _write(folder: Path, stack: Any, method: str) -> None:
    write_project(
        folder, stack.iter_observed(),
        'ind_min = 0\nind_max = 99999\nchannels = ["."]\nnproc = 1\nprocess_steps = ["resampling"]\n'
        f'history = []\n\n[resampling]\npolicy = "slice_{{slice_nb}}_z={{z_coord}}um.tif"\ndz = {DZ}\n'
        + (f'method = "{method}"\n' if method != "linear" else ""))


def _floor(clean: np.ndarray, z_in: np.ndarray, z: float, method: str) -> np.ndarray:
    """The interpolation of the float clean slices (independent of the step's code)."""
    i = int(np.clip(np.searchsorted(z_in, z, side="right") - 1, 0, len(z_in) - 2))
    if method == "linear":
        t = (z - z_in[i]) / (z_in[i + 1] - z_in[i])
        return (1 - t) * clean[i] + t * clean[i + 1]
    lo = min(max(i - 1, 0), len(z_in) - 4)
    coef = np.linalg.solve(np.vander(z_in[lo:lo + 4], 4), clean[lo:lo + 4].reshape(4, -1))
    return (np.vander([z], 4) @ coef).reshape(clean.shape[1:])


def _measure(work: Path, pystack3d: str | None) -> tuple[list[list[str]], dict[str, Any]]:
    import tifffile

    stack = _stack()
    clean_in = np.stack([stack.clean(k) for k in range(N)]).astype(np.float64)
    truth: dict[str, np.ndarray] = {}
    runs = [("stack3d", "linear", None), ("stack3d", "cubic", None)]
    if pystack3d:
        runs.append(("PyStack3D", "linear", pystack3d))
    rows, curves = [], {}
    for program, method, python in runs:
        folder = work / f"{program}-{method}"
        _write(folder, stack, method)
        wall = run_timed(folder, ["resampling"], python)
        z_out = np.load(folder / "process/resampling/outputs/zpos_out.npy")
        names = sorted((folder / "process/resampling").glob("*.tif"))
        assert len(names) == len(z_out)
        err, floor, worst = [], [], 0.0
        for path, z in zip(names, z_out):
            key = f"{z:.10f}"
            if key not in truth:
                truth[key] = stack.clean_at(float(z)).astype(np.float64)
            diff = tifffile.imread(path).astype(np.float64) - truth[key]
            err.append(float(np.sqrt(np.mean(diff ** 2))))
            worst = max(worst, float(np.abs(diff).max()))
            floor.append(float(np.sqrt(np.mean((_floor(clean_in, stack.z_um, float(z), method) - truth[key]) ** 2))))
        rms, rms_floor = float(np.sqrt(np.mean(np.square(err)))), float(np.sqrt(np.mean(np.square(floor))))
        fs = stack.full_scale
        rows.append([program, method, str(len(z_out)), f"{z_out[-1]:.4f}", f"{rms:.1f} ({100 * rms / fs:.2f} %)",
                     f"{rms_floor:.1f}", f"{rms - rms_floor:+.2f}", f"{worst:.0f}", f"{wall:.1f}"])
        curves[f"{program} {method}"] = (z_out, np.asarray(err), np.asarray(floor))
    return rows, {"curves": curves, "z_in": stack.z_um, "z_last": stack.z_um[-1]}


def _figure(data: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 7), layout="constrained", sharex=True)
    for label, (z, err, floor) in data["curves"].items():
        ax.plot(z, err, ".-", lw=0.8, label=f"{label} (output vs truth)")
        if label.startswith("stack3d"):
            ax.plot(z, floor, ":", lw=1.2, label=f"{label.split()[1]} floor (float clean slices)")
    for z in data["z_in"]:
        ax.axvline(z, color="0.85", lw=0.5, zorder=0)
    ax.set_ylabel("RMS error (uint16 gray levels)")
    ax.set_title("resampling onto dz = 0.01 µm: error against the exact clean volume (grey lines: input z)")
    ax.legend(fontsize=8)
    ax2.plot(data["z_in"][1:], np.diff(data["z_in"]), "o-", label="input dz")
    ax2.axhline(DZ, color="C1", label="output dz")
    ax2.set_xlabel("z (µm)")
    ax2.set_ylabel("dz (µm)")
    ax2.legend()
    save_figure(fig, path, dpi=100)


def main(out_dir: Path, pystack3d: str | None = None) -> str:
    """Measure, save the figure into ``out_dir`` and return a Markdown section."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pystack3d = pystack3d_python(pystack3d)
    with tempfile.TemporaryDirectory() as tmp:
        rows, data = _measure(Path(tmp), pystack3d)
    _figure(data, out_dir / "resampling_accuracy.png")
    table = markdown_table(["program", "method", "output slices", "last z (µm)", "RMS error vs truth",
                            "floor (same interpolation of the clean slices)", "step − floor", "max abs error",
                            "wall (s)"], rows)
    note = "" if pystack3d else "\nPyStack3D was not run (set STACK3D_PYSTACK3D_PYTHON).\n"
    return (
        "## Resampling: error against the exact clean volume\n\n"
        f"Synthetic stack of {N} slices of {SHAPE[0]}x{SHAPE[1]} uint16 (seed {SEED}), non-uniform z only "
        f"(input z from 0 to {data['z_last']:.4f} µm, nominal 0.01 µm, jitter ±20 %, a doubled step); "
        f"output grid dz = {DZ} µm. Errors in uint16 gray levels (and % of full scale).\n\n"
        + table + "\n" + note + "\nFigure: `resampling_accuracy.png`.\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="benchmarks/accuracy/out", type=Path)
    parser.add_argument("--pystack3d", default=None, help="Python interpreter with PyStack3D installed")
    args = parser.parse_args()
    sys.stdout.write(main(args.out_dir, args.pystack3d))
