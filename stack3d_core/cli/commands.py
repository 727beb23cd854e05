"""Implementations of the ``stack3d`` subcommands (argparse namespaces in, exit codes out)."""

from __future__ import annotations

import argparse
import shutil
import sys
import typing
from pathlib import Path

import attrs

from ..api import find_params_file
from ..config.project import ProjectConfig, load_config
from ..config.strict import field_doc, resolved_fields
from ..errors import Stack3dError
from ..plugin.host import PluginHost, get_host

__all__ = ["cmd_convert", "cmd_demo", "cmd_info", "cmd_new_plugin", "cmd_init", "cmd_plugins", "cmd_run", "cmd_steps", "cmd_synth",
           "cmd_validate"]

from .convert import cmd_convert, cmd_info  # noqa: E402 - re-exported for the parser
from .scaffold import cmd_new_plugin  # noqa: E402


def _load(project: str, host: PluginHost) -> ProjectConfig:
    path = Path(project)
    if path.is_dir():
        return load_config(find_params_file(path), host, project_dir=path.resolve())
    if not path.exists():
        raise Stack3dError(f"{path} does not exist")
    return load_config(path, host)


def _print_warnings(warnings: typing.Iterable[str]) -> None:
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from ..engine.pipeline import run_pipeline
    from ..progress import TqdmProgress

    host = get_host()  # plugins that failed to load are logged as warnings here
    config = _load(args.project, host)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()] if args.steps else None
    if args.workers is not None and args.workers < 1:
        raise Stack3dError(f"--workers must be >= 1 (got {args.workers})")
    bar = TqdmProgress(False if args.quiet else None)
    try:
        result = run_pipeline(config, host, steps=steps, executor=args.executor, workers=args.workers,
                              scheduler=args.scheduler, progress=bar, redo=args.redo,
                              keep_intermediates=args.keep_intermediates)
    finally:
        bar.close()
    _print_warnings(result.warnings)
    for name in result.skipped:
        print(f"skipped {name}: already done (history); --redo runs it again")
    for name in result.ran:
        how = {"computed": "  (fused: images not stored)"}.get(result.images.get(name, ""), "")
        print(f"done    {name:28s} {result.seconds[name]:8.2f} s  -> {result.process_dir / name}{how}")
    if not result.ran and not result.skipped:
        print("nothing to run: process_steps is empty (or give --steps)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    host = get_host()
    config = _load(args.project, host)
    _print_warnings(config.warnings)
    steps = ", ".join(config.process_steps) or "(none)"
    print(f"ok: {config.source} is valid; project folder {config.project_dir}")
    print(f"    steps: {steps}; executor: {config.executor} x {config.workers}; channels: {list(config.channels)}")
    return 0


def _type_name(tp: object) -> str:
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return text or str(tp).replace("typing.", "")


def describe_step(host: PluginHost, name: str) -> str:
    """The parameter reference of one step, generated from its attrs fields."""
    entry = host.steps.entry(name)
    cls = entry.obj
    lines = [f"{name}: {cls.description or (cls.__doc__ or '').strip().splitlines()[0]}",
             f"  kind: {cls.kind.value}; channels: {cls.channels}; writes images: {cls.writes_images}",
             f"  from {entry.origin}", "", "  parameters:"]
    fields = resolved_fields(cls.Params)
    if not fields:
        lines.append("    (none)")
    for field in fields:
        default = "required" if field.default is attrs.NOTHING else f"default {field.default!r}"
        unit = field.metadata.get("unit")
        lines.append(f"    {field.name}: {_type_name(field.type)}  ({default}{', unit ' + unit if unit else ''})")
        doc = field_doc(field)
        lines.append(f"        {doc}" if doc else "        (undocumented)")
    return "\n".join(lines)


def cmd_steps(args: argparse.Namespace) -> int:
    host = get_host()
    if args.describe:
        print(describe_step(host, args.describe))
        return 0
    for entry in host.steps:
        print(f"{entry.name:28s} {entry.obj.kind.value:9s} {entry.distribution:18s} {entry.obj.description}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    host = get_host()
    print(f"{'plugin':12s} {'distribution':20s} {'version':10s} hooks")
    for info in host.plugins:
        hooks = ", ".join(h.removeprefix("stack3d_") for h in host.hooks_of(info.name))
        print(f"{info.name:12s} {info.distribution:20s} {info.version:10s} {hooks}")
    for kind, registry in (("steps", host.steps), ("readers", host.readers), ("writers", host.writers)):
        names = ", ".join(f"{e.name} ({e.plugin})" for e in registry) or "none"
        print(f"{kind}: {names}")
    if host.failures:
        print("load failures:")
        for failure in host.failures:
            print(f"  {failure}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from .init_toml import params_template

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "params.toml"
    others = [p for p in folder.glob("*.toml") if p != target]
    if (target.exists() or others) and not args.force:
        existing = target if target.exists() else others[0]
        raise Stack3dError(f"{existing} exists; use --force to replace params.toml")
    target.write_text(params_template(get_host()), encoding="utf-8")
    print(f"wrote {target}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ..demo import write_synthetic_project
    from ..testing.synth import SynthSpec

    spec = SynthSpec(n_slices=args.slices, shape=tuple(args.shape), dtype=args.dtype, seed=args.seed)
    folder = Path(args.dir)
    if folder.exists() and any(folder.iterdir()):
        if not args.force:
            raise Stack3dError(f"{folder} exists and is not empty; use --force to replace it")
        shutil.rmtree(folder)
    write_synthetic_project(folder, spec, get_host())
    print(f"wrote {spec.n_slices} slices of {spec.shape[0]}x{spec.shape[1]} {spec.dtype} to {folder}; "
          f"ground truth in {folder / 'ground_truth'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    report = run_demo(Path(args.dir), n_slices=args.slices, shape=tuple(args.shape),
                      executor=args.executor, workers=args.workers, show_progress=not args.quiet)
    print(report)
    return 0
