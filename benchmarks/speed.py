"""Speed and scale: stack3d against PyStack3D 2026.2 on the same synthetic project, in
the same run, per step and end to end, with peak memory, quality against the ground
truth and a tifffile read/write baseline.

For each size (``--size`` / ``--preset``):

1. a synthetic uint16 stack with every defect (:mod:`stack3d_core.testing.synth`) and one
   ``params.toml`` in PyStack3D's keys (:func:`_speed_project.speed_params`) are written;
2. the tifffile baseline reads every slice, then reads and writes each into a new folder
   (serial, and with ``--nproc`` threads): the cost of one pass over the stack;
3. each tool runs ``--repeat`` times, interleaved, each run on a fresh copy of the slices,
   in a fresh interpreter: stack3d in this environment (``stack3d_core.run``; serial for
   ``--nproc 1``, else the processes executor), PyStack3D in its own virtual environment
   (``Stack3d(dir).eval(process_steps=[step], nproc=N)`` step after step in one process);
   per-step times come from inside, end to end is the child's wall time;
4. the first run of each tool is scored against the truth (:mod:`_quality`), then every
   run folder is deleted.

PyStack3D's interpreter: ``--pystack3d PYTHON``, else ``$STACK3D_PYSTACK3D_PYTHON``; or
``--make-pystack3d-venv DIR`` creates it (``python -m venv DIR && DIR/bin/pip install
pystack3d==2026.2``). Prints Markdown (or writes ``--out``).

Run: ``python benchmarks/speed.py --preset small --repeat 1`` (a quick check) or
``python benchmarks/speed.py --preset issue --repeat 3 --pystack3d /path/to/venv/bin/python``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the _speed_* helpers, when imported from elsewhere
    sys.path.insert(0, str(HERE))

from _speed_project import (  # noqa: E402
    ALL_STEPS,
    PRESETS,
    Size,
    check_disk,
    copy_project,
    env_versions,
    machine_info,
    parse_size,
    spec_for,
    write_project,
)
from _speed_report import SizeResult, render  # noqa: E402
from _speed_runners import (  # noqa: E402
    VARIANTS,
    ToolRun,
    make_pystack3d_venv,
    run_pystack3d,
    run_stack3d,
    run_tifffile,
)

SCORED = ("stack3d", "stack3d-pc", "pystack3d")
"""Runs whose output is scored against the truth (the stored and Dask runs give the
default run's output bit for bit: tests/test_fused.py, tests/test_engine.py)."""

TOOL_NAMES = (*VARIANTS, "pystack3d", "tifffile")
DEFAULT_TOOLS = tuple(t for t in TOOL_NAMES if t != "stack3d-stored-noplots")


def _log(msg: str) -> None:
    print(f"[speed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--size", action="append", default=[], metavar="NxROWSxCOLS",
                   help="stack size, e.g. 100x1024x1024 (repeatable)")
    p.add_argument("--preset", action="append", default=[], choices=sorted(PRESETS),
                   help="small: " + ", ".join(PRESETS["small"]) + "; issue: " + ", ".join(PRESETS["issue"]))
    p.add_argument("--repeat", type=int, default=3, help="runs per tool and size; times are medians (default 3)")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes for both tools: PyStack3D nproc, stack3d workers (processes executor when > 1)")
    p.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                   help="comma-separated, among: " + ",".join(TOOL_NAMES) + " (default: all but stack3d-stored-noplots)")
    p.add_argument("--steps", default=",".join(ALL_STEPS), help="comma-separated steps (default: all, in order)")
    p.add_argument("--out", type=Path, help="write the Markdown here (default: stdout)")
    p.add_argument("--pystack3d", metavar="PYTHON", help="interpreter with pystack3d 2026.2 "
                   "(default: $STACK3D_PYSTACK3D_PYTHON)")
    p.add_argument("--make-pystack3d-venv", metavar="DIR", type=Path,
                   help="create DIR (python -m venv; pip install pystack3d==2026.2) and use it")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per tool run before it is killed (7200)")
    p.add_argument("--workdir", type=Path, help="where the temporary projects go (default: the temp folder)")
    p.add_argument("--quality-slices", type=int, default=24,
                   help="output slices scored against the truth (evenly spaced, plus those around gain jumps)")
    p.add_argument("--no-quality", action="store_true", help="skip the quality figures")
    args = p.parse_args(argv)
    sizes = [parse_size(s) for s in args.size] + [parse_size(s) for name in args.preset for s in PRESETS[name]]
    if not sizes:
        p.error("give --size NxROWSxCOLS or --preset small|issue")
    args.sizes = list(dict.fromkeys(sizes))
    args.tool_list = [t.strip() for t in args.tools.split(",") if t.strip()]
    bad = [t for t in args.tool_list if t not in TOOL_NAMES]
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    bad += [s for s in steps if s not in ALL_STEPS]
    if bad:
        p.error(f"unknown tool or step: {', '.join(bad)}")
    args.step_list = [s for s in ALL_STEPS if s in steps]  # PyStack3D's order
    if args.repeat < 1 or args.nproc < 1:
        p.error("--repeat and --nproc must be >= 1")
    return args


