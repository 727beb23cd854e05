"""Time per slice of VSNR: stack3d's implementation (``backend = "stack3d"``, the CPU
default) against pyvsnr as the ``pyvsnr`` backend calls it (numpy + pyFFTW, float32,
``norm=False``), one thread, on the same slices, interleaved.

For each size and filter set: the median over ``--repeat`` runs of the calling thread's CPU
time (``time.thread_time``: robust on a shared machine; both run single-threaded) and of
the wall time, the ratio, the iteration counts of both, stack3d's time divided by that of
its FFTs alone (one forward and one inverse per iteration after the first, timed apart) and
the largest difference between the two outputs.
The slices are uint16 synthetic stripes + noise (``stack3d_core.testing.synth``).

Run: ``python benchmarks/vsnr_speed.py [--size 512 --size 1024 ...] [--repeat 7]``; prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack3d_core.testing.synth import SynthSpec, make_stack  # noqa: E402
from stack3d_steps._destriping_algos import _numpy_namespace, vsnr_destripe  # noqa: E402
from stack3d_steps._vsnr_fast import vsnr_stack3d  # noqa: E402

FILTERS = {
    "1 Gabor (template)": [{"name": "Gabor", "noise_level": 20, "sigma": (0.5, 200), "theta": 0}],
    "2 Gabors (real-stack file)": [{"name": "Gabor", "noise_level": 30, "sigma": (0.5, 80), "theta": 0},
                                   {"name": "Gabor", "noise_level": 80, "sigma": (0.5, 200), "theta": 0}],
    "Gabor + Dirac": [{"name": "Gabor", "noise_level": 20, "sigma": (1.5, 60), "theta": 5},
                      {"name": "Dirac", "noise_level": 10}],
}


def slice_of(rows: int, cols: int) -> np.ndarray:
    stack = make_stack(SynthSpec(n_slices=1, shape=(rows, cols), dtype="uint16", seed=2, gains=False,
                                 background=False, stripes=True, noise_sigma=2.0, nonuniform_z=False,
                                 drift_px_per_slice=(0.0, 0.0), jitter_px=0.0))
    return stack.observed(0)


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    cpu, wall = time.thread_time(), time.perf_counter()
    fn()
    return time.thread_time() - cpu, time.perf_counter() - wall


def fft_time(shape: tuple[int, int], repeat: int) -> float:
    """CPU time of one forward rfft2 plus one inverse (as stack3d runs them), float32."""
    real = np.random.default_rng(0).random(shape, dtype=np.float32)
    half = scipy.fft.rfft2(real)

    def pair() -> None:
        scipy.fft.rfft2(real)
        spec = scipy.fft.ifft(half, axis=0)
        scipy.fft.irfft(spec, n=shape[1], axis=1, overwrite_x=True)

    pair()
    return statistics.median(timed(pair)[0] for _ in range(max(repeat, 5)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", action="append", help="ROWS or ROWSxCOLS (repeatable; default 512 and 1024)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--maxit", type=int, default=50)
    parser.add_argument("--cvg-threshold", type=float, default=1e-2)
    args = parser.parse_args(argv)
    sizes = []
    for text in args.size or ["512", "1024"]:
        rows, _, cols = text.partition("x")
        sizes.append((int(rows), int(cols or rows)))
    print(f"maxit = {args.maxit}, cvg_threshold = {args.cvg_threshold}; median of {args.repeat}; "
          "CPU = the calling thread's CPU time\n")
    print("| slice | filters | iterations (pyvsnr / stack3d) | pyvsnr CPU ms | stack3d CPU ms | ratio | "
          "pyvsnr wall ms | stack3d wall ms | stack3d ÷ its FFT time | max abs diff (gray) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in sizes:
        image = slice_of(*shape)
        fft = fft_time(shape, args.repeat)
        for name, filters in FILTERS.items():
            ours = functools.partial(vsnr_destripe, image, filters, maxit=args.maxit,
                                     cvg_threshold=args.cvg_threshold, backend="stack3d")
            theirs = functools.partial(vsnr_destripe, image, filters, maxit=args.maxit,
                                       cvg_threshold=args.cvg_threshold, backend="numpy")
            info = vsnr_stack3d(image, filters, maxit=args.maxit, cvg_threshold=args.cvg_threshold,
                                track_criteria=True)
            _, cvg = importlib.import_module("pyvsnr.vsnr2d").vsnr2d_py(
                image.astype(np.float32), filters, maxit=args.maxit, norm=False, cvg_threshold=args.cvg_threshold,
                return_cvg=True, xp=_numpy_namespace())
            diff = float(np.abs(ours().astype(np.float64) - theirs()).max())
            t_theirs, t_ours = [], []
            for _ in range(args.repeat):  # interleaved
                t_theirs.append(timed(theirs))
                t_ours.append(timed(ours))
            cpu_t, cpu_o = (statistics.median(t[0] for t in ts) for ts in (t_theirs, t_ours))
            wall_t, wall_o = (statistics.median(t[1] for t in ts) for ts in (t_theirs, t_ours))
            ffts = (info.iterations - 1) * fft  # 1 forward + 1 inverse per iteration after the first
            print(f"| {shape[0]}x{shape[1]} | {name} | {len(cvg) + 1} / {info.iterations} | {cpu_t * 1e3:.0f} | "
                  f"{cpu_o * 1e3:.0f} | {cpu_t / cpu_o:.2f} | {wall_t * 1e3:.0f} | {wall_o * 1e3:.0f} | "
                  f"{cpu_o / ffts:.2f} | {diff:.3f} |", flush=True)


if __name__ == "__main__":
    main()
