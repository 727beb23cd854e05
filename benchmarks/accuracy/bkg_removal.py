"""Accuracy of ``bkg_removal`` against the synthetic ground truth (and PyStack3D 2026.2).

Stacks from :mod:`stack3d_core.testing.synth` with the polynomial background of
``SynthSpec.background_terms`` (``-0.02 + 0.10 x - 0.12 y + 0.12 y^2 - 0.08 x z``, full
scale fractions; peak-to-peak 13 % of the full scale on slice 0, 5 % on the last) and no
drift, gain or curtain. Scenarios:

* **background only**: flat content (a single gray level), no noise;
* **+ noise, pores, particles**: flat texture, 6 % of the volume in spheres of radius
  2-8 px (pores 0.08, particles 0.88 full scale), Gaussian noise 0.02;
* **+ texture**: the same with a two-phase texture (0.45 / 0.55, wavelengths 2-8 px);
* **default content**: ``SynthSpec``'s own content (texture 0.30 / 0.65 with wavelengths up
  to 50 px, spheres up to 20 px): its low spatial frequencies are a "background" too.

Error: the largest ``|fitted - true|`` over every pixel and slice, each surface taken
relative to its slice mean (the constant level is not background), in % of the full scale
(255). *Floor*: the same error when the identical fit is run on the stack **without** the
background: what the content itself puts into the polynomial. An equivariant fit (all
three are) can do no better; "error = floor" means the method adds nothing of its own.

PyStack3D's coefficients (``coefs.npz``) are read back and evaluated on the same grid
(its 2D mode writes them before crashing in its plot).

Run: ``python benchmarks/accuracy/bkg_removal.py [OUT_DIR] [--pystack3d PYTHON]``; prints
a Markdown section and writes ``bkg_removal_accuracy.png`` into ``OUT_DIR``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import pyplot, pystack3d_python, save_figure, write_project

QUIET = dict(gains=False, stripes=False, nonuniform_z=False, drift_px_per_slice=(0.0, 0.0), jitter_px=0.0)
SCENARIOS: dict[str, dict[str, Any]] = {
    "background only": dict(QUIET, n_slices=8, shape=(128, 128), noise_sigma=0.0, texture_levels=(0.5, 0.5),
                            sphere_fraction=0.0),
    "+ noise, pores, particles": dict(QUIET, n_slices=8, shape=(192, 192), dz_um=0.3, noise_sigma=0.02,
                                      texture_levels=(0.5, 0.5), radius_px=(2, 8)),
    "+ texture": dict(QUIET, n_slices=16, shape=(192, 192), dz_um=0.3, noise_sigma=0.02, radius_px=(2, 8),
                      wavelength_px=(2, 8), texture_levels=(0.45, 0.55)),
    "default content": dict(QUIET, n_slices=16, shape=(128, 128), dz_um=0.3, noise_sigma=0.01),
}
MODES = {"2D": ([1, 2], [4, 4]), "3D": ([1, 2, 1], [4, 4, 1])}
RUNNER = """
import sys, time
from pystack3d import Stack3d
for folder in sys.argv[1:]:
    t0 = time.perf_counter()
    try:
        Stack3d(folder).eval(process_steps=["bkg_removal"], nproc=1, show_pbar=False)
    except Exception as exc:  # 2D mode crashes in its plot, after writing coefs.npz
        print("failed", folder, type(exc).__name__, file=sys.stderr)
    print("SECONDS", folder, time.perf_counter() - t0)
