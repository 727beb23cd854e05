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

With ``[engine] keep_intermediates = false`` (the default) the images of a step are
stored only when it is the last image-writing step of the run, or when it may not be
recomputed (``Step.recompute = False``) and a later step makes global passes. Every other
step is *computed*: its ``outputs/`` are written as usual, but later steps read its slices
through a :class:`~.fused.ComputedReader` that recomputes them from its input, so a chain
of per-slice steps costs one read and one write of the stack (:mod:`.fused`). Its
``process/S/recompute.pickle`` lets a later run resume after it.

Each step is built in ``process/.S.partial`` and renamed to ``process/S`` only when every
channel succeeded, so an interrupted or failed run never leaves a complete-looking step
(:mod:`.steprun`). Input files are only ever read.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..config.strict import unstructure
from ..errors import ConfigError, ConfigIssue, Stack3dError
from ..progress import ProgressCallback
from ..stackio import StackReader, SubsetReader
from ..step import Step, StepKind
from .executors import open_executor
from .fused import computed_levels, load_computed
from .metadata import PixelSizeOverride, SavedMetaReader
from .record import RunRecord, fingerprint, now
from .steprun import StepRun, finish_computed

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
    images: dict[str, str] = attrs.field(factory=dict)
    """Per step that ran: ``"stored"`` (its images are in ``process/<step>``),
    ``"computed"`` (fused: outputs only) or ``"none"`` (a step without images)."""


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
    keep_intermediates: bool | None = None,
) -> RunResult:
    """Run ``steps`` (default: ``process_steps``) on the project of ``config``.

    :param executor: overrides ``[engine] executor`` ("serial", "processes", "dask").
    :param workers: overrides ``[engine] workers`` / ``nproc``.
    :param scheduler: a Dask scheduler address (implies the dask executor).
    :param redo: run the requested steps even if the history says they are done.
    :param chain: PyStack3D's ``serial``: each step reads the previous step's images and
        the history is extended. ``False``: every step reads the same input and the
        history is left as it was (every step stores its images).
    :param keep_intermediates: overrides ``[engine] keep_intermediates``: store every step's
        images instead of fusing steps into later passes.
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
    keep = config.engine.keep_intermediates if keep_intermediates is None else keep_intermediates
    stored = _stored_steps(to_run, keep=keep or not chain)
    seconds: dict[str, float] = {}
    warnings: list[str] = list(config.warnings)
    ran: list[str] = []
    run_entry: dict[str, Any] = {
        "started": now(), "executor": kind, "workers": n_workers, "scheduler": scheduler or config.engine.scheduler,
        "steps": [s.name for s in to_run], "versions": {"stack3d": _version("stack3d")},
        "keep_intermediates": keep,
        "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version} for p in host.plugins],
        "config": str(config.source) if config.source else None,
    }
    modes = {h["step"]: h.get("images", "stored") for h in record.history}
    reader = _reader_from_history(history, modes, root, config, host, process_dir)
    runs: dict[str, StepRun] = {}
    with open_executor(kind, n_workers, scheduler or config.engine.scheduler) as (pool, parallelism):
        for step in to_run:
            step_reader = reader if chain else _reader_from_history(history, modes, root, config, host, process_dir)
            t0 = time.perf_counter()
            run = StepRun(step, config, host, step_reader, process_dir)
            images = step.writes_images and step.name in stored
            try:
                run.compute(pool, parallelism, progress)
                if images:
                    taps = run.store(pool, parallelism, progress)
                    planes = finish_computed(step_reader, taps, runs, config, host, process_dir)
                    last_level = next(computed_levels(step_reader), None)
                    run.finish(planes.get(last_level.step.name) if last_level is not None else None)
                elif step.writes_images:
                    output = run.computed()
                    run.finish()
                else:
                    run.finish()
                run.publish()
            except BaseException as exc:
                run.fail(exc)
                run_entry.update(finished=now(), status=f"failed in {step.name}: {exc}")
                record.runs.append(run_entry)
                _save_quietly(record)
                raise
            runs[step.name] = run
            seconds[step.name] = time.perf_counter() - t0
            ran.append(step.name)
            upstream = list(history)
            if chain:
                record.truncate_at(step.name)
                record.history.append({
                    "step": step.name, "fingerprint": params_fp(step, upstream),
                    "params": unstructure(step.params), "seconds": round(seconds[step.name], 3),
                    "finished": now(), "input": _describe_input(step_reader, process_dir),
                    "images": "stored" if images else ("computed" if step.writes_images else "none"),
                    "warnings": [w for ctx in run.contexts.values() for w in ctx.warnings],
                })
                fingerprints[step.name] = record.history[-1]["fingerprint"]
                modes[step.name] = record.history[-1]["images"]
                history.append(step.name)
                record.save()
                if images:
                    reader = _reader_from_history(history, modes, root, config, host, process_dir)
                elif step.writes_images:
                    reader = output
    for run in runs.values():
        warnings.extend(w for ctx in run.contexts.values() for w in ctx.warnings)
    run_entry.update(finished=now(), status="ok", seconds={k: round(v, 3) for k, v in seconds.items()})
    record.runs.append(run_entry)
    if to_run:
        record.save()
    last = _last_image_dir(history, host, process_dir)
    if config.output.name or config.output.path:
        from .export import export_result

        export_result(config, host, _reader_from_history(history, modes, root, config, host, process_dir), progress)
    return RunResult(config.project_dir, process_dir, tuple(ran), tuple(s.name for s in skipped),
                     seconds, last, tuple(warnings), {name: modes.get(name, "stored") for name in ran})


def _stored_steps(to_run: Sequence[Step], *, keep: bool) -> set[str]:
    """The steps of the run whose images are written: all of them with ``keep``; else the
    last image-writing step, and any step that may not be recomputed
    (``Step.recompute = False``) when a later step of the run has a measure phase."""
    image_steps = [s for s in to_run if s.writes_images]
    if keep:
        return {s.name for s in image_steps}
    out = {image_steps[-1].name} if image_steps else set()
    for k, step in enumerate(to_run):
        later_passes = any(t.kind is not StepKind.MAP for t in to_run[k + 1:])
        if step.writes_images and not step.recompute and later_passes:
            out.add(step.name)
    return out


def _describe_input(reader: StackReader, process_dir: Path) -> str:
    level = next(computed_levels(reader), None)
    if level is not None:
        return f"computed: {level.step.name}"
    path = Path(reader.path)
    return str(path) if path.is_relative_to(process_dir) else "input"


def _save_quietly(record: RunRecord) -> None:
    try:
        record.save()
    except OSError:
        log.exception("could not write the run record %s", record.path)


def _image_steps(history: Sequence[str], host: PluginHost) -> list[str]:
    """The steps of ``history`` that write images (unknown names count as such)."""
    return [name for name in history if name not in host.steps or host.steps.get(name).writes_images]


def _last_image_dir(history: Sequence[str], host: PluginHost, process_dir: Path) -> Path | None:
    """``process/<last image-writing step in history>``, or None for the raw input."""
    names = _image_steps(history, host)
    return process_dir / names[-1] if names else None


def _reader_from_history(history: Sequence[str], modes: dict[str, str], root: StackReader, config: ProjectConfig,
                         host: PluginHost, process_dir: Path) -> StackReader:
    """The input of the next step: the project's input, then each image-writing step of
    ``history`` in turn, read from its stored images or, for the steps the run record marks
    ``"images": "computed"`` in ``modes``, recomputed (``recompute.pickle``)."""
    names = _image_steps(history, host)
    stored = [k for k, name in enumerate(names) if modes.get(name, "stored") != "computed"]
    reader: StackReader = SubsetReader(root, config.ind_min, config.ind_max + 1)
    if stored:  # the last stored step: nothing before it is needed
        reader = _stored_reader(process_dir / names[stored[-1]], config, host)
    for name in names[stored[-1] + 1 if stored else 0:]:
        reader = load_computed(process_dir / name, reader)
    return reader


def _stored_reader(input_dir: Path, config: ProjectConfig, host: PluginHost) -> StackReader:
    if not input_dir.is_dir():
        raise Stack3dError(f"the history says '{input_dir.name}' was done, but {input_dir} does not exist; "
                           "run that step again (--redo) or fix the history")
    return SavedMetaReader(host.readers.get(config.engine.intermediate)(input_dir), input_dir)
