"""Per-slice and pairwise evaluation shared by the ``quality`` step and the observer.

A *table* has one row per slice: ``index, name, z`` then the per-slice metrics of that
slice and the pairwise metrics of the pair ``(index − 1, index)`` (NaN in row 0 and for
slices not evaluated). Column names carry their unit where they have one (``_px``, or the
stack's length unit for physical FRC resolutions).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from . import metrics as m

__all__ = ["MetricsTable", "add_physical", "crop", "evaluate_stack", "frc_axes", "pair_columns", "pair_metrics",
           "physical_unit", "sample_pairs", "save_curves", "slice_columns", "slice_metrics"]

SLICE_COLUMNS = {
    "base": ("mean", "std"),
    "snr": ("snr_x", "snr_y", "snr_r"),
    "noise": ("dark_offset", "gain", "noise_sigma", "snr0", "psnr"),
}
"""Per-slice columns by metric name (``base`` always): gray levels (DN) except the SNRs
(dimensionless) and ``gain`` (DN per quantum)."""


def crop(image: np.ndarray, area: tuple[int, int, int, int] | None) -> np.ndarray:
    """The ``area`` ROI (``[xmin, xmax, ymin, ymax]``, bottom-left origin, as ``cropping``)."""
    from stack3d_steps.cropping import crop_indices

    (imin, imax, jmin, jmax), _ = crop_indices(area, image.shape)
    return image[imin:imax, jmin:jmax]


def slice_columns(params: Any) -> list[str]:
    cols = list(SLICE_COLUMNS["base"])
    for name in ("snr", "noise"):
        if name in params.metrics:
            cols += SLICE_COLUMNS[name]
    return cols


def pair_columns(params: Any, unit: str | None = None) -> list[str]:
    """Pairwise columns; with ``unit`` the FRC resolutions also in that length unit."""
    cols: list[str] = []
    if "nsad" in params.metrics:
        cols.append("nsad")
    if "ncc" in params.metrics:
        cols += ["ncc", "snr_ncc"]
    if "nmi" in params.metrics:
        cols.append("nmi")
    if "frc" in params.metrics:
        for spec in params.frc_thresholds:
            cols.append(f"frc_{m.threshold_key(spec)}_px")
            if unit:
                cols.append(f"frc_{m.threshold_key(spec)}_{unit}")
    return cols


def physical_unit(meta: Any) -> tuple[float, str] | None:
    """``(pixel size, column-safe unit)`` from a :class:`StackMeta`, or None when unknown.

    The x (column) size is used; FRC rings are isotropic in pixels."""
    if meta is None or meta.pixel_size is None or not meta.pixel_size[0] > 0:
        return None
    unit = re.sub(r"[^A-Za-z0-9]", "", str(meta.unit).replace("µ", "u").replace("μ", "u")) or "unit"
    return float(meta.pixel_size[0]), unit


def slice_metrics(image: np.ndarray, params: Any) -> dict[str, float]:
    """Per-slice metrics of one (already cropped) image."""
    img = np.asarray(image, dtype=np.float64)
    out = {"mean": float(img.mean()), "std": float(img.std())}
    if "snr" in params.metrics:
        r = m.single_image_snr(img, extrapolation=params.snr_extrapolation)
        out.update(snr_x=r.x, snr_y=r.y, snr_r=r.r)
    if "noise" in params.metrics:
        ns = m.noise_statistics(img, edge_fraction=params.noise_edge_fraction)
        out.update(dark_offset=ns.dark_offset, gain=ns.gain, noise_sigma=ns.noise_sigma,
                   snr0=ns.snr0, psnr=ns.psnr)
    return out


def pair_metrics(previous: np.ndarray, current: np.ndarray, params: Any) -> tuple[dict[str, float], np.ndarray | None]:
    """Pairwise metrics of two (already cropped) images and the FRC curve (float32) or None."""
    a = np.asarray(previous, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    out: dict[str, float] = {}
    curve = None
    if "nsad" in params.metrics:
        out["nsad"] = m.nsad(a, b)
    if "ncc" in params.metrics:
        value = m.ncc(a, b)
        out.update(ncc=value, snr_ncc=m.snr_from_ncc(value))
    if "nmi" in params.metrics:
        out["nmi"] = m.nmi(a, b, bins=params.nmi_bins)
    if "frc" in params.metrics:
        result = m.frc(a, b, bins=params.frc_bins, window=params.frc_window)
        res = m.frc_resolution(result, params.frc_thresholds, smooth=params.frc_smooth)
        for spec, value in res.items():
            out[f"frc_{m.threshold_key(spec)}_px"] = value
        curve = result.frc.astype(np.float32)
    return out, curve


def add_physical(values: dict[str, float], params: Any, physical: tuple[float, str] | None) -> None:
    """Add ``frc_<threshold>_<unit>`` = resolution in pixels × pixel size."""
    if physical is None:
        return
    size, unit = physical
    for spec in params.frc_thresholds:
        key = f"frc_{m.threshold_key(spec)}_px"
        if key in values:
            values[f"frc_{m.threshold_key(spec)}_{unit}"] = values[key] * size


def frc_axes(shape: tuple[int, int], bins: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Ring frequencies (cycles/px) and coefficient counts of :func:`frc` for images of ``shape``."""
    return m.frc_rings(min(shape), bins)


