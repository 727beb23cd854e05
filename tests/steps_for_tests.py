"""Steps used by the engine tests: one per kind, plus failing ones. Importable by spawned
and Dask workers (module level), registered on a host with :data:`PLUGIN`."""

from __future__ import annotations

import os

import attrs
import numpy as np

from stack3d_core import SliceJob, StackMeta, Step, StepKind, hookimpl


@attrs.frozen(kw_only=True)
class OffsetParams:
    value: float = attrs.field(default=0.5, metadata={"doc": "added to every pixel", "unit": "gray level"})


class AddOffset(Step):
    """MAP: image + value (tests rounding of the cast)."""

    name = "add_offset"
    description = "add a constant"
    Params = OffsetParams

    def apply(self, image, index, state):
        return image.astype(np.float64) + self.params.value


@attrs.frozen(kw_only=True)
class FailParams:
    at: int = attrs.field(default=2, metadata={"doc": "slice index that fails"})
    hard: bool = attrs.field(default=False, metadata={"doc": "kill the worker process instead of raising"})


class FailAt(Step):
    """MAP that raises (or kills its process) at one slice."""

    name = "fail_at"
    description = "fail on purpose"
    Params = FailParams

    def apply(self, image, index, state):
        if index == self.params.at:
            if self.params.hard:
                os._exit(13)
            raise ValueError(f"deliberate failure at slice {index}")
        return image


@attrs.frozen(kw_only=True)
class NoParams:
    pass


class EqualiseMean(Step):
    """REDUCE: scale every slice so its mean equals the stack's mean of means."""

    name = "equalise_mean"
    description = "equalise slice means"
    Params = NoParams
    kind = StepKind.REDUCE

    def measure(self, image, index):
        return float(image.mean(dtype=np.float64))

    def combine(self, ctx, measures):
        means = np.asarray(measures)
        return float(means.mean()), means

    def apply(self, image, index, state):
        target, means = state
        return image.astype(np.float64) * (target / means[index])

    def finish(self, ctx, state, stats):
        np.save(ctx.outputs_dir / "means.npy", state[1])


class CumulativeDifference(Step):
    """PAIRWISE: subtract from slice k the sum of mean differences of pairs up to k."""

    name = "cumulative_difference"
    description = "remove cumulative mean drift"
    Params = NoParams
    kind = StepKind.PAIRWISE

    def measure_pair(self, previous, current, index):
        return float(current.mean(dtype=np.float64) - previous.mean(dtype=np.float64))

    def combine(self, ctx, measures):
        return np.concatenate([[0.0], np.cumsum(measures)])

    def apply(self, image, index, state):
        return image.astype(np.float64) - state[index]


class PairAverage(Step):
    """Non one-to-one: output j is the mean of input slices 2j and 2j+1."""

    name = "pair_average"
    description = "average pairs of slices (halves the stack)"
    Params = NoParams

    def plan(self, ctx, state):
        n = ctx.meta.n // 2
        return [SliceJob(j, f"avg_{j:04d}.tif", (2 * j, 2 * j + 1), 2 * j + 1) for j in range(n)]

    def apply_job(self, images, job, state):
        return (images[0].astype(np.float64) + images[1]) / 2

    def output_meta(self, ctx, state, jobs) -> StackMeta:
        return ctx.meta.evolve(n=len(jobs), z_positions=None)


class MakeNan(Step):
    """MAP: sets pixel (0, 0) to NaN (the cast must write 0 and count it)."""

    name = "make_nan"
    description = "put a NaN in every slice"
    Params = NoParams

    def apply(self, image, index, state):
        out = image.astype(np.float64)
        out[0, 0] = np.nan
        return out


class CountOnly(Step):
    """Writes no images: counts slices into outputs (like registration_calculation)."""

    name = "count_only"
    description = "count slices, no images"
    Params = NoParams
    kind = StepKind.REDUCE
    channels = "first"
    writes_images = False

    def measure(self, image, index):
        return 1

    def combine(self, ctx, measures):
        (ctx.image_dir / "count.txt").write_text(str(sum(measures)))
        return sum(measures)


