"""The step ``quality``: per-slice and consecutive-pair metrics; writes no images.

Kind PAIRWISE: ``measure_pair(previous, current, i)`` (in the workers) computes the
pairwise metrics of ``(i − 1, i)`` and the per-slice metrics of slice ``i`` (and of slice
0 with the first pair); ``combine`` (driver) assembles one table per channel; ``finish``
writes into ``outputs/`` (``process/quality/outputs``, shared by the channels):

* ``quality.csv`` (``quality_<channel>.csv`` for named channels): one row per slice,
  ``index, name, z`` then the metrics (see :mod:`stack3d_quality.evaluate`);
* ``frc_curves.npz`` (``frc_curves_<channel>.npz``): every pair's FRC curve;
* ``quality.png`` (metrics along z) and ``frc.png`` (a few pairs' FRC curves).

The same parameters (the ``[quality]`` table) configure the observer: ``follow`` lists
the steps whose output it evaluates (see :mod:`stack3d_quality.observer`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import numpy as np

from stack3d_core import Step, StepContext, StepKind
from stack3d_core.stepkit import write_text
from stack3d_steps.cropping import check_area

from . import metrics as m
from .evaluate import (
    MetricsTable,
    add_physical,
    crop,
    evaluate_stack,
    frc_axes,
    pair_columns,
    pair_metrics,
    physical_unit,
    save_curves,
    slice_columns,
    slice_metrics,
)

__all__ = ["METRICS", "Quality", "QualityParams", "QualityState", "channel_suffix"]

METRICS = ("nsad", "ncc", "nmi", "frc", "snr", "noise")
"""Metric names accepted by ``metrics``: pairwise ``nsad``, ``ncc`` (+ ``snr_ncc``), ``nmi``,
``frc``; per slice ``snr`` (autocorrelation) and ``noise`` (dark offset, gain)."""

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _metrics_ok(_: Any, __: attrs.Attribute, value: tuple[str, ...]) -> None:
    unknown = [v for v in value if v not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose among {list(METRICS)}")


def _thresholds_ok(_: Any, __: attrs.Attribute, value: tuple[str, ...]) -> None:
    for spec in value:
        m.frc_threshold(spec, np.ones(1))  # raises ValueError naming the bad one


def _follow_ok(_: Any, __: attrs.Attribute, value: tuple[str, ...]) -> None:
    bad = [v for v in value if not _NAME_RE.match(v)]
    if bad:
        raise ValueError(f"not step names: {bad}")
    if "quality" in value:
        raise ValueError("the observer does not follow the quality step itself")


def _doc(doc: str, unit: str | None = None) -> dict[str, str]:
    return {"doc": doc, "unit": unit} if unit else {"doc": doc}


_opt_ge2 = attrs.validators.optional(attrs.validators.ge(2))


@attrs.frozen(kw_only=True)
class QualityParams:
    """Parameters of ``quality`` (the ``[quality]`` table), shared with the observer."""

    metrics: tuple[str, ...] = attrs.field(default=METRICS, validator=_metrics_ok, metadata=_doc(
        "metrics to compute: pairwise nsad, ncc (with snr_ncc = ncc/(1-ncc)), nmi, frc; per slice snr "
        "(autocorrelation: snr_x, snr_y, snr_r) and noise (dark_offset, gain, noise_sigma, snr0, psnr); "
        "mean and std are always written"))
    area: tuple[int, int, int, int] | None = attrs.field(default=None, validator=check_area, metadata=_doc(
        "ROI [xmin, xmax, ymin, ymax] evaluated; origin at the bottom-left corner, x = column, y = row "
        "counted upward (as cropping); None: the whole slice", "px"))
    frc_bins: int | None = attrs.field(default=None, validator=_opt_ge2, metadata=_doc(
        "number of FRC rings between 0 and Nyquist; None: one ring per pixel of radius (N // 2 rings "
        "for an N-pixel square)", "rings"))
    frc_thresholds: tuple[str, ...] = attrs.field(default=("1/7", "half_bit"), validator=_thresholds_ok,
                                                  metadata=_doc(
        "FRC thresholds whose crossing gives a resolution: '1/7' (constant 0.1429), 'half_bit' "
        "(van Heel & Schatz 2005) or a number in (0, 1) written as a string, e.g. '0.5'"))
    frc_smooth: int = attrs.field(default=5, validator=attrs.validators.ge(1), metadata=_doc(
        "moving-average window applied to the FRC curve before searching the crossing "
        "(Shtengel uses 20); 1: none", "rings"))
    frc_window: Literal["none", "hann"] = attrs.field(default="none", metadata=_doc(
        "apodisation before the FFT: none (Shtengel) or hann (removes the edge cross of "
        "non-periodic images)"))
    frc_plot_pairs: int = attrs.field(default=4, validator=attrs.validators.ge(0), metadata=_doc(
        "number of pairs (evenly spaced) whose FRC curves are drawn in frc.png", "pairs"))
    nmi_bins: int | None = attrs.field(default=None, validator=_opt_ge2, metadata=_doc(
        "joint-histogram bins per axis for NMI; None: round(sqrt(pixels / 4)) clipped to "
        "[16, 2048]; 2048 reproduces Shtengel", "bins"))
    snr_extrapolation: Literal["parabolic", "linear", "nearest"] = attrs.field(
        default="parabolic", metadata=_doc("how the noise-free autocorrelation peak is extrapolated "
                                           "from lags 1 and 2 (single-image SNR)"))
    noise_edge_fraction: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)], metadata=_doc(
            "fraction of pixels with the largest gradient left out of the noise statistics "
            "(edges leak signal into the residual)", "-"))
    follow: tuple[str, ...] = attrs.field(default=(), validator=_follow_ok, metadata=_doc(
        "observer: steps whose output is evaluated after they run (quality_<step>.csv and .png "
        "in that step's outputs/); the quality step need not be in process_steps"))
    observer_slices: int = attrs.field(default=16, validator=attrs.validators.ge(2), metadata=_doc(
        "observer: most slices read per stack (observer_slices // 2 consecutive pairs, evenly "
        "spaced; all pairs when the stack is that short)", "slices"))
    observer_input: bool = attrs.field(default=True, metadata=_doc(
        "observer: also evaluate the followed step's input at the same positions, for a "
        "before/after comparison"))


def channel_suffix(channel: str) -> str:
    """``""`` for the single-channel project (``"."``), else ``"_<channel>"`` made file-safe."""
    if channel == ".":
        return ""
    return "_" + re.sub(r"[^A-Za-z0-9._-]", "_", channel)


@attrs.define
class QualityState:
    """What ``combine`` hands to ``finish``: the table and the FRC curves by later pair index."""

    table: MetricsTable
    curves: dict[int, np.ndarray]
    shape: tuple[int, int]
    physical: tuple[float, str] | None


class Quality(Step):
    """Registration and image quality metrics per slice and per consecutive pair."""

    name = "quality"
    description = "quality metrics (NSAD, NCC, NMI, FRC, SNR, noise) per slice and consecutive pair; writes no images"
    Params = QualityParams
    kind = StepKind.PAIRWISE
    writes_images = False

    def prepare(self, ctx: StepContext) -> None:
        from stack3d_steps.cropping import crop_indices

        try:
            (imin, imax, jmin, jmax), warnings = crop_indices(self.params.area, ctx.meta.shape)
        except ValueError as exc:
            raise ValueError(f"quality.area: {exc}") from None
        for message in warnings:
            ctx.warn(f"quality.area: {message}")
        side = min(imax - imin, jmax - jmin)
        if side < 9:
            raise ValueError(f"quality.area: the ROI ({imax - imin} x {jmax - jmin} px) is too small; "
                             "the metrics need at least 9 x 9 pixels")
        if "frc" in self.params.metrics and self.params.frc_bins is not None and self.params.frc_bins > side // 2:
            raise ValueError(f"quality.frc_bins: {self.params.frc_bins} rings exceed {side // 2}, "
                             f"half the side of the {side}-pixel FRC square")

    def measure_pair(self, previous: np.ndarray, current: np.ndarray, index: int) -> dict[str, Any]:
        a, b = crop(previous, self.params.area), crop(current, self.params.area)
        pair, curve = pair_metrics(a, b, self.params)
        out: dict[str, Any] = {"pair": pair, "current": slice_metrics(b, self.params), "frc": curve}
        if index == 1:
            out["previous"] = slice_metrics(a, self.params)
        return out

    def combine(self, ctx: StepContext, measures: Sequence[Any]) -> QualityState:
        from stack3d_steps.cropping import crop_indices

        physical = physical_unit(ctx.meta)
        unit = physical[1] if physical else None
        n = ctx.meta.n
        (imin, imax, jmin, jmax), _ = crop_indices(self.params.area, ctx.meta.shape)
        roi = (imax - imin, jmax - jmin)
        if n == 1:
            if ctx.reader is None:
                table = MetricsTable(slice_columns(self.params) + pair_columns(self.params, unit), ctx.names,
                                     ctx.meta.z_positions)
                ctx.warn("a single slice and no reader: no metric computed")
                return QualityState(table, {}, roi, physical)
            table, curves = evaluate_stack(lambda i: ctx.reader.read(ctx.channel, i), 1, ctx.names,
                                           ctx.meta.z_positions, self.params, physical)
            return QualityState(table, curves, roi, physical)
        table = MetricsTable(slice_columns(self.params) + pair_columns(self.params, unit), ctx.names,
                             ctx.meta.z_positions)
        curves: dict[int, np.ndarray] = {}
        for i, measure in enumerate(measures, start=1):
            if "previous" in measure:
                table.put(i - 1, measure["previous"])
            table.put(i, measure["current"])
            pair = dict(measure["pair"])
            add_physical(pair, self.params, physical)
            table.put(i, pair)
            if measure["frc"] is not None:
                curves[i] = measure["frc"]
        return QualityState(table, curves, roi, physical)

    def finish(self, ctx: StepContext, state: QualityState, stats: np.ndarray) -> None:
        suffix = channel_suffix(ctx.channel)
        write_text(ctx.outputs_dir / f"quality{suffix}.csv", state.table.to_csv())
        label = "quality" if ctx.channel == "." else f"quality [{ctx.channel}]"
        if state.curves:
            freq, n_pixels = frc_axes(state.shape, self.params.frc_bins)
            save_curves(ctx.outputs_dir / f"frc_curves{suffix}.npz", freq, n_pixels, state.curves)
        try:
            from .plots import plot_frc, plot_metrics

            plot_metrics([("", state.table)], ctx.outputs_dir / f"quality{suffix}.png", f"{label}: metrics along z",
                         ctx.meta.unit)
            if state.curves and self.params.frc_plot_pairs > 0:
                keys = sorted(state.curves)
                picks = sorted({keys[int(round(k))] for k in np.linspace(0, len(keys) - 1,
                                                                          min(len(keys), self.params.frc_plot_pairs))})
                shown = {f"slices {i - 1}-{i}": state.curves[i] for i in picks}
                plot_frc(freq, n_pixels, shown, self.params.frc_thresholds, ctx.outputs_dir / f"frc{suffix}.png",
                         f"{label}: Fourier ring correlation", state.physical)
        except Exception as exc:  # noqa: BLE001 - figures are secondary to the CSV
            ctx.warn(f"could not draw the figures: {type(exc).__name__}: {exc}")
        summary = _summary(state.table)
        if summary:
            ctx.log.info("quality [%s]: %s", ctx.channel, summary)


def _summary(table: MetricsTable) -> str:
    parts = []
    for col in ("ncc", "nmi", "snr_y", "frc_1_7_px"):
        _, vals = table.column(col)
        if vals.size:
            parts.append(f"median {col} = {float(np.median(vals)):.4g}")
    return ", ".join(parts) if parts else ""


STEPS: list[type[Step]] = [Quality]
