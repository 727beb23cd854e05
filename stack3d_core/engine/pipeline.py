"""Running a pipeline of steps over a project, PyStack3D-style.

Layout and chaining follow PyStack3D (``pystack3d-spec.md`` §1.2–1.8):

* step ``S`` writes ``process/S/<channel>/`` with the input's slice names and
  ``outputs/stats.npy``; a step that writes no images (``registration_calculation``)
  writes ``process/S/`` only;
* the first step reads the project's input (``[input]``) restricted to
  ``ind_min..ind_max``; each later step reads the images of the last step before it that
  wrote images;
* steps already in ``history`` (the TOML's, then the run record's) are skipped unless
  their parameters changed or ``redo`` is asked for.

Each step is built in ``process/.S.partial`` and renamed to ``process/S`` only when every
channel succeeded, so an interrupted or failed run never leaves a complete-looking step.
Input files are only ever read.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ..config.strict import unstructure
from ..errors import ConfigError, ConfigIssue, Stack3dError, StepError
from ..progress import ProgressCallback
from ..stackio import StackReader, SubsetReader
from ..step import Step, StepContext
from .executors import open_executor
from .metadata import META_FILE, PixelSizeOverride, SavedMetaReader, meta_to_json
from .record import RunRecord, fingerprint, now, write_atomic
from .runner import execute_step

if TYPE_CHECKING:
    from ..config.project import ProjectConfig
    from ..plugin.host import PluginHost

__all__ = ["INTERMEDIATE_FORMAT", "RunResult", "run_pipeline"]

INTERMEDIATE_FORMAT = "tiff_folder"
"""Default reader and writer of the ``process/<step>/<channel>`` images (``[engine] intermediate``)."""

log = logging.getLogger("stack3d")


@attrs.frozen
class RunResult:
    """What a run did."""

    project_dir: Path
    process_dir: Path
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: dict[str, float]
    last_dir: Path | None
    """Images of the last image-writing step (``process/<step>``), or None."""
    warnings: tuple[str, ...] = ()


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"


def open_root_reader(config: ProjectConfig, host: PluginHost) -> StackReader:
    """The reader of the project's raw input (``[input]``, or picked from the path)."""
    path = config.input_path
    if config.input.name:
        reader = host.readers.get(config.input.name)(path, config.input.options)
    else:
        reader = host.reader_for(path)(path)
    if config.input.pixel_size is not None:
        reader = PixelSizeOverride(reader, config.input.pixel_size)
    return reader


def _channel_dir(base: Path, channel: str) -> Path:
    return base if channel == "." else base / channel