def _crop_offset(params: dict[str, Any], size: Size, steps: Sequence[str]) -> tuple[float, float]:
    """``(x0, y0)`` of the first cropping (bottom-left-origin area), when it runs before
    the registration: the frame the registration matrices act in."""
    if "cropping" not in steps:
        return 0.0, 0.0
    xmin, _, _, ymax = params["cropping"]["area"]
    return float(min(xmin, size.cols)), float(max(size.rows - ymax, 0))


def _score(run: ToolRun, folder: Path, stack: Any, res: SizeResult, params: dict[str, Any],
           cache: dict[float, Any], count: int) -> None:
    from _quality import evaluate_stack

    out_dir = run.data.get("out_dir")
    if not out_dir:
        return
    tmats = folder / "process" / "registration_transformation" / "outputs" / "tmats_cumul.npy"
    try:
        res.quality[run.tool] = evaluate_stack(Path(out_dir), stack, tmats=tmats, count=count, truth_cache=cache,
                                               crop_offset=_crop_offset(params, res.size, res.steps))
    except Exception as exc:  # a figure that cannot be computed is reported, not fatal
        res.quality[run.tool] = f"quality figures failed: {type(exc).__name__}: {exc}"


def bench_size(size: Size, root: Path, args: argparse.Namespace, python: str | None) -> SizeResult:
    """Everything measured on one size, in ``root / size.label`` (deleted at the end)."""
    from _quality import evaluate_input

    res = SizeResult(size, list(args.step_list))
    folder = root / size.label
    try:
        _log(f"{size.label}: writing the synthetic project")
        t0 = time.perf_counter()
        stack, _ = write_project(folder / "input", spec_for(size), args.step_list)
        res.synth_seconds = time.perf_counter() - t0
        res.params_text = (folder / "input" / "params.toml").read_text()
        params = tomllib.loads(res.params_text)
        if "tifffile" in args.tool_list:
            _log(f"{size.label}: tifffile baseline")
            res.baseline = run_tifffile(folder / "input", folder / "tifffile", args.nproc, args.timeout)
        quality = not args.no_quality
        if quality:
            res.quality["input"] = evaluate_input(stack, args.quality_slices)
        tools = [t for t in (*VARIANTS, "pystack3d") if t in args.tool_list and (t != "pystack3d" or python)]
        cache: dict[float, Any] = {}
        for rep in range(args.repeat):
            for tool in tools if rep % 2 == 0 else tools[::-1]:
                run_dir = copy_project(folder / "input", folder / f"{tool}-{rep}")
                _log(f"{size.label}: {tool} run {rep + 1}/{args.repeat}")
                if tool in VARIANTS:
                    run = run_stack3d(run_dir, args.step_list, args.nproc, args.timeout, tool)
                else:
                    assert python is not None
                    run = run_pystack3d(python, run_dir, args.step_list, args.nproc, args.timeout)
                _log(f"  {'ok' if run.ok else 'FAILED'} in {run.wall:.1f} s")
                res.runs.setdefault(tool, []).append(run)
                if quality and run.ok and tool not in res.quality and tool in SCORED:
                    _score(run, run_dir, stack, res, params, cache, args.quality_slices)
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return res


