"""Accuracy of ``destriping`` (VSNR and wavelet–Fourier) on synthetic stacks whose only
defect is stripes, against the ground truth.

Measures, over all slices (``s_k`` = the exact stripe image the generator added, ``c_k`` the
clean slice, ``o_k`` the output):

* **stripe energy removed** = ``1 - Σ E(o) / Σ E(input)``, ``E(x) = <x - c, s>² / <s, s>``
  (the energy of the residual projected on the true stripe pattern);
* **correlation** to the clean slices (Pearson, mean over slices), before → after;
* **residual RMS** ``‖o - c‖`` in gray levels, before → after (it also counts what the method
  removed from the content).

Two stacks (uint8, 256x256, every other defect off): full-height vertical stripes (the
model both methods assume) and the generator's default curtains (decaying from the top,
tilted up to 3°). Each configuration is run through stack3d and, when an interpreter with
it is given (``STACK3D_PYSTACK3D_PYTHON`` or ``--pystack3d``), through PyStack3D 2026.2 on
a copy of the same project.

Run: ``python benchmarks/accuracy/destriping.py [OUT_DIR] [--pystack3d PYTHON]``; prints a
Markdown section and writes ``destriping_accuracy.png`` into ``OUT_DIR``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import markdown_table, pyplot, pystack3d_python, run_timed, save_figure, write_project

N, SHAPE, SEED = 6, (256, 256), 2
GABOR = '{ name = "Gabor", noise_level = 20, sigma = [0.5, 200], theta = 0 }'
TWO_GABORS = ('{ name = "Gabor", noise_level = 30, sigma = [0.5, 80], theta = 0 }, '
              '{ name = "Gabor", noise_level = 80, sigma = [0.5, 200], theta = 0 }')
CONFIGS: dict[str, str] = {
    "VSNR, 1 Gabor (template)": f"maxit = 50\ncvg_threshold = 1e-2\nfilters = [{GABOR}]\n",
    "VSNR, 2 Gabors (real stack)": f"maxit = 50\ncvg_threshold = 1e-2\nfilters = [{TWO_GABORS}]\n",
    "wavelet coif3/4, sigma 4": 'wavelet_decomposition = { wavelet = "coif3", level = 4, sigma = 4 }\n',
    "wavelet coif3/4, sigma 1": 'wavelet_decomposition = { wavelet = "coif3", level = 4, sigma = 1 }\n',
}
STACKS = {"full-height vertical stripes": {"stripe_full_height_fraction": 1.0, "stripe_tilt_deg_max": 0.0},
          "default curtains": {}}


def _stack(overrides: dict[str, Any]) -> Any:
    from stack3d_core.testing.synth import SynthSpec, make_stack

    return make_stack(SynthSpec(n_slices=N, shape=SHAPE, dtype="uint8", seed=SEED, gains=False, background=False,
                                stripes=True, noise_sigma=0.0, nonuniform_z=False, drift_px_per_slice=(0.0, 0.0),
                                jitter_px=0.0, **overrides))


def _write(folder: Path, stack: Any, table: str) -> None:
    write_project(folder, stack.iter_observed(), 'ind_min = 0\nind_max = 99999\nchannels = ["."]\nnproc = 1\n'
                  f'process_steps = ["destriping"]\nhistory = []\n\n[destriping]\n{table}')


def _read(folder: Path, names: tuple[str, ...]) -> np.ndarray:
    import tifffile

    return np.stack([tifffile.imread(folder / "process/destriping" / n)[:SHAPE[0], :SHAPE[1]] for n in names])


def metrics(stack: Any, volume: np.ndarray) -> tuple[float, float, float]:
    """(projected stripe energy, mean correlation to clean, residual RMS)."""
    energy, corr, sq = 0.0, [], []
    for k in range(len(stack)):
        clean, s = stack.clean(k).astype(np.float64), stack.stripes(k).astype(np.float64)
        r = volume[k].astype(np.float64) - clean
        energy += float((r * s).sum()) ** 2 / float((s * s).sum())
        corr.append(np.corrcoef(volume[k].ravel().astype(np.float64), clean.ravel())[0, 1])
        sq.append(np.mean(r * r))
    return energy, float(np.mean(corr)), float(np.sqrt(np.mean(sq)))


def _measure(work: Path, pystack3d: str | None) -> tuple[list[list[str]], dict[str, np.ndarray]]:
    rows, shown = [], {}
    for stack_label, overrides in STACKS.items():
        stack = _stack(overrides)
        observed = stack.volume()
        e_in, c_in, r_in = metrics(stack, observed)
        if stack_label == "default curtains":
            shown["input"], shown["clean"] = observed[N // 2], stack.clean(N // 2)
        for label, table in CONFIGS.items():
            programs = [("stack3d", None)] + ([("PyStack3D", pystack3d)] if pystack3d else [])
            for program, python in programs:
                folder = work / f"{len(rows)}"
                _write(folder, stack, table)
                wall = run_timed(folder, ["destriping"], python)
                out = _read(folder, stack.names)
                e, c, r = metrics(stack, out)
                rows.append([stack_label, label, program, f"{100 * (1 - e / e_in):.1f} %",
                             f"{c_in:.4f} → {c:.4f}", f"{r_in:.2f} → {r:.2f}", f"{wall:.1f}"])
                if stack_label == "default curtains" and program == "stack3d" and label in (
                        "VSNR, 2 Gabors (real stack)", "wavelet coif3/4, sigma 1"):
                    shown[label] = out[N // 2]
                shutil.rmtree(folder)
    return rows, shown


def _figure(shown: dict[str, np.ndarray], path: Path) -> None:
    plt = pyplot()
    labels = ["input", "VSNR, 2 Gabors (real stack)", "wavelet coif3/4, sigma 1"]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), layout="constrained")
    for j, label in enumerate(labels):
        axes[0, j].imshow(shown[label], cmap="gray", vmin=0, vmax=255)
        axes[0, j].set_title(label)
        diff = shown[label].astype(np.float64) - shown["clean"]
        axes[1, j].imshow(diff, cmap="coolwarm", vmin=-20, vmax=20)
        axes[1, j].set_title(f"{label} − clean (RMS {np.sqrt(np.mean(diff ** 2)):.1f})")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"destriping, default curtains, slice {N // 2} (stack3d); residual colour range ±20 gray levels")
    save_figure(fig, path, dpi=100)


def main(out_dir: Path, pystack3d: str | None = None) -> str:
    """Measure, save the figure into ``out_dir`` and return a Markdown section."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pystack3d = pystack3d_python(pystack3d)
    with tempfile.TemporaryDirectory() as tmp:
        rows, shown = _measure(Path(tmp), pystack3d)
    _figure(shown, out_dir / "destriping_accuracy.png")
    table = markdown_table(["stripes", "configuration", "program", "stripe energy removed", "correlation to clean",
                            "residual RMS (gray levels)", "wall (s)"], rows)
    note = "" if pystack3d else "\nPyStack3D was not run (set STACK3D_PYSTACK3D_PYTHON).\n"
    return (
        "## Destriping: stripe energy removed and correlation to the clean slices\n\n"
        f"Synthetic stacks of {N} slices of {SHAPE[0]}x{SHAPE[1]} uint8 (seed {SEED}), stripes only. Stripe energy: "
        "residual (output − clean) projected on the true stripe image; correlation: Pearson, mean over slices. "
        "VSNR runs with maxit = 50, cvg_threshold = 1e-2 (PyStack3D's example files).\n\n"
        + table + "\n" + note + "\nFigure: `destriping_accuracy.png`.\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="benchmarks/accuracy/out", type=Path)
    parser.add_argument("--pystack3d", default=None, help="Python interpreter with PyStack3D installed")
    args = parser.parse_args()
    sys.stdout.write(main(args.out_dir, args.pystack3d))
