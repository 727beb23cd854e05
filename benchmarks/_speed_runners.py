"""The timed runs of ``benchmarks/speed.py``: each tool in a fresh interpreter of its own
(stack3d in this one's environment, PyStack3D in its virtual environment), and the
tifffile read/write baseline.

Each child prints one line ``RESULT {json}`` at the end: per-step seconds, the import
time, and the peak resident memory read inside the child: its own (``VmHWM`` of
``/proc/self/status``, the driver; ``getrusage`` would count the benchmark process it was
forked from) and that of its largest finished child process (``RUSAGE_CHILDREN``, the
largest worker, which carries the size of the tool's driver when the worker started). The parent measures the child's wall time
(end to end: interpreter start, imports, every step). A child that fails or runs past its
timeout is killed with its process group and reported with the end of its output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MARK", "VARIANTS", "ToolRun", "make_pystack3d_venv", "run_child", "run_pystack3d", "run_stack3d", "run_tifffile"]

MARK = "RESULT "

_RUSAGE = """
def _peaks():
    # The driver's peak is VmHWM: ru_maxrss (RUSAGE_SELF) survives exec on Linux, so a
    # child started from a large parent (this benchmark holds the stack and its truth)
    # would report the parent's size. Workers are started by the tool's driver.
    import resource
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    self_mb = int(line.split()[1]) / 1024
    except OSError:
        pass
    return self_mb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
"""

STACK3D_CHILD = _RUSAGE + r"""
import json, sys, time
t0 = time.perf_counter()
import stack3d_io.plugin, stack3d_steps.plugin, stack3d_steps.plots
from stack3d_core import PluginHost, run
folder, steps, nproc, variant = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
host = PluginHost(autoload=False)  # the built-in plugins: steps, io and the plots observer
host.register(stack3d_io.plugin, "io")
host.register(stack3d_steps.plugin, "steps")
if variant.get("plots", True):
    host.register(stack3d_steps.plots, "plots")
t_import = time.perf_counter() - t0
if variant.get("params"):  # parameter overrides, e.g. the registration algorithm
    import tomllib
    from stack3d_core import parse_config
    from pathlib import Path
    data = tomllib.loads((Path(folder) / "params.toml").read_text())
    for table, values in variant["params"].items():
        if table in data:
            data[table].update(values)
    config = parse_config(data, host, project_dir=Path(folder))
else:
    config = folder
executor = variant.get("executor") or ("processes" if nproc > 1 else "serial")
result = run(config, steps=steps, executor=executor, workers=nproc, host=host, redo=True,
             keep_intermediates=variant.get("keep", False))
self_mb, children_mb = _peaks()
print("RESULT " + json.dumps({"steps": result.seconds, "import": t_import, "self_mb": self_mb,
                              "children_mb": children_mb, "warnings": list(result.warnings),
                              "out_dir": str(result.last_dir) if result.last_dir else None}))
"""

PYSTACK3D_CHILD = _RUSAGE + r"""
import json, sys, threading, time
t0 = time.perf_counter()
from pystack3d import Stack3d
folder, steps, nproc = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
t_import = time.perf_counter() - t0
stack = Stack3d(folder)
queue = stack.queue_incr  # drained as its progress bar would (a full pipe blocks the exit)
threading.Thread(target=lambda: [queue.get() for _ in iter(int, 1)], daemon=True).start()
seconds = {}
for step in steps:  # one step at a time: each reads the previous step's output (history)
    t1 = time.perf_counter()
    stack.eval(process_steps=[step], nproc=nproc, show_pbar=False)
    seconds[step] = time.perf_counter() - t1
self_mb, children_mb = _peaks()
last = [s for s in steps if s != "registration_calculation"]
print("RESULT " + json.dumps({"steps": seconds, "import": t_import, "self_mb": self_mb, "children_mb": children_mb,
                              "out_dir": str(stack.project_dir / "process" / last[-1]) if last else None}))
"""

TIFFFILE_CHILD = _RUSAGE + r"""
import json, shutil, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import tifffile
src, dst, nthreads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
files = sorted(src.glob("*.tif"))
out = {"bytes": 0}
t = time.perf_counter()
for f in files:
    out["bytes"] += tifffile.imread(f).nbytes
out["read"] = time.perf_counter() - t

def copy(f, d):
    tifffile.imwrite(d / f.name, tifffile.imread(f), photometric="minisblack")

for label, n in (("serial", 1), ("threads", nthreads)):
    if label == "threads" and n < 2:
        continue
    d = dst / label
    d.mkdir(parents=True)
    t = time.perf_counter()
    if n == 1:
        for f in files:
            copy(f, d)
    else:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda f: copy(f, d), files))
    out[label] = time.perf_counter() - t
    shutil.rmtree(d)
