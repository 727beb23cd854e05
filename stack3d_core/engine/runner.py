"""Running one step on one channel: measure / pairs → combine → apply, on any executor.

Tasks cover short runs of consecutive slices (so a large state is pickled a few times per
worker, not once per slice) and are all submitted at once; results are collected as they
complete. The first failing task cancels the others and fails the step promptly with the
step, channel, slice and file named.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from ..errors import StepError
from ..progress import ProgressCallback, ProgressEvent
from ..stackio import StackMeta, StackReader, StackWriter
from ..step import SliceJob, Step, StepContext, StepKind
from .executors import SerialExecutor
from .fused import ComputedReader, Tap, TapBundle, merge_taps, reset_chain
from .tasks import TaskFailure, apply_chunk, apply_chunk_tapped, measure_chunk, pair_chunk

__all__ = ["StepOutcome", "apply_state", "chunked", "compute_state", "execute_step"]


@attrs.frozen
class StepOutcome:
    """What a step produced for one channel (pixels excepted)."""

    state: Any
    stats: np.ndarray | None
    nan_zeroed: int = 0
    n_out: int = 0
    meta: StackMeta | None = None
    """The output stack's metadata (``None`` for steps that write no images)."""
    taps: dict[str, dict[str, Tap]] = attrs.field(factory=dict)
    """What the computed (fused) levels of the input saw in the apply pass:
    ``{step: {channel: Tap}}`` (empty when the input is stored)."""