def _merge_into(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` into ``dst`` (created if needed), then remove ``src``."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        os.replace(entry, dst / entry.name)
    src.rmdir()


def _publish(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging`` with renames only (the old result is removed last)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _resolve_steps(config: ProjectConfig, host: PluginHost, steps: Sequence[str] | None) -> list[Step]:
    names = list(config.process_steps if steps is None else steps)
    issues: list[ConfigIssue] = []
    seen: set[str] = set()
    out: list[Step] = []
    for name in names:
        if name in seen:
            issues.append(ConfigIssue("process_steps", f"step '{name}' is listed twice"))
            continue
        seen.add(name)
        if name in config.steps:
            out.append(config.steps[name])
            continue
        cls = host.steps.get(name)  # raises UnknownNameError with suggestions
        try:
            out.append(cls(cls.Params()))
        except TypeError:
            issues.append(ConfigIssue(name, f"table [{name}] is missing and step '{name}' has required parameters"))
    if issues:
        raise ConfigError(issues, config.source)
    return out


def run_pipeline(
    config: ProjectConfig,
    host: PluginHost,
    *,
    steps: Sequence[str] | None = None,
    executor: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    redo: bool = False,
    chain: bool = True,
) -> RunResult:
    """Run ``steps`` (default: ``process_steps``) on the project of ``config``.

    :param executor: overrides ``[engine] executor`` ("serial", "processes", "dask").
    :param workers: overrides ``[engine] workers`` / ``nproc``.
    :param scheduler: a Dask scheduler address (implies the dask executor).
    :param redo: run the requested steps even if the history says they are done.
    :param chain: PyStack3D's ``serial``: each step reads the previous step's images and
        the history is extended. ``False``: every step reads the same input and the
        history is left as it was.
    """
    to_do = _resolve_steps(config, host, steps)
    process_dir = config.project_dir / "process"
    record = RunRecord.load(process_dir)
    toml_history = list(config.history)
    history = toml_history + [h for h in record.names() if h not in toml_history]
    fingerprints = {h["step"]: h.get("fingerprint") for h in record.history}

    root = open_root_reader(config, host)
    root_id = {"input": str(config.input_path), "reader": type(root).name,
               "ind": [config.ind_min, config.ind_max], "channels": list(config.channels)}

    def params_fp(step: Step, upstream: list[str]) -> str:
        return fingerprint(unstructure(step.params), root_id, [(s, fingerprints.get(s)) for s in upstream])

    # which requested steps are already done (same parameters, same upstream)?
    skipped: list[Step] = []
    for step in to_do:
        if redo or step.name not in history:
            break
        upstream = history[: history.index(step.name)]
        recorded = fingerprints.get(step.name)
        if recorded is not None and recorded != params_fp(step, upstream):
            log.info("parameters or input of '%s' changed since it ran: running it again", step.name)
            break
        skipped.append(step)
    to_run = to_do[len(skipped):]
    for step in skipped:
        log.info("'%s' is already done (history): skipped; use --redo to run it again", step.name)
    if to_run and to_run[0].name in history and chain:
        record.truncate_at(to_run[0].name)
        history = history[: history.index(to_run[0].name)]

    kind = executor or ("dask" if scheduler else config.executor)
    n_workers = workers or config.workers
    seconds: dict[str, float] = {}
    warnings: list[str] = list(config.warnings)
    ran: list[str] = []
    run_entry: dict[str, Any] = {
        "started": now(), "executor": kind, "workers": n_workers, "scheduler": scheduler or config.engine.scheduler,
        "steps": [s.name for s in to_run], "versions": {"stack3d": _version("stack3d")},
        "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version} for p in host.plugins],
        "config": str(config.source) if config.source else None,
    }
    input_dir = _input_dir_from_history(history, host, process_dir)
    with open_executor(kind, n_workers, scheduler or config.engine.scheduler) as (pool, parallelism):
        for step in to_run:
            reader = _reader_for(input_dir, root, config, host)
            t0 = time.perf_counter()
            try:
                step_warnings = _run_one_step(step, config, host, reader, process_dir, pool, parallelism, progress)
            except BaseException as exc:
                run_entry.update(finished=now(), status=f"failed in {step.name}: {exc}")
                record.runs.append(run_entry)
                _save_quietly(record)
                raise
            seconds[step.name] = time.perf_counter() - t0
            warnings.extend(step_warnings)
            ran.append(step.name)
            upstream = list(history)
            if chain:
                record.truncate_at(step.name)
                record.history.append({
                    "step": step.name, "fingerprint": params_fp(step, upstream),
                    "params": unstructure(step.params), "seconds": round(seconds[step.name], 3),
                    "finished": now(), "input": str(input_dir) if input_dir else "input",
                    "warnings": step_warnings,
                })
                fingerprints[step.name] = record.history[-1]["fingerprint"]
                history.append(step.name)
                record.save()
                if step.writes_images:
                    input_dir = process_dir / step.name
    run_entry.update(finished=now(), status="ok", seconds={k: round(v, 3) for k, v in seconds.items()})
    record.runs.append(run_entry)
    if to_run:
        record.save()
    last = _input_dir_from_history(history, host, process_dir)
    if config.output.name or config.output.path:
        from .export import export_result

        export_result(config, host, _reader_for(last, root, config, host), progress)
    return RunResult(config.project_dir, process_dir, tuple(ran), tuple(s.name for s in skipped),
                     seconds, last, tuple(warnings))


def _save_quietly(record: RunRecord) -> None:
    try:
        record.save()
    except OSError:
        log.exception("could not write the run record %s", record.path)


def _input_dir_from_history(history: Sequence[str], host: PluginHost, process_dir: Path) -> Path | None:
    """``process/<last image-writing step in history>``, or None for the raw input."""
    for name in reversed(history):
        if name in host.steps and not host.steps.get(name).writes_images:
            continue
        return process_dir / name
    return None


def _reader_for(input_dir: Path | None, root: StackReader, config: ProjectConfig, host: PluginHost) -> StackReader:
    if input_dir is None:
        return SubsetReader(root, config.ind_min, config.ind_max + 1)
    if not input_dir.is_dir():
        raise Stack3dError(f"the history says '{input_dir.name}' was done, but {input_dir} does not exist; "
                           "run that step again (--redo) or fix the history")
    return SavedMetaReader(host.readers.get(config.engine.intermediate)(input_dir), input_dir)


class _ChannelView(StackReader):
    """A reader of one folder presented under the channel name of the run (the step's
    output folder holds the slices directly)."""

    name = "channel_view"

    def __init__(self, inner: StackReader, channel: str) -> None:
        super().__init__(inner.path)
        self.inner, self.channel = inner, channel

    def names(self, channel: str) -> tuple[str, ...]:
        return self.inner.names(".")

    def meta(self, channel: str) -> Any:
        return self.inner.meta(".")

    def read(self, channel: str, index: int) -> np.ndarray:
        return self.inner.read(".", index)


def _run_one_step(
    step: Step,
    config: ProjectConfig,
    host: PluginHost,
    reader: StackReader,
    process_dir: Path,
    pool: Any,
    parallelism: int,
    progress: ProgressCallback | None,
) -> list[str]:
    """Run ``step`` on every channel into ``process/.S.partial``, then publish it."""
    staging = process_dir / f".{step.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    channels = config.channels[:1] if step.channels == "first" else config.channels
    writer_cls = host.writers.get(config.engine.intermediate)
    warnings: list[str] = []
    shared: dict[str, Any] = {}  # state_from = "first": the first channel's state
    try:
        for channel in channels:
            names = reader.names(channel)
            meta = reader.meta(channel)
            if meta.n == 0:
                raise StepError(step.name, "no slice to process", channel=channel)
            image_dir = _channel_dir(staging, channel) if step.writes_images else staging
            outputs_dir = image_dir / "outputs"
            outputs_dir.mkdir(parents=True, exist_ok=True)
            ctx = StepContext(step=step.name, channel=channel, channels=tuple(config.channels),
                              project_dir=config.project_dir, image_dir=image_dir, outputs_dir=outputs_dir,
                              names=tuple(names), meta=meta, process_dir=process_dir, reader=reader,
                              device=config.engine.device, project_params=config.raw)
            images_tmp = _channel_dir(staging / ".images", channel)
            images_tmp.parent.mkdir(parents=True, exist_ok=True)

            def make_writer(meta_out: Any, out_names: Sequence[str], _dir: Path = images_tmp) -> Any:
                return writer_cls(_dir, meta_out, out_names)

            host.before_step(step, ctx)
            t0 = time.perf_counter()
            try:
                if "state" in shared:
                    outcome = execute_step(step, ctx, reader, make_writer, pool, parallelism, progress,
                                           state=shared["state"])
                else:
                    outcome = execute_step(step, ctx, reader, make_writer, pool, parallelism, progress)
                if step.state_from == "first":
                    shared.setdefault("state", outcome.state)
                if outcome.stats is not None:
                    _merge_into(images_tmp, image_dir)
                    ctx.output_reader = _ChannelView(host.readers.get(config.engine.intermediate)(image_dir), channel)
                    np.save(outputs_dir / "stats.npy", outcome.stats)
                    write_atomic(outputs_dir / META_FILE, meta_to_json(outcome.meta))
                    if outcome.nan_zeroed:
                        ctx.warn(f"{outcome.nan_zeroed} NaN pixels were written as 0")
                step.finish(ctx, outcome.state, outcome.stats if outcome.stats is not None else np.empty((0, 3, 3)))
                host.after_step(step, ctx, outcome.stats, time.perf_counter() - t0)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    host.on_step_error(step, ctx, exc)
                raise
            warnings.extend(ctx.warnings)
        images_root = staging / ".images"
        if images_root.exists():
            shutil.rmtree(images_root)
        _publish(staging, process_dir / step.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return warnings
