"""One step of a pipeline run, on every channel: compute its state, then either store its
images or hand its output on as a :class:`~.fused.ComputedReader`.

The step is built in ``process/.S.partial`` and renamed to ``process/S`` only when every
channel succeeded, so an interrupted or failed run never leaves a complete-looking step.

* A **stored** step runs its apply phase, writes its images (``process/S/<channel>``),
  ``outputs/stats.npy`` and ``outputs/stack_meta.json``, calls ``Step.finish`` and the
  after-step hooks.
* A **computed** step (fused; ``[engine] keep_intermediates = false``) writes
  ``outputs/stack_meta.json``, ``process/S/recompute.pickle`` and whatever ``Step.finish``
  writes (matrices, coefficients, its own plots), without images. Its ``stats.npy`` and
  after-step hooks come later, from the taps of the pass that stores a later step
  (:func:`finish_computed`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StepError
from ..progress import ProgressCallback
from ..stackio import StackReader
from ..step import Step, StepContext
from .fused import ComputedReader, Level, Tap, computed_levels, save_computed
from .metadata import META_FILE, meta_to_json
from .record import write_atomic
from .runner import _UNSET, apply_state, compute_state, plan_output

if TYPE_CHECKING:
    from ..config.project import ProjectConfig
    from ..plugin.host import PluginHost

__all__ = ["ChannelView", "StepRun", "channel_dir", "finish_computed"]


def channel_dir(base: Path, channel: str) -> Path:
    """``base`` for a single-channel project, else ``base / channel``."""
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


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


class ChannelView(StackReader):
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


class StepRun:
    """Runs ``step`` on every channel of ``reader`` into ``process/.S.partial``.

    Call :meth:`compute`, then :meth:`store` or :meth:`computed`, then :meth:`finish` and
    :meth:`publish`; :meth:`abort` on failure.
    """

    def __init__(self, step: Step, config: ProjectConfig, host: PluginHost, reader: StackReader,
                 process_dir: Path) -> None:
        self.step, self.config, self.host, self.reader = step, config, host, reader
        self.process_dir = process_dir
        self.staging = process_dir / f".{step.name}.partial"
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.channels = config.channels[:1] if step.channels == "first" else config.channels
        self.contexts: dict[str, StepContext] = {}
        self.states: dict[str, Any] = {}
        self.stats: dict[str, np.ndarray] = {}
        self.output: ComputedReader | None = None
        self.current: StepContext | None = None
        self.started = time.perf_counter()

    # -- phases ----------------------------------------------------------------------------
    def compute(self, pool: Any, parallelism: int, progress: ProgressCallback | None) -> None:
        """``before_step`` hooks, ``prepare``, the measure / pairs phases and ``combine``,
        channel by channel (``state_from = "first"``: once, on the first channel)."""
        shared: Any = _UNSET
        for channel in self.channels:
            ctx = self._context(channel)
            self.contexts[channel] = self.current = ctx
            self.host.before_step(self.step, ctx)
            state = compute_state(self.step, ctx, self.reader, pool, parallelism, progress, shared)
            if self.step.state_from == "first" and shared is _UNSET:
                shared = state
            self.states[channel] = state

    def computed(self) -> ComputedReader:
        """The step's output as a reader that computes slices when read."""
        levels: dict[str, Level] = {}
        for channel in self.channels:
            self.current = ctx = self.contexts[channel]
            jobs, meta = plan_output(self.step, ctx, self.states[channel])
            levels[channel] = Level(self.states[channel], tuple(jobs), meta)
            write_atomic(ctx.outputs_dir / META_FILE, meta_to_json(meta))
        self.output = ComputedReader(self.step, self.reader, levels, record=False)  # taps: in the storing pass
        for ctx in self.contexts.values():
            ctx.output_reader = self.output
        save_computed(self.staging, self.step, levels)
        return self.output

    def store(self, pool: Any, parallelism: int, progress: ProgressCallback | None) -> dict[str, dict[str, Tap]]:
        """The apply phase of every channel: images, ``stats.npy`` and ``stack_meta.json``.
        Returns the taps of the computed levels of the input (``{step: {channel: Tap}}``)."""
        writer_cls = self.host.writers.get(self.config.engine.intermediate)
        taps: dict[str, dict[str, Tap]] = {}
        for channel in self.channels:
            self.current = ctx = self.contexts[channel]
            images_tmp = channel_dir(self.staging / ".images", channel)
            images_tmp.parent.mkdir(parents=True, exist_ok=True)

            def make_writer(meta_out: Any, out_names: Sequence[str], _dir: Path = images_tmp) -> Any:
                return writer_cls(_dir, meta_out, out_names)

            outcome = apply_state(self.step, ctx, self.reader, make_writer, pool, parallelism, progress,
                                  self.states[channel])
            _merge_into(images_tmp, ctx.image_dir)
            ctx.output_reader = ChannelView(self.host.readers.get(self.config.engine.intermediate)(ctx.image_dir),
                                            channel)
            assert outcome.stats is not None and outcome.meta is not None
            _save_npy(ctx.outputs_dir / "stats.npy", outcome.stats)
            write_atomic(ctx.outputs_dir / META_FILE, meta_to_json(outcome.meta))
            if outcome.nan_zeroed:
                ctx.warn(f"{outcome.nan_zeroed} NaN pixels were written as 0")
            self.stats[channel] = outcome.stats
            for name, by_channel in outcome.taps.items():
                taps.setdefault(name, {}).update(by_channel)
        images_root = self.staging / ".images"
        if images_root.exists():
            shutil.rmtree(images_root)
        return taps

    def finish(self, input_planes: Mapping[str, Any] | None = None) -> None:
        """``Step.finish`` on every channel; for a stored step (or one without images), the
        after-step hooks too (a computed step gets them in :func:`finish_computed`).

        :param input_planes: per channel, the cut planes of the input seen by a fused pass.
        """
        for channel in self.channels:
            self.current = ctx = self.contexts[channel]
            stats = self.stats.get(channel)
            if input_planes and channel in input_planes:
                ctx.input_planes = input_planes[channel]
            self.step.finish(ctx, self.states[channel], stats if stats is not None else np.empty((0, 3, 3)))
            if self.output is None:
                self.host.after_step(self.step, ctx, stats, time.perf_counter() - self.started)

    def publish(self) -> None:
        _publish(self.staging, self.process_dir / self.step.name)
        final = self.process_dir / self.step.name
        for channel, ctx in self.contexts.items():  # later hooks see the published folders
            rel_image = ctx.image_dir.relative_to(self.staging)
            ctx.image_dir = final / rel_image
            ctx.outputs_dir = final / ctx.outputs_dir.relative_to(self.staging)
            if isinstance(ctx.output_reader, ChannelView):
                ctx.output_reader = ChannelView(
                    self.host.readers.get(self.config.engine.intermediate)(ctx.image_dir), channel)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def fail(self, exc: BaseException) -> None:
        """Report ``exc`` to the ``on_step_error`` hooks, then remove the staging folder."""
        try:
            if isinstance(exc, Exception) and self.current is not None:
                self.host.on_step_error(self.step, self.current, exc)
        finally:
            self.abort()

    # -- helpers ---------------------------------------------------------------------------
    def _context(self, channel: str) -> StepContext:
        names = self.reader.names(channel)
        meta = self.reader.meta(channel)
        if meta.n == 0:
            raise StepError(self.step.name, "no slice to process", channel=channel)
        image_dir = channel_dir(self.staging, channel) if self.step.writes_images else self.staging
        outputs_dir = image_dir / "outputs"
        outputs_dir.mkdir(parents=True, exist_ok=True)
        return StepContext(step=self.step.name, channel=channel, channels=tuple(self.config.channels),
                           project_dir=self.config.project_dir, image_dir=image_dir, outputs_dir=outputs_dir,
                           names=tuple(names), meta=meta, process_dir=self.process_dir, reader=self.reader,
                           device=self.config.engine.device, project_params=self.config.raw)