out["self_mb"], out["children_mb"] = _peaks()
print("RESULT " + json.dumps(out))
"""


@dataclass
class ToolRun:
    """One timed run of a tool (or of the baseline)."""

    tool: str
    ok: bool
    wall: float = float("nan")
    steps: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def self_mb(self) -> float:
        return float(self.data.get("self_mb", float("nan")))

    @property
    def children_mb(self) -> float:
        return float(self.data.get("children_mb", float("nan")))


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_child(tool: str, python: str, code: str, args: Sequence[str], timeout: float,
              env: dict[str, str] | None = None) -> ToolRun:
    """Run ``python -c code *args`` in a new session; parse its ``RESULT`` line. A
    failure, a missing result or a timeout (the whole process group is killed) gives
    ``ok=False`` with the end of the output in ``error``."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen([python, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, env=env)
    except OSError as exc:
        return ToolRun(tool, False, error=f"could not start {python}: {exc}")
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        return ToolRun(tool, False, wall=time.perf_counter() - t0,
                       error=f"timed out after {timeout:.0f} s\n{_tail(stdout + stderr)}")
    finally:
        _kill_group(proc)  # stray workers, if any
    wall = time.perf_counter() - t0
    lines = [line for line in stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        return ToolRun(tool, False, wall=wall, error=f"exit status {proc.returncode}\n{_tail(stderr or stdout)}")
    data = json.loads(lines[-1][len(MARK):])
    data["stderr"] = stderr
    return ToolRun(tool, True, wall=wall, steps=data.pop("steps", {}), data=data)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")  # both tools save figures; never open a window
    return env


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "stack3d": ("stack3d", {}),
    "stack3d-stored": ("stack3d, keep_intermediates", {"keep": True}),
    "stack3d-pc": ("stack3d, phase_correlation", {"params": {"registration_calculation":
                                                             {"algorithm": "phase_correlation"}}}),
    "stack3d-dask": ("stack3d on Dask", {"executor": "dask"}),
    "stack3d-stored-noplots": ("stack3d, keep_intermediates, without the plots plugin",
                               {"keep": True, "plots": False}),
}
"""The stack3d runs: tool name -> (label, options). ``stack3d``: the defaults (fused
engine), same parameters as PyStack3D; ``stack3d-stored``: every step stores its images
(PyStack3D's layout; per-step times comparable with PyStack3D's); ``stack3d-pc``: the
defaults with ``registration_calculation.algorithm = "phase_correlation"`` (stack3d's
faster TRANSLATION registration); ``stack3d-dask``: the defaults on a local Dask cluster
of ``nproc`` single-threaded workers; ``stack3d-stored-noplots``: ``stack3d-stored``
without the ``plots`` observer (no ``stats.png`` / ``cut_planes.png``, the steps' own
figures stay), to time the image passes apart from those two figures per step."""


def run_stack3d(folder: Path, steps: Sequence[str], nproc: int, timeout: float, variant: str = "stack3d") -> ToolRun:
    """stack3d on ``folder`` (this interpreter's environment): serial for ``nproc == 1``,
    else the processes executor with ``nproc`` workers; ``variant`` is a key of :data:`VARIANTS`."""
    options = VARIANTS[variant][1]
    return run_child(variant, sys.executable, STACK3D_CHILD,
                     [str(folder), json.dumps(list(steps)), str(nproc), json.dumps(options)], timeout, _quiet_env())


def run_pystack3d(python: str, folder: Path, steps: Sequence[str], nproc: int, timeout: float) -> ToolRun:
    """PyStack3D on ``folder`` in ``python``: ``Stack3d(folder).eval(process_steps=[step],
    nproc=nproc)`` for each step in turn, in one process."""
    return run_child("pystack3d", python, PYSTACK3D_CHILD, [str(folder), json.dumps(list(steps)), str(nproc)],
                     timeout, _quiet_env())


def run_tifffile(folder: Path, scratch: Path, nproc: int, timeout: float) -> ToolRun:
    """Read every slice of ``folder`` (seconds: ``read``), then read and write each into a
    new folder under ``scratch``, serially (``serial``) and with ``nproc`` threads
    (``threads``, when ``nproc > 1``)."""
    return run_child("tifffile", sys.executable, TIFFFILE_CHILD, [str(folder), str(scratch), str(nproc)], timeout)


def make_pystack3d_venv(folder: Path) -> str:
    """``python -m venv DIR && DIR/bin/pip install pystack3d==2026.2``; returns
    ``DIR/bin/python``. An existing venv is reused (pip then has nothing to do)."""
    folder = Path(folder).resolve()
    python = folder / "bin" / "python"
    if not python.exists():
        print(f"creating {folder} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, stdout=sys.stderr)
    # pip's messages go to stderr: stdout is the report
    subprocess.run([str(folder / "bin" / "pip"), "install", "pystack3d==2026.2"], check=True, stdout=sys.stderr)
    return str(python)
