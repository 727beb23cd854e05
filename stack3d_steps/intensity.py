"""``intensity_rescaling`` and ``intensity_rescaling_area``: even out gray levels along z.

Both are REDUCE steps (measure per slice in the workers, combine on the driver, apply per
slice). Gray levels are in the stack's own units (0..255 for uint8...). Results are floats;
the engine rounds and clips them to the input dtype (PyStack3D truncates).

``intensity_rescaling`` (histogram matching), two measure passes:

1. every slice's ``(min, max)`` → the global range ``[vmin, vmax]`` (``combine_pass``);
2. every slice's histogram, ``nbins`` equal bins over that range, pixel ``p`` in bin
   ``clip(floor(nbins (p - vmin) / (vmax - vmin)), 0, nbins - 1)`` (PyStack3D 2026's rule);

then ``combine`` builds the reference histogram of every slice (the mean histogram with
``filter_size = -1``, a running mean over ``filter_size`` slices otherwise, in float) and
one look-up table per slice (``nbins`` gray levels), and ``apply`` maps each pixel through
its bin's entry. ``histos_final.npy`` is derived from the tables and the input histograms
(each input bin lands on one output value), so no slice is read a third time.

``intensity_rescaling_area``: ``mean_k`` = mean of the ROI pixels (``area``, bottom-left
origin as in ``cropping``) within ``[threshold_min, threshold_max]``; ``ref`` = median of
the means; ``f_k = clip(ref / mean_k, factors_range)``; output ``f_k · img``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from stack3d_core import Step, StepContext, StepKind
from stack3d_core.stepkit import save_array, write_text

from . import _intensity_core as core
from .cropping import check_area, crop_indices

__all__ = [
    "STEPS", "HistogramState", "IntensityRescaling", "IntensityRescalingArea",
    "IntensityRescalingAreaParams", "IntensityRescalingParams",
]


def _positive_int(_: Any, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0 (got {value})")


def _filter_size_ok(_: Any, attribute: attrs.Attribute, value: int) -> None:
    if value != -1 and value <= 0:
        raise ValueError(f"filter_size must be -1 (mean histogram) or > 0 (running mean over "
                         f"that many slices); got {value}")


def _range_ok(_: Any, attribute: attrs.Attribute, value: tuple[float, float] | None) -> None:
    if value is None:
        return
    lo, hi = value
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise ValueError(f"{attribute.name} must be [min, max] with min < max (got {list(value)})")


@attrs.frozen(kw_only=True)
class IntensityRescalingParams:
    """Parameters of ``intensity_rescaling`` (PyStack3D's keys and defaults)."""

    nbins: int = attrs.field(default=256, validator=_positive_int, metadata={
        "doc": "number of histogram bins over the stack's global [min, max]", "unit": "bins"})
    range_bins: tuple[float, float] | None = attrs.field(default=None, validator=_range_ok, metadata={
        "doc": "PyStack3D 2025 only: bin range (2026 dropped the key). Accepted so old files "
               "load, and ignored with a warning: the bins always span the stack's global [min, max]",
        "unit": "gray level"})
    filter_size: int = attrs.field(default=10, validator=_filter_size_ok, metadata={
        "doc": "-1: every slice is matched to the mean histogram of the stack; k > 0: to the "
               "running mean of the histograms over k slices along z (float, mode reflect)",
        "unit": "slices"})


@attrs.frozen(eq=False)
class HistogramState:
    """What ``apply`` needs: the bin range and one look-up table per slice.

    :param vmin: lower edge of the first bin (gray level).
    :param vmax: upper edge of the last bin (gray level).
    :param luts: ``(n, nbins)`` float64: output gray level of every input bin, per slice.
    """

    vmin: float
    vmax: float
    luts: np.ndarray


class IntensityRescaling(Step):
    """Histogram matching of every slice to a reference histogram (mean or running mean)."""

    name = "intensity_rescaling"
    description = "histogram matching of every slice to the mean (or running-mean) histogram along z"
    Params = IntensityRescalingParams
    kind = StepKind.REDUCE
    measure_passes = 2

    def measure(self, image: np.ndarray, index: int, previous: Any = None) -> Any:
        """Pass 1 (``previous is None``): ``(min, max)`` of the slice. Pass 2 (``previous`` =
        ``(vmin, vmax)``): ``(vmin, vmax, counts)``, the slice's histogram (int64, ``nbins``)
        with the range it was taken on."""
        if previous is None:
            if image.dtype.kind == "f":
                finite = image[np.isfinite(image)]
                if finite.size == 0:
                    return (float("nan"), float("nan"))
                return (float(finite.min()), float(finite.max()))
            return (float(image.min()), float(image.max()))
        vmin, vmax = previous
        return vmin, vmax, core.slice_histogram(image, vmin, vmax, self.params.nbins)

    def combine_pass(self, ctx: StepContext, pass_index: int, measures: Sequence[Any]) -> tuple[float, float]:
        if self.params.range_bins is not None:
            ctx.warn(f"range_bins = {list(self.params.range_bins)} is ignored (PyStack3D 2026 dropped "
                     "this 2025 key): the bins span the stack's global [min, max]")
        vmin, vmax, widened = core.global_range(measures)
        if widened:
            ctx.warn(f"the stack is constant ({vmin + 0.5:g}): bins span [{vmin:g}, {vmax:g}]")
        return vmin, vmax

    def combine(self, ctx: StepContext, measures: Sequence[Any]) -> HistogramState:
        vmin, vmax = measures[0][0], measures[0][1]
        hist = np.stack([np.asarray(m[2], dtype=np.int64) for m in measures])
        ref = core.reference_histograms(hist, self.params.filter_size)
        luts = core.luts_from_histograms(hist, ref, core.bin_centres(vmin, vmax, self.params.nbins))
        final = core.final_histograms(hist, luts, vmin, vmax, ctx.meta.dtype)
        out = ctx.outputs_dir
        save_array(out / "histo_orig.npy", hist)
        save_array(out / "histos_ref.npy", ref)
        save_array(out / "histos_final.npy", final)
        save_array(out / "bin_range.npy", np.array([vmin, vmax]))
        return HistogramState(vmin, vmax, luts)

    def apply(self, image: np.ndarray, index: int, state: HistogramState) -> np.ndarray:
        idx = core.bin_index(image, state.vmin, state.vmax, state.luts.shape[1])
        out = state.luts[index][idx]
        if image.dtype.kind == "f":
            out[~np.isfinite(image)] = np.nan
        return out

    def finish(self, ctx: StepContext, state: HistogramState, stats: np.ndarray) -> None:
        from ._intensity_plots import plot_histogram_maps, plot_histogram_profiles

        out = ctx.outputs_dir
        hists = [np.load(out / f) for f in ("histo_orig.npy", "histos_ref.npy", "histos_final.npy")]
        plot_histogram_maps(*hists, state.vmin, state.vmax, out / "intensity_rescaling_maps.png")
        plot_histogram_profiles(*hists, state.vmin, state.vmax, out / "intensity_rescaling_profiles.png")


@attrs.frozen(kw_only=True)
class IntensityRescalingAreaParams:
    """Parameters of ``intensity_rescaling_area`` (PyStack3D's keys and defaults)."""

    area: tuple[int, int, int, int] | None = attrs.field(default=None, validator=check_area, metadata={
        "doc": "[xmin, xmax, ymin, ymax] of the region whose mean is levelled; origin at the "
               "bottom-left corner (x = column, y = row counted upward), as cropping; None: "
               "the whole slice. Clamped to the image with a warning",
        "unit": "px"})
    threshold_min: float | None = attrs.field(default=None, metadata={
        "doc": "only ROI pixels >= this absolute gray level enter the mean (None: no bound)",
        "unit": "gray level"})
    threshold_max: float | None = attrs.field(default=None, metadata={
        "doc": "only ROI pixels <= this absolute gray level enter the mean (None: no bound)",
        "unit": "gray level"})
    factors_range: tuple[float, float] = attrs.field(default=(0.8, 1.2), metadata={
        "doc": "[min, max] the per-slice factors are clipped to", "unit": "-"})

    def validate(self) -> list[str]:
        """Cross-field checks: thresholds not crossed, a positive, ordered factors range."""
        problems = []
        tmin, tmax = self.threshold_min, self.threshold_max
        if tmin is not None and tmax is not None and tmin > tmax:
            problems.append(f"threshold_min ({tmin:g}) must be <= threshold_max ({tmax:g})")
        lo, hi = self.factors_range
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or lo > hi:
            problems.append(f"factors_range must be [min, max] with 0 < min <= max (got {list(self.factors_range)})")
        return problems

    def __attrs_post_init__(self) -> None:
        problems = self.validate()
        if problems:
            raise ValueError("; ".join(problems))


class IntensityRescalingArea(Step):
    """Scale every slice so that its ROI mean matches the median ROI mean of the stack."""

    name = "intensity_rescaling_area"
    description = "per-slice gain from the mean gray level of an area (factor = median mean / slice mean)"
    Params = IntensityRescalingAreaParams
    kind = StepKind.REDUCE

    def measure(self, image: np.ndarray, index: int, previous: Any = None) -> float:
        """Mean gray level of the ROI pixels within the thresholds (NaN when none)."""
        (imin, imax, jmin, jmax), _ = crop_indices(self.params.area, image.shape)
        p = self.params
        return core.roi_mean(image[imin:imax, jmin:jmax], p.threshold_min, p.threshold_max)

    def combine(self, ctx: StepContext, measures: Sequence[Any]) -> np.ndarray:
        _, warnings = crop_indices(self.params.area, ctx.meta.shape)
        for message in warnings:
            ctx.warn(message)
        means = np.asarray(measures, dtype=np.float64)
        empty = np.flatnonzero(~np.isfinite(means))
        if empty.size == means.size:
            raise ValueError(f"no pixel of the area {self._area_text(ctx)} lies within "
                             f"[threshold_min, threshold_max] = [{self.params.threshold_min}, "
                             f"{self.params.threshold_max}] in any slice")
        if empty.size:
            ctx.warn(f"{empty.size} slice(s) have no pixel of the area within the thresholds "
                     f"(factor 1): {empty[:20].tolist()}{' ...' if empty.size > 20 else ''}")
        _, factors = core.factors_from_means(means, self.params.factors_range)
        save_array(ctx.outputs_dir / "means.npy", means)
        save_array(ctx.outputs_dir / "factors.npy", factors)
        return factors

    def apply(self, image: np.ndarray, index: int, state: np.ndarray) -> np.ndarray:
        return state[index] * image

    def _area_text(self, ctx: StepContext) -> str:
        (imin, imax, jmin, jmax), _ = crop_indices(self.params.area, ctx.meta.shape)
        return f"{list(self.params.area) if self.params.area else None} (rows {imin}:{imax}, columns {jmin}:{jmax})"

    def finish(self, ctx: StepContext, state: np.ndarray, stats: np.ndarray) -> None:
        from ._intensity_plots import plot_area_factors, plot_area_means

        out = ctx.outputs_dir
        means = np.load(out / "means.npy")
        ref, _ = core.factors_from_means(means, self.params.factors_range)
        lo, hi = self.params.factors_range
        with np.errstate(divide="ignore", invalid="ignore"):
            wanted = ref / means  # before clipping
        low, high = wanted < lo, wanted > hi
        plot_area_means(means, ref, out / "means.png")
        plot_area_factors(state, (lo, hi), low | high, out / "factors.png")
        n = ctx.meta.n
        rows, cols = ctx.meta.shape
        write_text(out / "log.txt", (
            f"Shape (slices, rows, columns): ({n}, {rows}, {cols})\n"
            f"Area [xmin, xmax, ymin, ymax] (bottom-left origin): {self._area_text(ctx)}\n"
            f"Thresholds [min, max] (gray level): [{self.params.threshold_min}, {self.params.threshold_max}]\n"
            f"Reference mean (median of the slice means): {ref:.6g}\n"
            f"Factors range: [{lo:g}, {hi:g}]; factors min / max: {np.min(state):.6g} / {np.max(state):.6g}\n"
            f"Slices clipped at min / max: {int(low.sum())} / {int(high.sum())}\n"
            f"Slices without a valid pixel (factor 1): {int(np.sum(~np.isfinite(means)))}\n"
        ))


STEPS: list[type[Step]] = [IntensityRescaling, IntensityRescalingArea]
"""The steps this module provides (collected by :mod:`stack3d_steps.plugin`)."""
