"""Accuracy of ``sift_registration`` against the synthetic ground truth.

**Stacks.** ``stack3d_core.testing.synth`` with static content along z (``dz = 1e-6 µm``:
no method can be sub-pixel over 100 slices when the material itself changes, see
``benchmarks/ACCURACY.md``), texture-rich (96 plane waves, pores and particles), noise 1 %
of full scale, 100 slices, drift (0.3, -0.2) px/slice + 0.5 px jitter, rotation <= 2 deg,
per-axis scale +-1 % and shear <= 0.01 (smooth in z).

**Error.** The applied cumulative matrix ``T_k`` and the truth ``M_k`` map a 16 x 16 grid
covering the slice; the error of slice ``k`` is the RMS distance between the two images
(px); reported: RMS and max over the slices (the registration section of
``benchmarks/ACCURACY.md`` uses the same measure).

**Runs.** ``preserve_scales = false`` (the truth has a real slow scale/rotation drift,
which the detrending would remove by design); chain vs global solve, pair offsets (1, 2)
vs (1, 2, 4); a blank slice (constant + noise) in the middle; the built-in
``registration_calculation`` (pystackreg AFFINE, chain and global) on the same stacks when
it is installed.

Run: ``python plugins_contrib/stack3d-sift/benchmarks/accuracy_sift.py [OUT_DIR]
[--sizes 128,192,256] [--seeds 3,4,5]``; prints a Markdown table and writes
``sift_accuracy.png`` into ``OUT_DIR`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sift_testkit import affine_stack, grid_error, rms  # noqa: E402

RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sift chain (1, 2)", {"solve": "chain"}),
    ("sift global (1, 2) [default]", {}),
    ("sift global (1, 2, 4)", {"pair_offsets": (1, 2, 4)}),
    ("sift chain (1,), affine, RANSAC", {"solve": "chain", "pair_offsets": (1,), "model": "affine"}),
    ("sift global (1, 2), lsq solver", {"solver": "lsq"}),
)


def _sift(volume: np.ndarray, names: Any, work: Path, **params: Any) -> tuple[np.ndarray, float, Any]:
    from stack3d_core.testing import run_step_on_arrays

    from stack3d_sift import SiftRegistration, SiftRegistrationParams

    t0 = time.perf_counter()
    step = SiftRegistration(SiftRegistrationParams(preserve_scales=False, **params))
    _, state, _ = run_step_on_arrays(step, volume, workdir=work, names=names)
    return state.cumulative, time.perf_counter() - t0, state


def _builtin(volume: np.ndarray, work: Path, method: str) -> tuple[np.ndarray, float] | None:
    try:
        from stack3d_core.testing import run_step_on_arrays
        from stack3d_steps._registration_matrices import chain
        from stack3d_steps.registration import RegistrationCalculation, RegistrationCalculationParams
    except ImportError:
        return None
    t0 = time.perf_counter()
    step = RegistrationCalculation(RegistrationCalculationParams(transformation="AFFINE", method=method))
    _, state, _ = run_step_on_arrays(step, volume, workdir=work)
    return chain(state.pairwise)[:, 0] if method == "chain" else state.cumulative[:, 0], time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, default=None)
    ap.add_argument("--sizes", default="128,192,256")
    ap.add_argument("--seeds", default="3,4,5")
    ap.add_argument("--no-builtin", action="store_true", help="skip the pystackreg comparison")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="sift_accuracy_"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[list[str]] = []
    curves: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in sizes:
            results: dict[str, list[tuple[float, float, float]]] = {}
            for seed in seeds:
                stack = affine_stack(100, size, seed=seed)
                volume = stack.volume()
                for label, params in RUNS:
                    cum, seconds, _ = _sift(volume, stack.names, work / "s", **params)
                    err = grid_error(cum, stack)
                    results.setdefault(label, []).append((rms(err), float(err.max()), seconds))
                    if size == sizes[len(sizes) // 2] and seed == seeds[0]:
                        curves[label] = err
                blank = volume.copy()
                blank[50] = np.clip(np.rint(128 + 3 * np.random.default_rng(0).standard_normal(blank.shape[1:])),
                                    0, 255).astype(blank.dtype)
                cum, seconds, state = _sift(blank, stack.names, work / "b")
                err = np.delete(grid_error(cum, stack), 50)
                results.setdefault("sift default, slice 50 blank (other slices)", []).append(
                    (rms(err), float(err.max()), seconds))
                if not args.no_builtin:
                    for method in ("chain", "global"):
                        found = _builtin(volume, work / f"p{method}", method)
                        if found is not None:
                            e = grid_error(found[0], stack)
                            results.setdefault(f"built-in pystackreg AFFINE {method}", []).append(
                                (rms(e), float(e.max()), found[1]))
            for label, vals in results.items():
                a = np.array(vals)
                rows.append([str(size), label, " / ".join(f"{v:.3f}" for v in a[:, 0]),
                             " / ".join(f"{v:.3f}" for v in a[:, 1]), f"{a[:, 2].mean():.1f}"])
    print("| size (px) | run | RMS error (px), seeds " + ", ".join(map(str, seeds))
          + " | max error (px) | wall (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    _figure(curves, out / "sift_accuracy.png", sizes[len(sizes) // 2], seeds[0])
    print(f"\nFigure: {out / 'sift_accuracy.png'}")
    return 0


def _figure(curves: dict[str, np.ndarray], path: Path, size: int, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, err in curves.items():
        ax.plot(err, label=label, lw=1.2)
    ax.axhline(0.3, color="red", ls="--", lw=0.8, label="0.3 px")
    ax.set_xlabel("slice")
    ax.set_ylabel("grid misplacement RMS (px)")
    ax.set_title(f"sift_registration vs truth: {size} px, seed {seed}, affine drift")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
