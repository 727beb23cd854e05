"""The ``stack3d`` command line.

Exit codes: 0 success, 1 a user error (bad configuration, bad input file, failing
plugin; the message names the file, key, slice or plugin), 2 a usage error (argparse),
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import Stack3dError

__all__ = ["build_parser", "main"]


def _version() -> str:
    from .. import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(
        prog="stack3d",
        description="Clean FIB-SEM / serial-section 3D image stacks (PyStack3D-compatible projects).",
    )
    parser.add_argument("--version", action="version", version=f"stack3d {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info, -vv: debug messages")
    parser.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                        help="do not load this plugin (repeatable; also STACK3D_DISABLE_PLUGINS=a,b)")
    parser.add_argument("--strict-plugins", action="store_true",
                        help="fail if any plugin cannot be loaded (also STACK3D_STRICT_PLUGINS=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the steps of a project")
    p.add_argument("project", help="project folder (holding one .toml) or a params .toml file")
    p.add_argument("--steps", help="comma-separated steps to run (default: process_steps)")
    p.add_argument("--executor", choices=("serial", "processes", "dask"), help="where to run (default: [engine] or nproc)")
    p.add_argument("--workers", type=int, help="worker processes (default: [engine] workers or nproc)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--redo", action="store_true", help="run steps again even if the history says they are done")
    p.add_argument("--keep-intermediates", action="store_true", default=None,
                   help="store every step's images in process/<step> (default: [engine] keep_intermediates)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=commands.cmd_run)

    p = sub.add_parser("validate", help="check a params.toml without reading any image")
    p.add_argument("project", help="project folder or .toml file")
    p.set_defaults(func=commands.cmd_validate)

    p = sub.add_parser("steps", help="list the installed steps, or document one")
    p.add_argument("--describe", metavar="NAME", help="parameters of one step: types, defaults, units, docs")
    p.set_defaults(func=commands.cmd_steps)

    p = sub.add_parser("plugins", help="list loaded plugins, their distributions, hooks and load failures")
    p.set_defaults(func=commands.cmd_plugins)

    p = sub.add_parser("init", help="write a documented params.toml into a folder")
    p.add_argument("dir", help="project folder (created if needed)")
    p.add_argument("--force", action="store_true", help="overwrite an existing params.toml")
    p.set_defaults(func=commands.cmd_init)

    p = sub.add_parser("synth", help="write a synthetic FIB-SEM-like project with its ground truth")
    p.add_argument("dir", help="project folder to create")
    p.add_argument("--slices", type=int, default=64, help="number of slices (default 64)")
    p.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("H", "W"), help="rows and columns (default 256 256)")
    p.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.set_defaults(func=commands.cmd_synth)

    p = sub.add_parser("convert", help="convert a stack between formats, slice by slice")
    p.add_argument("input", help="input stack (folder or file)")
    p.add_argument("output", help="output path; the writer is picked from its suffix (a folder: TIFF slices)")
    p.add_argument("--reader", help="reader name (default: picked from the input path)")
    p.add_argument("--writer", help="writer name (default: picked from the output path)")
    p.add_argument("--channel", action="append", help="channel(s) to convert (default: all)")
    p.add_argument("--pixel-size", type=float, nargs="+", metavar="UM", help="override the pixel size: x y [z] in µm")
    p.add_argument("--executor", choices=("serial", "processes", "dask"), default="serial")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=commands.cmd_convert)

    p = sub.add_parser("info", help="shape, dtype, channels, pixel size, z range and instrument metadata of a stack")
    p.add_argument("path", help="a stack: folder of slices, .dat folder, .mrc, .zarr, multi-page .tif ...")
    p.add_argument("--reader", help="reader name (default: picked from the path)")
    p.set_defaults(func=commands.cmd_info)

    p = sub.add_parser("new-plugin", help="scaffold a plugin distribution (a step, reader or writer) with its tests")
    p.add_argument("name", help="plugin and registry name, e.g. gamma (distribution stack3d-gamma)")
    p.add_argument("--kind", choices=("step", "reader", "writer"), default="step")
    p.add_argument("--dir", default=".", help="where to create stack3d-NAME/ (default: here)")
    p.set_defaults(func=commands.cmd_new_plugin)

    p = sub.add_parser("demo", help="synthetic stack -> full pipeline -> errors against the ground truth")
    p.add_argument("dir", nargs="?", default="stack3d_demo", help="working folder (default ./stack3d_demo)")
    p.add_argument("--slices", type=int, default=48)
    p.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    p.add_argument("--executor", choices=("serial", "processes", "dask"), default="serial")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=commands.cmd_demo)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("stack3d").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stack3d`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.disable_plugin:
        os.environ["STACK3D_DISABLE_PLUGINS"] = ",".join(
            [p for p in os.environ.get("STACK3D_DISABLE_PLUGINS", "").split(",") if p] + args.disable_plugin
        )
    if args.strict_plugins:
        os.environ["STACK3D_STRICT_PLUGINS"] = "1"
    try:
        return int(args.func(args) or 0)
    except Stack3dError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stream for good
        return 0
    except KeyboardInterrupt:
        print("interrupted: no partial step was published (process/.<step>.partial removed)", file=sys.stderr)
        return 130