def chunked(items: Sequence[Any], parallelism: int, max_size: int = 16, *, fused: bool = False,
            serial: bool | None = None) -> list[Sequence[Any]]:
    """Split ``items`` into runs of consecutive items: about four runs per worker, at most
    ``max_size`` items each; serially, runs of up to 8 (neighbour reads are cached within a
    run, and the progress bar still moves about 20 times per phase).

    ``fused``: the input is computed (:mod:`.fused`), and a slice needed by two runs is
    computed twice in parallel runs, so runs are about twice as long (at most
    ``2 * max_size``). ``serial``: the tasks run in this process (default: ``parallelism
    <= 1``); a single remote worker (Dask) still gets pickled tasks and fresh caches."""
    if not items:
        return []
    if serial is None:
        serial = parallelism <= 1
    parallelism = max(1, parallelism)
    if serial:  # nothing to pickle, one cache: chunks only set the progress granularity
        size = max(1, min(8, math.ceil(len(items) / 20)))
    elif fused:
        size = max(1, min(2 * max_size, math.ceil(len(items) / (parallelism * 2))))
    else:
        size = max(1, min(max_size, math.ceil(len(items) / (parallelism * 4))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_phase(
    executor: cf.Executor,
    fn: Callable[..., list[Any]],
    args_before: tuple[Any, ...],
    chunks: Sequence[Sequence[Any]],
    args_after: tuple[Any, ...] = (),
    *,
    step: str,
    channel: str,
    phase: str,
    progress: ProgressCallback | None,
) -> list[Any]:
    """Submit ``fn(*args_before, chunk, *args_after)`` for every chunk; return all results
    (flattened, in completion order) or raise :class:`StepError` on the first failure."""
    total = sum(len(c) for c in chunks)
    if progress:
        progress(ProgressEvent("start", step, channel, phase, 0, total))
    futures = {executor.submit(fn, *args_before, chunk, *args_after): chunk for chunk in chunks}
    results: list[Any] = []
    try:
        for future in cf.as_completed(futures):
            exc = future.exception()
            if exc is not None:
                raise _step_error(exc, step, channel, futures[future]) from exc
            results.extend(future.result())
            if progress:
                progress(ProgressEvent("advance", step, channel, phase, len(futures[future]), total))
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        if progress:
            progress(ProgressEvent("end", step, channel, phase, total, total))
    return results


def _describe_chunk(chunk: Sequence[Any]) -> str:
    def slice_of(item: Any) -> int:
        if isinstance(item, tuple):  # a pair (j, i): the later slice
            return item[1]
        return getattr(item, "index", item)

    first, last = slice_of(chunk[0]), slice_of(chunk[-1])
    return f"slice {first}" if first == last else f"slices {first}-{last}"


def _step_error(exc: BaseException, step: str, channel: str, chunk: Sequence[Any]) -> StepError:
    if isinstance(exc, TaskFailure):
        return StepError(step, exc.message, channel=channel, index=exc.index, file=exc.file)
    if type(exc).__name__ == "TaskFailure":  # re-raised by Dask from the worker's copy
        index, file, message = exc.args[:3]
        return StepError(step, message, channel=channel, index=index, file=file)
    # a dead worker breaks every pending task: the chunk named is the first reported
    return StepError(step, f"the task for {_describe_chunk(chunk)} failed (a worker died or the "
                           f"executor broke): {type(exc).__name__}: {exc}", channel=channel)


def _driver_call(step: Step, channel: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a driver-side step method, turning unexpected errors into a StepError."""
    try:
        return fn(*args)
    except StepError:
        raise
    except Exception as exc:
        raise StepError(step.name, f"{type(exc).__name__}: {exc}", channel=channel) from exc


_UNSET: Any = object()


def execute_step(
    step: Step,
    ctx: StepContext,
    reader: StackReader,
    make_writer: Callable[[Any, Sequence[str]], StackWriter],
    executor: cf.Executor,
    parallelism: int,
    progress: ProgressCallback | None = None,
    state: Any = _UNSET,
) -> StepOutcome:
    """Run ``step`` on ``ctx.channel`` of ``reader``.

    :param make_writer: ``(output StackMeta, output names) -> writer`` for the step's
        images (called only by steps that write images).
    :param state: a state computed on another channel (``state_from = "first"``): the
        measure and combine phases are skipped.
    """
    state = compute_state(step, ctx, reader, executor, parallelism, progress, state)
    if not step.writes_images:
        return StepOutcome(state, None)
    return apply_state(step, ctx, reader, make_writer, executor, parallelism, progress, state)


def compute_state(step: Step, ctx: StepContext, reader: StackReader, executor: cf.Executor, parallelism: int,
                  progress: ProgressCallback | None = None, state: Any = _UNSET) -> Any:
    """``prepare``, then the measure or pairs phases and ``combine`` (skipped when ``state``
    is given: a state computed on another channel). Returns the state."""
    _driver_call(step, ctx.channel, step.prepare, ctx)
    if state is _UNSET:
        state = _measure_and_combine(step, ctx, reader, executor, parallelism, progress)
    return state


def _measure_and_combine(step: Step, ctx: StepContext, reader: StackReader, executor: cf.Executor,
                         parallelism: int, progress: ProgressCallback | None) -> Any:
    """The measure (REDUCE) or pairs (PAIRWISE) phases, then ``combine`` on the driver."""
    name, channel, n = step.name, ctx.channel, ctx.meta.n
    fused = isinstance(reader, ComputedReader)
    in_process = isinstance(executor, SerialExecutor)
    common = dict(step=name, channel=channel, progress=progress)
    measures: Any
    if step.kind is StepKind.REDUCE:
        passes = step.measure_passes
        previous: Any = None
        wanted = _driver_call(step, channel, step.measure_slices, ctx)
        indices = list(range(n)) if wanted is None else sorted({int(i) for i in wanted if 0 <= int(i) < n})
        for p in range(passes):
            phase = "measure" if passes == 1 else f"measure {p + 1}/{passes}"
            found = run_phase(executor, measure_chunk, (step, reader, channel), chunked(indices, parallelism, fused=fused, serial=in_process),
                              (previous, passes > 1), phase=phase, **common)
            measures = [None] * n
            for i, m in found:
                measures[i] = m
            if p < passes - 1:
                previous = _driver_call(step, channel, step.combine_pass, ctx, p, measures)
    elif step.kind is StepKind.PAIRWISE:
        offsets = tuple(step.pair_offsets)
        wanted = sorted(((i - d, i) for i in range(n) for d in offsets if i - d >= 0), key=lambda ji: (ji[1], ji[0]))
        found = run_phase(executor, pair_chunk, (step, reader, channel),
                          chunked(wanted, parallelism, fused=fused, serial=in_process), phase="pairs", **common)
        by_pair = dict(found)
        measures = [by_pair[(i - 1, i)] for i in range(1, n)] if offsets == (1,) else by_pair
    else:
        measures = []
    return _driver_call(step, channel, step.combine, ctx, measures)


def plan_output(step: Step, ctx: StepContext, state: Any) -> tuple[list[SliceJob], StackMeta]:
    """The step's output slices and output metadata (driver side)."""
    jobs = _driver_call(step, ctx.channel, step.plan, ctx, state)
    return jobs, _driver_call(step, ctx.channel, step.output_meta, ctx, state, jobs)


def apply_state(step: Step, ctx: StepContext, reader: StackReader,
                make_writer: Callable[[Any, Sequence[str]], StackWriter], executor: cf.Executor, parallelism: int,
                progress: ProgressCallback | None, state: Any) -> StepOutcome:
    """The apply phase: plan the output slices, then compute, cast and write them."""
    common = dict(step=step.name, channel=ctx.channel, progress=progress)
    channel = ctx.channel
    jobs, meta_out = plan_output(step, ctx, state)
    writer = make_writer(meta_out, [j.name for j in jobs])
    fused = isinstance(reader, ComputedReader)
    in_process = isinstance(executor, SerialExecutor)
    task = apply_chunk_tapped if fused else apply_chunk
    reset_chain(reader)  # serially, earlier passes ran on these very objects
    try:
        results = run_phase(executor, task, (step, state, reader, channel),
                            chunked(jobs, parallelism, fused=fused, serial=in_process), (writer,), phase="apply", **common)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    stats = np.full((len(jobs), 3, 3), np.nan)
    nan_zeroed = 0
    bundles = []
    for item in results:
        if isinstance(item, TapBundle):
            bundles.append(item)
            continue
        index, slice_stats, n_nan = item
        stats[index] = slice_stats
        nan_zeroed += n_nan
    return StepOutcome(state, stats, nan_zeroed, len(jobs), meta_out, merge_taps(bundles))