class StretchHistogram(Step):
    """REDUCE with two passes: global min/max first, then a histogram on that range; apply
    maps each slice through the mean histogram's median (a stand-in for histogram matching)."""

    name = "stretch_histogram"
    description = "two-pass reduce test step"
    Params = NoParams
    kind = StepKind.REDUCE
    measure_passes = 2

    def measure(self, image, index, previous=None):
        if previous is None:
            return float(image.min()), float(image.max())
        lo, hi = previous
        return np.histogram(image, bins=16, range=(lo, hi))[0]

    def combine_pass(self, ctx, pass_index, measures):
        return min(m[0] for m in measures), max(m[1] for m in measures)

    def combine(self, ctx, measures):
        return np.sum(measures, axis=0)

    def apply(self, image, index, state):
        return image.astype(np.float64) * 0 + float(np.argmax(state))

    def finish(self, ctx, state, stats):
        np.save(ctx.outputs_dir / "histogram.npy", state)


class LongRangePairs(Step):
    """PAIRWISE with offsets 1 and 2: the state is the dict of pair mean differences."""

    name = "long_range_pairs"
    description = "pairs at distances 1 and 2"
    Params = NoParams
    kind = StepKind.PAIRWISE
    pair_offsets = (1, 2)

    def measure_pair(self, previous, current, index):
        return float(current.mean(dtype=np.float64) - previous.mean(dtype=np.float64))

    def combine(self, ctx, measures):
        return dict(measures)

    def apply(self, image, index, state):
        return image.astype(np.float64) - state.get((index - 2, index), 0.0)

    def finish(self, ctx, state, stats):
        keys = sorted(state)
        np.save(ctx.outputs_dir / "pairs.npy", np.array([[j, i, state[(j, i)]] for j, i in keys]))


STEPS = [AddOffset, FailAt, EqualiseMean, CumulativeDifference, PairAverage, MakeNan, CountOnly,
         StretchHistogram, LongRangePairs]


class _Plugin:
    @hookimpl
    def stack3d_register_steps(self):
        return list(STEPS)


PLUGIN = _Plugin()


# -- a reader and a writer, for the register_readers / register_writers hook tests ------------
from pathlib import Path as _Path  # noqa: E402

from stack3d_core import StackReader, StackWriter  # noqa: E402


@attrs.frozen(kw_only=True)
class NpyOptions:
    scale: int = attrs.field(default=1, metadata={"doc": "multiply every pixel by this"})


class NpyStackReader(StackReader):
    """Reads a ``stack.npy`` (n, rows, cols) file, memory-mapped."""

    name = "npy_stack"
    description = "one .npy holding the whole stack (tests)"
    Options = NpyOptions

    @classmethod
    def can_read(cls, path):
        return _Path(path).suffix == ".npy"

    def names(self, channel):
        return tuple(f"z{k:03d}" for k in range(np.load(self.path, mmap_mode="r").shape[0]))

    def meta(self, channel):
        arr = np.load(self.path, mmap_mode="r")
        return StackMeta(n=arr.shape[0], shape=arr.shape[1:], dtype=arr.dtype.name)

    def read(self, channel, index):
        return np.load(self.path, mmap_mode="r")[index] * self.options.scale


class NpyStackWriter(StackWriter):
    """Writes one ``.npy`` file, created at its final size; slices written in place."""

    name = "npy_stack"
    description = "one .npy holding the whole stack (tests)"
    suffixes = (".npy",)

    def __init__(self, path, meta, names, options=None):
        super().__init__(path, meta, names, options)
        self.staging = self.path.with_name(f".{self.path.name}.partial")
        np.lib.format.open_memmap(self.staging, mode="w+", dtype=meta.dtype, shape=(meta.n, *meta.shape)).flush()

    def write(self, index, image, extras):
        arr = np.load(self.staging, mmap_mode="r+")
        arr[index] = image
        arr.flush()

    def commit(self):
        self.staging.replace(self.path)

    def abort(self):
        self.staging.unlink(missing_ok=True)


class _IOPlugin:
    @hookimpl
    def stack3d_register_readers(self):
        return [NpyStackReader]

    @hookimpl
    def stack3d_register_writers(self):
        return [NpyStackWriter]


IO_PLUGIN = _IOPlugin()
