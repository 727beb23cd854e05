"""Peak memory of a pipeline run against the number of slices.

For each stack length, a synthetic project is written (in a separate process), then
``stack3d run`` (cropping + cropping_final) is timed in a fresh interpreter and its peak
resident memory is read from ``getrusage``: the driver's own (``RUSAGE_SELF``) and the
largest worker process (``RUSAGE_CHILDREN``). If slices stream from reader to writer, the
peak does not grow with the number of slices.

Run: ``python benchmarks/engine_memory.py [--shape 1024 1024] [--slices 25 100 400]``.
Prints a Markdown table (medians of ``--repeat`` runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from stack3d_core import run
t0 = time.perf_counter()
run(sys.argv[1], executor=sys.argv[2], workers=int(sys.argv[3]), redo=True)
wall = time.perf_counter() - t0
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall": wall, "self_mb": self_kb / 1024, "child_mb": child_kb / 1024}))
"""

BASELINE = r"""
import json, resource
import stack3d_core, stack3d_steps.plugin, stack3d_io.plugin, tifffile, numpy
print(json.dumps({"self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(project: Path, executor: str, workers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(project), executor, str(workers)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(1024, 1024))
    parser.add_argument("--slices", type=int, nargs="+", default=(25, 100, 400))
    parser.add_argument("--dtype", default="uint16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--executors", nargs="+", default=("serial", "processes"))
    args = parser.parse_args()

    base = json.loads(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True,
                                     check=True).stdout)["self_mb"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.slices:
            project = Path(tmp) / f"n{n}"
            subprocess.run([sys.executable, "-m", "stack3d_core", "synth", str(project), "--slices", str(n),
                            "--shape", *map(str, args.shape), "--dtype", args.dtype], check=True,
                           capture_output=True)
            (project / "ground_truth" / "clean.npy").unlink()  # not needed here
            slice_mb = args.shape[0] * args.shape[1] * (2 if args.dtype == "uint16" else 1) / 2**20
            for executor in args.executors:
                runs = [measure(project, executor, 2) for _ in range(args.repeat)]
                rows.append((n, n * slice_mb, executor,
                             statistics.median(r["wall"] for r in runs),
                             statistics.median(r["self_mb"] for r in runs),
                             statistics.median(r["child_mb"] for r in runs)))
    print(f"Stack: {args.shape[0]}x{args.shape[1]} {args.dtype}; steps cropping + cropping_final; "
          f"median of {args.repeat}; interpreter with stack3d imported: {base:.0f} MB\n")
    print("| slices | stack (MB) | executor | wall (s) | driver peak RSS (MB) | largest worker peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for n, mb, ex, wall, self_mb, child_mb in rows:
        child = f"{child_mb:.0f}" if ex != "serial" else "-"
        print(f"| {n} | {mb:.0f} | {ex} | {wall:.2f} | {self_mb:.0f} | {child} |")


if __name__ == "__main__":
    main()
