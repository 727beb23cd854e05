"""Fused streaming: a step's output read on demand instead of stored.

When ``[engine] keep_intermediates`` is false (the default), a step whose output only feeds
later steps does not write its images. The engine wraps its input reader in a
:class:`ComputedReader`: reading slice ``k`` of it reads the job's source slices from the
upstream reader, calls the step's ``apply_job`` and casts the result to the stack dtype,
exactly as the apply phase would have done before writing the file. Chains of computed
readers fuse consecutive steps into one pass over the stack; a global phase of a later
step (a fit, a histogram, pairwise registration) reads through the chain, so it costs one
read of the stored input plus the recomputation of the cheap steps above it.

Because the computed slice is the cast slice the stored run would have written, a fused
run and a run with ``keep_intermediates = true`` give identical final outputs.

While slices are computed, each :class:`ComputedReader` records a *tap* per slice: the
``(3, 3)`` statistics that ``outputs/stats.npy`` holds (input / raw output / cast output ×
min / max / mean), NaN counts, and the cut planes that the ``plots`` observer draws (the
middle slice; the middle row and column of :data:`PLANE_SLICES` evenly spaced slices).
The pass that finally writes images returns the taps of every computed level to the
driver, which then writes those steps' ``stats.npy`` and calls their after-step hooks.

The step, its state, its slice jobs and output metadata are pickled to
``process/<step>/recompute.pickle`` so that a later run can rebuild the chain and resume
from that step (a file the engine writes and reads itself, in the user's project).
"""

from __future__ import annotations

import collections
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ..errors import InputError, Stack3dError
from ..stackio import StackMeta, StackReader
from ..step import SliceJob, Step
from .casting import cast_to_dtype, slice_stats

__all__ = [
    "PLANE_SLICES",
    "RECOMPUTE_FILE",
    "ComputedReader",
    "Level",
    "Tap",
    "TapBundle",
    "computed_levels",
    "drain_taps",
    "load_computed",
    "merge_taps",
    "plane_picks",
    "reset_chain",
    "save_computed",
]

PLANE_SLICES = 64
"""Most slices whose middle row and column are kept for the XZ / YZ cut planes."""

RECOMPUTE_FILE = "recompute.pickle"
"""What a run needs to recompute a step's slices, in ``process/<step>/``."""

_CACHE_SLICES = 3
"""Slices kept per computed level and process: a pair ``(i - 1, i)``, a resampling job's
two sources and its extras slice are served without recomputing."""


def plane_picks(n: int, max_slices: int = PLANE_SLICES) -> np.ndarray:
    """The slice indices whose middle row and column make the XZ / YZ cut planes."""
    return np.unique(np.linspace(0, n - 1, min(n, max_slices)).round().astype(int))


@attrs.frozen
class Level:
    """One channel of a computed step: what ``apply_job`` needs, and what comes out.

    :param state: the step's combined state for this channel.
    :param jobs: the output slices (``Step.plan``), by output index.
    :param meta: the output stack's metadata (``Step.output_meta``).
    """

    state: Any
    jobs: tuple[SliceJob, ...]
    meta: StackMeta

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.jobs)


@attrs.define
class Tap:
    """What was seen of one channel of a computed level, slice by slice.

    :param stats: output index → ``(3, 3)`` statistics (as in ``stats.npy``).
    :param nan: output index → NaN pixels written as 0.
    :param rows: output index → middle row (for slices in :func:`plane_picks`).
    :param cols: output index → middle column.
    :param middle: the middle slice (``n // 2``), once computed.
    """

    stats: dict[int, np.ndarray] = attrs.field(factory=dict)
    nan: dict[int, int] = attrs.field(factory=dict)
    rows: dict[int, np.ndarray] = attrs.field(factory=dict)
    cols: dict[int, np.ndarray] = attrs.field(factory=dict)
    middle: np.ndarray | None = None

    def merge(self, other: Tap) -> None:
        self.stats.update(other.stats)
        self.nan.update(other.nan)
        self.rows.update(other.rows)
        self.cols.update(other.cols)
        if other.middle is not None:
            self.middle = other.middle

    def stats_array(self, n: int) -> np.ndarray:
        """``(n, 3, 3)`` statistics; slices never computed are NaN."""
        out = np.full((n, 3, 3), np.nan)
        for i, s in self.stats.items():
            out[i] = s
        return out

    def planes(self, n: int) -> dict[str, Any] | None:
        """Cut planes in the format of ``stack3d_steps.plots.cut_planes``, or ``None`` when
        the pass did not see the slices they need."""
        picks = [int(k) for k in plane_picks(n)]
        if self.middle is None or any(k not in self.rows for k in picks):
            return None
        row, col = self.middle.shape[0] // 2, self.middle.shape[1] // 2
        return {"xy": self.middle, "xz": np.stack([self.rows[k] for k in picks]),
                "yz": np.stack([self.cols[k] for k in picks]), "z_index": np.asarray(picks),
                "row": row, "col": col}