def _notes(args: argparse.Namespace, python: str | None) -> list[str]:
    notes = [
        "Synthetic stack: `stack3d_core.testing.synth` defaults (seed 0) in uint16 with every defect: non-uniform z, "
        "drift 0.2/-0.1 px per slice (scaled down when the total would exceed half the cropping margin) + 0.5 px "
        "jitter, z step = the pixel size (1 px of depth per slice; beyond 200 slices, 200 px of depth in all), "
        "one gain/offset segment per 32 slices, polynomial background, curtains, noise 1 % of full scale. "
        "Both tools read the same slices (each run its own fresh copy) and the same `params.toml`: "
        "`stack3d_core.demo.demo_params` (VSNR maxit 50, cvg_threshold 1e-2, two Gabor filters; TRANSLATION "
        "registration, edge mode, cropping; bkg_removal orders [1, 2, 1] with cross terms, HuberT) with "
        "`bkg_removal.skip_factors = [s, s, 2]`, s = max(4, min(rows, cols) // 128); "
        "`registration_calculation.nb_blocks = [1, 1]` (PyStack3D fails without the key); "
        "`cropping_final.area = [m, cols - 4m, m, rows - 4m]`, m = min(rows, cols) // 16 (inside the registered "
        "crop). The file of the first size is at the end. Both tools write "
        "their statistics and figures (stack3d: the built-in `plots` plugin; PyStack3D always does). stack3d "
        "imports its heavy modules on first use, so its first step carries them; PyStack3D imports them at start "
        "(counted in end to end only).",
        "",
        "Quality (`benchmarks/_quality.py`): output slices against the exact clean volume at their z, in the region "
        "they cover (evenly spaced slices plus those around the true gain jumps); the input column compares each "
        "observed slice with the clean slice in its own frame.",
    ]
    if "pystack3d" in args.tool_list and not python:
        notes += ["", "PyStack3D was not run: no interpreter (give --pystack3d, set STACK3D_PYSTACK3D_PYTHON or "
                  "use --make-pystack3d-venv)."]
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print or write the Markdown report."""
    from stack3d_core.testing.pystack3d import find_pystack3d_python

    args = parse_args(argv)
    python = None
    if "pystack3d" in args.tool_list:
        if args.make_pystack3d_venv:
            try:
                python = make_pystack3d_venv(args.make_pystack3d_venv)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise SystemExit(f"could not create the PyStack3D venv in {args.make_pystack3d_venv}: {exc}") from exc
        else:
            python = find_pystack3d_python(args.pystack3d, this_interpreter=False)
    workdir = args.workdir or Path(tempfile.gettempdir())
    workdir.mkdir(parents=True, exist_ok=True)
    check_disk(workdir, args.sizes, args.tool_list, len(args.step_list))
    envs = {"stack3d": env_versions(sys.executable)}
    if python:
        envs["PyStack3D"] = env_versions(python)
        if envs["PyStack3D"].get("pystack3d") != "2026.2":
            _log(f"warning: {python} has pystack3d {envs['PyStack3D'].get('pystack3d', '(none)')}, not 2026.2")
    header = {"command": "python benchmarks/speed.py " + shlex.join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info(), "envs": envs, "nproc": args.nproc, "repeat": args.repeat}
    header["notes"] = _notes(args, python)
    results = []
    with tempfile.TemporaryDirectory(prefix="stack3d-speed-", dir=workdir) as tmp:
        for size in args.sizes:
            results.append(bench_size(size, Path(tmp), args, python))
    report = render(results, header)
    if args.out:
        args.out.write_text(report)
        _log(f"report written to {args.out}")
    else:
        sys.stdout.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