@attrs.define
class MetricsTable:
    """Rows of metrics by slice index, written as CSV.

    :param columns: metric columns, in order (after ``index, name, z``).
    :param rows: ``{slice index: {column: value}}``; missing values are written as ``nan``.
    :param names: slice names by index; ``z``: z positions (stack unit) or None.
    """

    columns: list[str]
    names: Sequence[str]
    z: Sequence[float] | None
    rows: dict[int, dict[str, float]] = attrs.field(factory=dict)

    def put(self, index: int, values: Mapping[str, float]) -> None:
        self.rows.setdefault(index, {}).update(values)

    def column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, values)`` of the rows that have a finite value in ``name``."""
        idx = np.array(sorted(self.rows), dtype=int)
        vals = np.array([self.rows[i].get(name, math.nan) for i in idx], dtype=float)
        ok = np.isfinite(vals)
        return idx[ok], vals[ok]

    def zaxis(self, indices: np.ndarray) -> np.ndarray:
        if self.z is None:
            return indices.astype(float)
        return np.array([self.z[i] for i in indices], dtype=float)

    def to_csv(self, lead: Sequence[tuple[str, str]] = ()) -> str:
        """CSV text: ``lead`` columns (constant ``(name, value)`` pairs), ``index, name, z``,
        then :attr:`columns`; one row per evaluated slice, in index order."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([k for k, _ in lead] + ["index", "name", "z", *self.columns])
        for i in sorted(self.rows):
            z = self.z[i] if self.z is not None else math.nan
            values = [_fmt(self.rows[i].get(c, math.nan)) for c in self.columns]
            writer.writerow([v for _, v in lead] + [i, self.names[i], _fmt(z), *values])
        return buffer.getvalue()


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.8g}"


def sample_pairs(n: int, max_slices: int) -> list[int]:
    """Later indices ``i`` of the pairs ``(i − 1, i)`` to evaluate so that at most
    ``max_slices`` slices are read: all pairs when ``n ≤ max_slices``, else
    ``max_slices // 2`` pairs evenly spaced."""
    if n < 2:
        return []
    if n <= max_slices:
        return list(range(1, n))
    count = max(1, max_slices // 2)
    return sorted({int(round(v)) for v in np.linspace(1, n - 1, count)})


def evaluate_stack(read: Callable[[int], np.ndarray], n: int, names: Sequence[str], z: Sequence[float] | None,
                   params: Any, physical: tuple[float, str] | None,
                   pairs: Iterable[int] | None = None) -> tuple[MetricsTable, dict[int, np.ndarray]]:
    """Evaluate slices in-process (the observer, and one-slice stacks).

    :param read: ``index -> 2D image`` (the ROI is cropped here).
    :param pairs: later indices of the pairs to evaluate (default: all); their slices get
        per-slice metrics. With ``n == 1`` slice 0 gets per-slice metrics only.
    :returns: the table and the FRC curves by later pair index.
    """
    table = MetricsTable(slice_columns(params) + pair_columns(params, physical[1] if physical else None),
                         names, z)
    curves: dict[int, np.ndarray] = {}
    cache: dict[int, np.ndarray] = {}

    def get(i: int) -> np.ndarray:
        if i not in cache:
            if len(cache) > 2:
                cache.pop(min(cache))
            cache[i] = crop(np.asarray(read(i)), params.area)
            table.put(i, slice_metrics(cache[i], params))
        return cache[i]

    todo = list(range(1, n)) if pairs is None else list(pairs)
    if n == 1:
        get(0)
    for i in todo:
        values, curve = pair_metrics(get(i - 1), get(i), params)
        add_physical(values, params, physical)
        table.put(i, values)
        if curve is not None:
            curves[i] = curve
    return table, curves


def save_curves(path: Path, freq: np.ndarray, n_pixels: np.ndarray, curves: Mapping[int, np.ndarray]) -> None:
    """``frc_curves.npz``: ``freq`` (cycles/px), ``n_pixels``, ``pairs`` (k, 2) and ``frc`` (k, bins)."""
    keys = sorted(curves)
    pairs = np.array([[i - 1, i] for i in keys], dtype=np.int64).reshape(-1, 2)
    data = np.stack([curves[i] for i in keys]) if keys else np.empty((0, len(freq)), np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, freq=freq, n_pixels=n_pixels, pairs=pairs, frc=data)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
