"""The task functions that run in workers (any executor).

Each task handles a short run of consecutive slices: it reads its inputs through the
reader, computes, writes through the writer and returns only small results (measures,
statistics). Pixels never travel back to the driver.

Module-level functions with picklable arguments (step instance, state, reader, writer),
so they run unchanged in-process, in spawned processes and on Dask workers.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..stackio import StackReader, StackWriter
from ..step import SliceJob, Step
from .casting import cast_to_dtype, slice_stats
from .fused import TapBundle, drain_taps

__all__ = ["TaskFailure", "apply_chunk", "apply_chunk_tapped", "measure_chunk", "pair_chunk"]


class TaskFailure(Exception):
    """A slice failed in a worker. Picklable (plain ``args``), so it crosses processes.

    ``args = (index, file, message, traceback_text)``.
    """

    @property
    def index(self) -> int:
        return self.args[0]

    @property
    def file(self) -> str | None:
        return self.args[1]

    @property
    def message(self) -> str:
        return self.args[2]

    @property
    def traceback_text(self) -> str:
        return self.args[3]

    def __str__(self) -> str:
        return f"slice {self.index} ({self.file}): {self.message}"


def _fail(exc: BaseException, reader: StackReader, channel: str, index: int) -> TaskFailure:
    if isinstance(exc, InputError):
        file, message = str(exc.path), exc.message
    else:
        try:
            file = reader.describe(channel, index)
        except Exception:  # noqa: BLE001
            file = None
        message = f"{type(exc).__name__}: {exc}"
    return TaskFailure(index, file, message, traceback.format_exc())


def _read(reader: StackReader, channel: str, index: int) -> np.ndarray:
    image = reader.read(channel, index)
    if image.ndim != 2:
        raise InputError(reader.describe(channel, index), f"expected a 2D slice, got shape {image.shape}")
    return image


def measure_chunk(step: Step, reader: StackReader, channel: str, indices: Sequence[int],
                  previous: Any = None, multipass: bool = False) -> list[tuple[int, Any]]:
    """REDUCE measure phase: ``step.measure`` on each slice of ``indices`` (with the previous
    pass's combined result when the step has several passes)."""
    out = []
    for i in indices:
        try:
            image = _read(reader, channel, i)
            out.append((i, step.measure(image, i, previous) if multipass else step.measure(image, i)))
        except Exception as exc:  # noqa: BLE001
            raise _fail(exc, reader, channel, i) from None
    return out


def pair_chunk(step: Step, reader: StackReader, channel: str, pairs: Sequence[tuple[int, int]]) -> list[tuple[Any, Any]]:
    """PAIRWISE measure phase: ``step.measure_pair`` on each pair ``(j, i)`` (``j < i``).

    Pairs arrive sorted by ``i``; slices are cached while later pairs of the chunk still need
    them, so each is read about once per chunk.
    """
    out = []
    cache: dict[int, np.ndarray] = {}
    last_use = {}
    for j, i in pairs:
        last_use[j] = last_use[i] = (j, i)
    for j, i in pairs:
        try:
            for k in (j, i):
                if k not in cache:
                    cache[k] = _read(reader, channel, k)
            out.append(((j, i), step.measure_pair(cache[j], cache[i], i)))
            for k in (j, i):
                if last_use[k] == (j, i):
                    del cache[k]
        except Exception as exc:  # noqa: BLE001
            raise _fail(exc, reader, channel, i) from None
    return out


def apply_chunk(
    step: Step,
    state: Any,
    reader: StackReader,
    channel: str,
    jobs: Sequence[SliceJob],
    writer: StackWriter,
) -> list[tuple[int, np.ndarray, int]]:
    """Apply phase: compute, cast and write each job's output slice.

    :returns: per job ``(output index, stats (3, 3), NaN pixels zeroed)``; ``stats`` rows
        are input (the ``extras_from`` slice) / raw output / cast output, columns
        min / max / mean.
    """
    meta = writer.meta
    cache: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
    results = []
    for job in jobs:
        try:
            wanted = set(job.sources) | {job.extras_from}
            for i in list(cache):
                if i not in wanted:
                    del cache[i]
            for i in sorted(wanted):
                if i not in cache:
                    image, extras = reader.read_with_extras(channel, i)
                    if image.ndim != 2:
                        raise InputError(reader.describe(channel, i), f"expected a 2D slice, got shape {image.shape}")
                    cache[i] = (image, extras)
            images = [cache[i][0] for i in job.sources]
            raw = np.asarray(step.apply_job(images, job, state))
            if raw.shape != tuple(meta.shape):
                raise ValueError(f"step returned a slice of shape {raw.shape}, expected {tuple(meta.shape)}")
            cast, n_nan = cast_to_dtype(raw, meta.dtype)
            writer.write(job.index, cast, cache[job.extras_from][1])
            stats = np.stack([slice_stats(cache[job.extras_from][0]), slice_stats(raw), slice_stats(cast)])
            results.append((job.index, stats, n_nan))
        except Exception as exc:  # noqa: BLE001
            raise _fail(exc, reader, channel, job.sources[-1] if job.sources else job.index) from None
    return results


def apply_chunk_tapped(
    step: Step,
    state: Any,
    reader: StackReader,
    channel: str,
    jobs: Sequence[SliceJob],
    writer: StackWriter,
) -> list[Any]:
    """:func:`apply_chunk` on a reader with computed (fused) levels: the per-job results,
    then one :class:`~stack3d_core.engine.fused.TapBundle` with what those levels saw."""
    results: list[Any] = list(apply_chunk(step, state, reader, channel, jobs, writer))
    bundle: TapBundle = drain_taps(reader)
    return [*results, bundle]
