"""Speed of ``registration_calculation``: phase correlation against pystackreg.

1. **Per pair**: one TRANSLATION pair (slices ``k-1``, ``k`` of a synthetic uint8 stack with
   drift + jitter, noise 1 %) registered by each algorithm (``register_pair`` and
   ``register_pair_phasecorr``, the calls the step makes), in one thread (the BLAS/OpenMP
   thread variables are set to 1 before numpy loads; scipy.fft uses one worker by
   default; pystackreg is single-threaded). Median over ``--repeat`` passes of the pairs
   ``(k-1, k)``, ``k = 1 .. PAIRS``, the two algorithms alternating pair by pair so that
   a noisy machine affects both alike.
2. **Step**: the wall time of ``registration_calculation`` (``method = "chain"``, serial
   executor, TIFF slices read from disk) on a project of ``--slices`` slices, each
   algorithm run ``--repeat`` times alternately; median.

Run: ``python benchmarks/registration_speed.py [--sizes 512 1024] [--slices 100]
[--step-size 512] [--repeat 3]``; prints Markdown.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

PAIRS = 8


def _stack(n: int, size: int):  # noqa: ANN202 - a SyntheticStack
    from stack3d_core.testing.synth import SynthSpec, make_stack

    return make_stack(SynthSpec(n_slices=n, shape=(size, size), seed=0, gains=False, background=False, stripes=False,
                                noise_sigma=0.01, nonuniform_z=False, dz_um=1e-6,
                                name_pattern="slice_{index:04d}_z={z:.8f}um.tif"))


def per_pair(size: int, repeat: int) -> tuple[float, float]:
    """Median seconds per pair: (pystackreg, phase correlation)."""
    from stack3d_steps._registration_matrices import register_pair
    from stack3d_steps._registration_phasecorr import register_pair_phasecorr

    volume = _stack(PAIRS + 1, size).volume()
    block = [(0, size, 0, size)]
    register_pair_phasecorr(volume[0], volume[1], block, None)  # warm-up (imports, caches)
    register_pair(volume[0], volume[1], "TRANSLATION", block, None)
    times: dict[str, list[float]] = {"pystackreg": [], "phase_correlation": []}
    for _ in range(repeat):
        for k in range(1, PAIRS + 1):
            t0 = time.perf_counter()
            register_pair(volume[k - 1], volume[k], "TRANSLATION", block, None)
            times["pystackreg"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            register_pair_phasecorr(volume[k - 1], volume[k], block, None)
            times["phase_correlation"].append(time.perf_counter() - t0)
    return float(np.median(times["pystackreg"])), float(np.median(times["phase_correlation"]))


def step_wall(n: int, size: int, repeat: int, work: Path) -> tuple[float, float]:
    """Median wall time (s) of the step on an ``n``-slice project: (pystackreg, phase correlation)."""
    import shutil

    import tifffile

    from stack3d_core import PluginHost, parse_config, run
    from stack3d_io import plugin as io_plugin
    from stack3d_steps import plugin as steps_plugin

    host = PluginHost(autoload=False)
    host.register(io_plugin, "io")
    host.register(steps_plugin, "steps")
    folder = work / "project"
    folder.mkdir(parents=True)
    for name, image in _stack(n, size).iter_observed():
        tifffile.imwrite(folder / name, image, photometric="minisblack")
    times: dict[str, list[float]] = {"pystackreg": [], "phase_correlation": []}
    for _ in range(repeat):
        for algorithm in times:
            shutil.rmtree(folder / "process", ignore_errors=True)
            config = parse_config({"process_steps": ["registration_calculation"],
                                   "registration_calculation": {"algorithm": algorithm}}, host, project_dir=folder)
            t0 = time.perf_counter()
            run(config, host=host)
            times[algorithm].append(time.perf_counter() - t0)
    return float(np.median(times["pystackreg"])), float(np.median(times["phase_correlation"]))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square slice sizes of the pairs")
    parser.add_argument("--slices", type=int, default=100, help="slices of the step's project (0: skip)")
    parser.add_argument("--step-size", type=int, default=512, help="slice size of the step's project")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        ps, pc = per_pair(size, args.repeat)
        rows.append(f"| one pair, {size}x{size} | {ps * 1e3:.1f} ms | {pc * 1e3:.1f} ms | {ps / pc:.1f} |")
    if args.slices:
        with tempfile.TemporaryDirectory() as tmp:
            ps, pc = step_wall(args.slices, args.step_size, args.repeat, Path(tmp))
        rows.append(f"| step (chain, serial, TIFF read included), {args.slices} x {args.step_size}x{args.step_size} "
                    f"| {ps:.2f} s | {pc:.2f} s | {ps / pc:.1f} |")
    return (f"Python {platform.python_version()}, {platform.machine()}, one thread; median of {args.repeat} "
            f"passes.\n\n| measure | pystackreg | phase correlation | ratio |\n|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


if __name__ == "__main__":
    sys.stdout.write(main())
