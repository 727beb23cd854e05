"""Accuracy of ``intensity_rescaling`` and ``intensity_rescaling_area`` on synthetic stacks
whose only defect is a per-slice gain (plus tiny noise), against the ground truth.

Measure (``stack3d_steps._intensity_metrics``): ``ĝ_k`` = least-squares slope of output
slice ``k`` against the clean slice ``k``; the jump left at a true gain boundary ``k`` is
``|ĝ_k − ĝ_(k−1)|``. Two stacks: the generator's gain **and offset** jumps (``g·I + o``,
offset keeping mid-grey) and a pure gain (``g·I``). Each is run through stack3d and, when an
interpreter with it is given (``STACK3D_PYSTACK3D_PYTHON`` or ``--pystack3d``), through
PyStack3D 2026.2 on a copy of the same project.

Run: ``python benchmarks/accuracy/intensity.py [OUT_DIR] [--pystack3d PYTHON]``; prints a
Markdown section and writes ``intensity_gain_jumps.png`` into ``OUT_DIR``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import markdown_table, pyplot, pystack3d_python, run_timed, save_figure, write_project

N, SHAPE, SEGMENTS, SEED = 64, (128, 128), 5, 3

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "intensity_rescaling, filter_size = -1": ("intensity_rescaling", {"nbins": 256, "filter_size": -1}),
    "intensity_rescaling, filter_size = 10": ("intensity_rescaling", {"nbins": 256, "filter_size": 10}),
    "intensity_rescaling_area, whole slice": ("intensity_rescaling_area", {"factors_range": [0.8, 1.2]}),
}


def _toml(step: str, params: dict[str, Any]) -> str:
    lines = ["ind_min = 0", "ind_max = 99999", 'channels = ["."]', "nproc = 1",
             f'process_steps = ["{step}"]', "history = []", "", f"[{step}]"]
    for key, value in params.items():
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _read_step(folder: Path, step: str, names: tuple[str, ...]) -> np.ndarray:
    import tifffile

    return np.stack([tifffile.imread(folder / "process" / step / name) for name in names])


def _measure(out_dir: Path, pystack3d: str | None) -> tuple[list[list[str]], dict[str, Any]]:
    from stack3d_steps._intensity_metrics import gain_jumps, gain_test_stack, slice_gains

    rows, curves = [], {}
    with tempfile.TemporaryDirectory(prefix="stack3d_bench_int_") as tmp:
        for label, multiplicative in (("gain + offset", False), ("pure gain", True)):
            data = gain_test_stack(N, SHAPE, seed=SEED, segments=SEGMENTS, multiplicative=multiplicative)
            bounds = data["boundaries"]
            g_in = slice_gains(data["observed"], data["clean"])
            rows.append([label, "input", "-", *gain_jumps(g_in, bounds).row(), "-"])
            curves[(label, "input")] = g_in
            for cname, (step, params) in CONFIGS.items():
                for who in ("stack3d", "PyStack3D 2026.2"):
                    if who != "stack3d" and not pystack3d:
                        continue
                    folder = Path(tmp) / f"{label}_{step}_{len(rows)}_{who[:5]}".replace(" ", "_")
                    write_project(folder, zip(data["names"], data["observed"]), _toml(step, params))
                    seconds = run_timed(folder, [step], None if who == "stack3d" else pystack3d, timeout=600)
                    g = slice_gains(_read_step(folder, step, data["names"]), data["clean"])
                    rows.append([label, who, cname, *gain_jumps(g, bounds).row(), f"{seconds:.2f}"])
                    curves[(label, who, cname)] = g
            curves[(label, "bounds")] = bounds
            curves[(label, "truth")] = data["gain"]
    _figure(curves, out_dir / "intensity_gain_jumps.png")
    return rows, curves


def _figure(curves: dict[Any, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True, layout="constrained")
    for ax, label in zip(axes, ("gain + offset", "pure gain")):
        frames = np.arange(N)
        ax.plot(frames, curves[(label, "truth")], color="0.6", lw=3, label="true gain")
        ax.plot(frames, curves[(label, "input")], "k.", ms=4, label="input ĝ")
        styles = {"intensity_rescaling, filter_size = -1": "C0", "intensity_rescaling, filter_size = 10": "C2",
                  "intensity_rescaling_area, whole slice": "C1"}
        for cname, colour in styles.items():
            if (label, "stack3d", cname) in curves:
                ax.plot(frames, curves[(label, "stack3d", cname)], color=colour, lw=1.4, label=f"stack3d {cname}")
            if (label, "PyStack3D 2026.2", cname) in curves:
                ax.plot(frames, curves[(label, "PyStack3D 2026.2", cname)], color=colour, lw=1, ls="--",
                        label=f"PyStack3D {cname}")
        for b in curves[(label, "bounds")]:
            ax.axvline(b - 0.5, color="C3", lw=0.6, alpha=0.5)
        ax.set_title(f"{label} defect: residual gain ĝ per slice (red lines: true gain boundaries)")
        ax.set_ylabel("ĝ (slope vs clean)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small", ncol=2, loc="lower left")
    axes[-1].set_xlabel("slice index")
    save_figure(fig, path, dpi=110, atomic=True)


def main(out_dir: Path, pystack3d: str | None = None) -> str:
    """Measure, save the figure into ``out_dir`` and return a Markdown section."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pystack3d = pystack3d_python(pystack3d)
    rows, _ = _measure(out_dir, pystack3d)
    table = markdown_table(["defect", "program", "step", "mean jump", "max jump", "smooth", "spread", "wall (s)"], rows)
    note = "" if pystack3d else "\nPyStack3D was not run (set STACK3D_PYSTACK3D_PYTHON).\n"
    return (
        "## Intensity rescaling: gain jumps left after correction\n\n"
        f"Synthetic stacks of {N} slices of {SHAPE[0]}x{SHAPE[1]} uint8 (seed {SEED}, {SEGMENTS} gain "
        "segments, gains 0.8-1.15, noise 0.003 full scale; no motion, background or curtains). "
        "ĝ_k = least-squares slope of output slice k against the clean slice k. *mean / max jump*: "
        "|ĝ_k − ĝ_(k−1)| over the slices k where the true gain changes; *smooth*: median of the same "
        "away from those slices; *spread*: std(ĝ) / mean(ĝ). Wall time includes TIFF I/O and plots "
        "(PyStack3D: also the interpreter start).\n\n"
        + table + "\n" + note
        + "\nFigure: `intensity_gain_jumps.png`.\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=Path(__file__).resolve().parents[1] / "output" / "accuracy", type=Path)
    parser.add_argument("--pystack3d", default=None, help="Python interpreter with PyStack3D installed")
    args = parser.parse_args()
    sys.stdout.write(main(args.out_dir, args.pystack3d))