def finish_computed(reader: StackReader, taps: Mapping[str, Mapping[str, Tap]], runs: Mapping[str, StepRun],
                    config: ProjectConfig, host: PluginHost, process_dir: Path) -> dict[str, dict[str, Any]]:
    """After a pass that stored a step: for every computed level of ``reader``'s chain that
    the pass saw, write ``outputs/stats.npy`` and call the after-step hooks (with the cut
    planes of its input and output in ``ctx.input_planes`` / ``ctx.output_planes``).

    :param runs: the :class:`StepRun` of the levels computed in this run (their contexts);
        levels rebuilt from an earlier run get a fresh context.
    :returns: per step and channel, the output cut planes (``None`` where not seen).
    """
    levels = list(computed_levels(reader))[::-1]  # first step first
    planes: dict[str, dict[str, Any]] = {}
    previous: str | None = None
    for level in levels:
        name = level.step.name
        by_channel = taps.get(name, {})
        planes[name] = {}
        for channel, lv in level.levels.items():
            tap = by_channel.get(channel)
            if tap is None:
                continue
            n = len(lv.jobs)
            run = runs.get(name)
            if run is not None and channel in run.contexts:
                ctx = run.contexts[channel]
            else:
                image_dir = channel_dir(process_dir / name, channel)
                ctx = StepContext(step=name, channel=channel, channels=tuple(config.channels),
                                  project_dir=config.project_dir, image_dir=image_dir,
                                  outputs_dir=image_dir / "outputs", names=lv.names, meta=lv.meta,
                                  process_dir=process_dir, reader=level.upstream, output_reader=level,
                                  device=config.engine.device, project_params=config.raw)
            ctx.outputs_dir.mkdir(parents=True, exist_ok=True)
            stats = tap.stats_array(n)
            _save_npy(ctx.outputs_dir / "stats.npy", stats)
            n_nan = sum(tap.nan.values())
            if n_nan:
                ctx.warn(f"{n_nan} NaN pixels were written as 0")
            ctx.output_planes = planes[name][channel] = tap.planes(n)
            if previous is not None:
                ctx.input_planes = planes[previous].get(channel)
            started = run.started if run is not None else time.perf_counter()
            host.after_step(level.step, ctx, stats, time.perf_counter() - started)
        previous = name
    return planes