"""


def _errors(stack: Any, powers: Any, coefs_of: Any, background: bool = True) -> tuple[float, float]:
    """(max, rms) of fitted - true (both minus their slice mean), % of full scale."""
    from stack3d_steps import _bkg_poly as poly

    worst, sq = 0.0, 0.0
    n = len(stack)
    for k in range(n):
        fit = poly.evaluate(powers, coefs_of(k), stack.shape, poly.z_coord(k, n))
        true = stack.background(k).astype(np.float64) if background else np.zeros(stack.shape)
        diff = (fit - fit.mean()) - (true - true.mean())
        worst = max(worst, float(np.abs(diff).max()))
        sq += float((diff ** 2).mean())
    scale = 100.0 / stack.full_scale
    return worst * scale, np.sqrt(sq / n) * scale


def _ours(volume: np.ndarray, orders: list[int], skips: list[int], wf: str) -> tuple[Any, float]:
    """The fitted state (measure + combine, as the engine runs them; no side outputs)."""
    from stack3d_core import StackMeta, StepContext
    from stack3d_steps.bkg_removal import BkgRemoval, BkgRemovalParams

    step = BkgRemoval(BkgRemovalParams(orders=orders, cross_terms=True, skip_factors=skips, weight_func=wf))
    n, rows, cols = volume.shape
    ctx = StepContext(step=step.name, channel=".", channels=(".",), project_dir=Path("."), image_dir=Path("."),
                      outputs_dir=Path("."), names=tuple(f"{k}" for k in range(n)),
                      meta=StackMeta(n=n, shape=(rows, cols), dtype=volume.dtype.name), process_dir=Path("."))
    t0 = time.perf_counter()
    state = step.combine(ctx, [step.measure(volume[k], k) for k in range(n)])
    for k in range(n):
        step.apply(volume[k], k, state)
    return state, time.perf_counter() - t0


def _write_pystack3d(volume: np.ndarray, orders: list[int], skips: list[int], wf: str, folder: Path) -> Path:
    return write_project(
        folder, ((f"slice_{k:04d}_z={k * 0.01:.4f}um.tif", image) for k, image in enumerate(volume)),
        'ind_min = 0\nind_max = 99999\nchannels = ["."]\nnproc = 1\nprocess_steps = ["bkg_removal"]\n'
        f'history = []\n[bkg_removal]\norders = {orders}\ncross_terms = true\nskip_factors = {skips}\n'
        f'weight_func = "{wf}"\n')


def _run_pystack3d(python: str, folders: list[Path]) -> dict[str, float]:
    """Run PyStack3D on every folder in one interpreter; seconds per folder."""
    done = subprocess.run([python, "-c", RUNNER, *map(str, folders)], capture_output=True, text=True, timeout=1800)
    return {line.split()[1]: float(line.split()[2]) for line in done.stdout.splitlines() if line.startswith("SECONDS")}


def _read_pystack3d(folder: Path) -> tuple[Any, np.ndarray]:
    with np.load(folder / "process/bkg_removal/outputs/coefs.npz") as npz:
        return tuple(tuple(int(v) for v in p) for p in npz["powers"]), npz["coefs"]


def main(out_dir: Path, pystack3d: str | None = None) -> str:
    from stack3d_core.testing.synth import make_stack
    from stack3d_steps._bkg_robust import robust_fit

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    python = pystack3d_python(pystack3d, must_exist=True)
    rows: list[str] = []
    figure_data: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bkg_accuracy_"))
    try:
        results: list[tuple[str, str, str, float, float, float, Path | None, Any]] = []
        for scenario, spec in SCENARIOS.items():
            stack = make_stack(**spec)
            volume = stack.volume()
            no_bkg = np.stack([np.clip(np.rint(stack.observed_float(k) - stack.background(k)), 0, stack.full_scale)
                               for k in range(len(stack))]).astype(volume.dtype)
            for mode, (orders, skips) in MODES.items():
                for wf in ("None", "HuberT", "Hampel"):
                    state, _ = _ours(volume, orders, skips, wf)
                    err, rms = _errors(stack, state.powers, state.slice_coefs)
                    floor_state, _ = _ours(no_bkg, orders, skips, wf)
                    floor, _ = _errors(stack, floor_state.powers, floor_state.slice_coefs, background=False)
                    folder = None
                    if python and wf != "None":
                        name = f"{scenario}-{mode}-{wf}".replace(" ", "_").replace(",", "").replace("+", "p")
                        folder = _write_pystack3d(volume, orders, skips, wf, tmp / name)
                    results.append((scenario, mode, wf, err, rms, floor, folder, stack))
                    if scenario == "+ texture" and mode == "3D":
                        figure_data[wf] = state
            if scenario == "+ texture":
                figure_data["stack"] = stack
        if python:
            _run_pystack3d(python, [r[6] for r in results if r[6] is not None])
        for scenario, mode, wf, err, rms, floor, folder, stack in results:
            theirs = "-"
            if folder is not None:
                powers, coefs = _read_pystack3d(folder)
                theirs = f"{_errors(stack, powers, lambda k, c=coefs: c[k])[0]:.2f}"
                if scenario == "+ texture" and mode == "3D" and wf == "HuberT":
                    figure_data["pystack3d"] = (powers, coefs[0])
            rows.append(f"| {scenario} | {mode} | {wf} | {err:.2f} | {rms:.2f} | {floor:.2f} | {theirs} |")

        # heavy one-sided contamination: 30 % of the points 80-120 above a plane (sigma 2)
        rng = np.random.default_rng(42)
        x, y = rng.random(300), rng.random(300)
        design = np.column_stack([np.ones(300), y, x, x * y, x**2])
        truth = np.array([100.0, -20.0, 30.0, 15.0, -10.0])
        values = design @ truth + rng.normal(0, 2.0, 300)
        out = rng.random(300) < 0.3
        values[out] += rng.uniform(80, 120, out.sum())
        grid = np.column_stack([np.ones(441), *(lambda g: (g[1], g[0], g[0] * g[1], g[0] ** 2))(
            np.mgrid[0:1:21j, 0:1:21j].reshape(2, -1))])
        heavy = []
        for label, wf, start in (("least squares", "None", "ols"), ("Huber, OLS start (statsmodels)", "HuberT", "ols"),
                                 ("Hampel, OLS start (statsmodels)", "Hampel", "ols"),
                                 ("Huber, LAD start (stack3d)", "HuberT", "lad"),
                                 ("Hampel, LAD start (stack3d)", "Hampel", "lad")):
            c = robust_fit(design.copy(), values, wf, start=start).coefs
            heavy.append(f"| {label} | {np.abs(grid @ (c - truth)).max():.1f} |")

        timing = _timing(tmp, python)
        _figure(figure_data, out_dir / "bkg_removal_accuracy.png")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    note = "" if python else "\n(PyStack3D not found: set STACK3D_PYSTACK3D_PYTHON for its column.)\n"
    return "\n".join([
        "## bkg_removal",
        "",
        "Largest background error over every pixel and slice, % of full scale (255); rms over all pixels; "
        "floor = the same fit on the stack without its background (what the content itself contributes). "
        "2D: orders [1, 2], skip [4, 4]; 3D: orders [1, 2, 1], skip [4, 4, 1]; cross terms. "
        "Background peak-to-peak: 13 % (first slice) to 5 % (last slice) of the full scale.",
        "",
        "| content | mode | weight_func | error max (%) | error rms (%) | floor (%) | PyStack3D error max (%) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        note,
        "Heavy one-sided contamination (30 % of 300 points 80-120 above a quadratic surface, noise sigma 2): "
        "largest error of the fitted surface on a 21 x 21 grid (PyStack3D = statsmodels RLM = OLS start).",
        "",
        "| fit | error max |",
        "|---|---|",
        *heavy,
        "",
        timing,
        "",
        "Figure: `bkg_removal_accuracy.png` (the + texture stack, 3D fit: true and fitted background of the "
        "middle slice, error map, profiles).",
    ])


def _run_stack3d(folder: Path) -> float:
    """Whole-step wall time of stack3d on a project folder (serial, TIFF in and out, plots)."""
    from stack3d_core import PluginHost, run

    host = PluginHost()  # every installed plugin: the built-in steps and the plots
    t0 = time.perf_counter()
    run(folder, host=host, redo=True)
    return time.perf_counter() - t0


def _timing(tmp: Path, python: str | None) -> str:
    from stack3d_core.testing.synth import make_stack

    stack = make_stack(**dict(QUIET, n_slices=24, shape=(1024, 1024), dtype="uint16", noise_sigma=0.01))
    volume = stack.volume()
    lines = ["Speed, whole step on 24 slices of 1024 x 1024 uint16 (TIFF in and out, side outputs and plots "
             "included), HuberT, one process:", "",
             "| mode | stack3d (s) | PyStack3D (s) |", "|---|---|---|"]
    cases = (("2D", [2, 2], [10, 10]), ("3D", [2, 2, 1], [10, 10, 2]))
    folders = {}
    ours = {}
    for mode, orders, skips in cases:
        folder = _write_pystack3d(volume, orders, skips, "HuberT", tmp / f"speed-{mode}")
        shutil.copytree(folder, tmp / f"speed-{mode}-ours")
        ours[mode] = _run_stack3d(tmp / f"speed-{mode}-ours")
        folders[mode] = folder
    seconds = _run_pystack3d(python, list(folders.values())) if python else {}
    for mode, *_ in cases:
        theirs = f"{seconds[str(folders[mode])]:.1f}" if str(folders[mode]) in seconds else "-"
        if mode == "2D" and theirs != "-":
            theirs += " (then crashes in its plot)"
        lines.append(f"| {mode} | {ours[mode]:.1f} | {theirs} |")
    return "\n".join(lines)


def _figure(data: dict[str, Any], path: Path) -> None:
    from stack3d_steps import _bkg_poly as poly

    stack = data["stack"]
    n = len(stack)
    k = n // 2
    z = poly.z_coord(k, n)

    def centred(a: np.ndarray) -> np.ndarray:
        return (a - a.mean()) * 100 / stack.full_scale

    true = centred(stack.background(k).astype(np.float64))
    fits = {wf: centred(poly.evaluate(data[wf].powers, data[wf].coefs, stack.shape, z)) for wf in ("None", "HuberT", "Hampel")}
    if "pystack3d" in data:
        powers, coefs = data["pystack3d"]
        fits["PyStack3D HuberT"] = centred(poly.evaluate(powers, coefs, stack.shape, z))
    fig, axes = pyplot().subplots(2, 3, figsize=(13, 7.5), layout="constrained")
    lim = np.abs(true).max()
    for ax, (title, img) in zip(axes[0], (("observed slice", stack.observed(k)), ("true background (%)", true),
                                          ("HuberT fit - true (%)", fits["HuberT"] - true))):
        kw = {"cmap": "gray"} if title.startswith("observed") else {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
        if title.startswith("HuberT"):
            err = np.abs(img).max()
            kw = {"cmap": "RdBu_r", "vmin": -err, "vmax": err}
        im = ax.imshow(img, **kw)
        ax.set_title(f"{title}, slice {k}")
        fig.colorbar(im, ax=ax, shrink=0.8)
    row, col = stack.shape[0] // 2, stack.shape[1] // 2
    for ax, (label, cut) in zip(axes[1][:2], (("x (column, px), middle row", np.s_[row, :]),
                                             ("y (row, px, top = 0), middle column", np.s_[:, col]))):
        ax.plot(true[cut], "k", lw=3, alpha=0.4, label="true")
        for name, fit in fits.items():
            ax.plot(fit[cut], label=name, ls="--" if "PyStack3D" in name else "-")
        ax.set_xlabel(label)
        ax.set_ylabel("background - mean (% full scale)")
        ax.legend(fontsize=8)
    names = list(fits)
    axes[1][2].bar(names, [np.abs(fits[name] - true).max() for name in names], color=["C0", "C1", "C2", "C3"][:len(names)])
    axes[1][2].set_ylabel(f"largest error, slice {k} (% full scale)")
    axes[1][2].tick_params(axis="x", labelsize=8, labelrotation=15)
    fig.suptitle("bkg_removal, 3D fit on a textured stack with pores, particles and noise")
    save_figure(fig, path, dpi=100)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path("benchmarks/output/accuracy"))
    parser.add_argument("--pystack3d", help="Python interpreter with PyStack3D 2026.2")
    args = parser.parse_args()
    print(main(args.out_dir, args.pystack3d))
    sys.exit(0)