@attrs.frozen
class TapBundle:
    """Taps drained from a chain after a task: ``{step: {channel: Tap}}``."""

    taps: Mapping[str, Mapping[str, Tap]]


class ComputedReader(StackReader):
    """The output of ``step`` on ``upstream``, computed slice by slice when read.

    :param step: the step instance.
    :param upstream: the step's input.
    :param levels: per channel, the state, jobs and output metadata.
    :param record: keep taps of the slices computed. The engine turns this off while
        global phases read through the chain and on for the pass that stores a later step
        (:func:`reset_chain`), so statistics and planes are computed once, where they count.
    """

    name = "computed"
    description = "a step's output, recomputed from its input when read (fused pipeline)"

    def __init__(self, step: Step, upstream: StackReader, levels: Mapping[str, Level], *, record: bool = True) -> None:
        super().__init__(upstream.path)
        self.step, self.upstream, self.levels, self.record = step, upstream, dict(levels), record
        self._reset()

    def _reset(self) -> None:
        self._cache: collections.OrderedDict[tuple[str, int], tuple[np.ndarray, dict[str, Any]]] = (
            collections.OrderedDict())
        self._taps: dict[str, Tap] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "options": self.options, "step": self.step, "upstream": self.upstream,
                "levels": self.levels, "record": self.record}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def channels(self) -> tuple[str, ...]:
        return tuple(self.levels)

    def _level(self, channel: str) -> Level:
        try:
            return self.levels[channel]
        except KeyError:
            raise Stack3dError(f"step '{self.step.name}' was not computed for channel {channel!r}") from None

    def names(self, channel: str) -> tuple[str, ...]:
        return self._level(channel).names

    def meta(self, channel: str) -> StackMeta:
        return self._level(channel).meta

    def describe(self, channel: str, index: int) -> str:
        level = self._level(channel)
        source = level.jobs[index].extras_from if 0 <= index < len(level.jobs) else index
        return f"{self.step.name} output slice {index}, computed from {self.upstream.describe(channel, source)}"

    def read(self, channel: str, index: int) -> np.ndarray:
        return self.read_with_extras(channel, index)[0]

    def extras(self, channel: str, index: int) -> dict[str, Any]:
        return self.read_with_extras(channel, index)[1]

    def read_with_extras(self, channel: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        key = (channel, index)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        level = self._level(channel)
        if not 0 <= index < len(level.jobs):
            raise IndexError(f"{self.step.name}: slice {index} out of range (0..{len(level.jobs) - 1})")
        job = level.jobs[index]
        sources = {i: self.upstream.read_with_extras(channel, i) for i in sorted(set(job.sources) | {job.extras_from})}
        try:
            raw = np.asarray(self.step.apply_job([sources[i][0] for i in job.sources], job, level.state))
            if raw.shape != tuple(level.meta.shape):
                raise ValueError(f"step returned a slice of shape {raw.shape}, expected {tuple(level.meta.shape)}")
            cast, n_nan = cast_to_dtype(raw, level.meta.dtype)
        except Exception as exc:  # noqa: BLE001 - named with the step and the source file
            raise InputError(self.upstream.describe(channel, job.sources[-1] if job.sources else index),
                             f"step '{self.step.name}' (computed in a fused pass) failed on its slice {index}: "
                             f"{type(exc).__name__}: {exc}") from exc
        if self.record:
            self._record(channel, index, len(level.jobs), sources[job.extras_from][0], raw, cast, n_nan)
        result = (cast, sources[job.extras_from][1])
        self._cache[key] = result
        while len(self._cache) > _CACHE_SLICES:
            self._cache.popitem(last=False)
        return result

    def _record(self, channel: str, index: int, n: int, source: np.ndarray, raw: np.ndarray,
                cast: np.ndarray, n_nan: int) -> None:
        tap = self._taps.setdefault(channel, Tap())
        source_stats = None
        if isinstance(self.upstream, ComputedReader):  # the source is the upstream's cast output, seen just now
            up = self.upstream._taps.get(channel)
            seen = up.stats.get(self._level(channel).jobs[index].extras_from) if up is not None else None
            source_stats = seen[2] if seen is not None else None
        if source_stats is None:
            source_stats = slice_stats(source)
        tap.stats[index] = np.stack([source_stats, slice_stats(raw), slice_stats(cast)])
        tap.nan[index] = n_nan
        if index in _picks_set(n):
            tap.rows[index] = cast[cast.shape[0] // 2, :].copy()
            tap.cols[index] = cast[:, cast.shape[1] // 2].copy()
        if index == n // 2:
            tap.middle = cast.copy()

    def reset(self, record: bool | None = None) -> None:
        """Forget cached slices and taps (before the pass whose taps count); ``record``
        (when given) switches the taps on or off."""
        if record is not None:
            self.record = record
        self._reset()

    def drain(self) -> dict[str, Tap]:
        """The taps recorded since the last drain (and forget them)."""
        taps, self._taps = self._taps, {}
        return taps


_PICKS: dict[int, frozenset[int]] = {}


def _picks_set(n: int) -> frozenset[int]:
    if n not in _PICKS:
        _PICKS[n] = frozenset(int(k) for k in plane_picks(n))
    return _PICKS[n]


def computed_levels(reader: StackReader) -> Iterator[ComputedReader]:
    """The computed readers of a chain, last step first."""
    while isinstance(reader, ComputedReader):
        yield reader
        reader = reader.upstream


def drain_taps(reader: StackReader) -> TapBundle:
    """Collect and clear the taps of every computed level of ``reader``'s chain."""
    return TapBundle({level.step.name: level.drain() for level in computed_levels(reader)})


def reset_chain(reader: StackReader) -> None:
    """:meth:`ComputedReader.reset` on every computed level of the chain, with the taps on:
    the taps of the next pass are those of that pass alone, whatever the executor."""
    for level in computed_levels(reader):
        level.reset(record=True)


def merge_taps(bundles: Sequence[TapBundle]) -> dict[str, dict[str, Tap]]:
    """Merge the bundles of every task of a pass: ``{step: {channel: Tap}}``."""
    merged: dict[str, dict[str, Tap]] = {}
    for bundle in bundles:
        for step, by_channel in bundle.taps.items():
            for channel, tap in by_channel.items():
                merged.setdefault(step, {}).setdefault(channel, Tap()).merge(tap)
    return merged


def save_computed(step_dir: Path, step: Step, levels: Mapping[str, Level]) -> None:
    """Write what :func:`load_computed` needs into ``step_dir`` (atomically)."""
    data = pickle.dumps({"version": 1, "step": step, "levels": dict(levels)}, protocol=pickle.HIGHEST_PROTOCOL)
    tmp = step_dir / f".{RECOMPUTE_FILE}.tmp"
    tmp.write_bytes(data)
    tmp.replace(step_dir / RECOMPUTE_FILE)


def load_computed(step_dir: Path, upstream: StackReader) -> ComputedReader:
    """Rebuild a step's computed output on ``upstream`` from ``step_dir``."""
    path = step_dir / RECOMPUTE_FILE
    if not path.is_file():
        raise Stack3dError(f"{step_dir.name} ran without storing its images, and {path} is missing: "
                           f"run '{step_dir.name}' again (--redo)")
    try:
        data = pickle.loads(path.read_bytes())  # noqa: S301 - the engine's own file in the project
        return ComputedReader(data["step"], upstream, data["levels"], record=False)
    except Exception as exc:  # noqa: BLE001
        raise Stack3dError(f"{path} cannot be read ({type(exc).__name__}: {exc}): "
                           f"run '{step_dir.name}' again (--redo)") from exc

