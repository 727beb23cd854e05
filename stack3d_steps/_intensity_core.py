"""Numerical core of ``intensity_rescaling`` (histogram matching) and
``intensity_rescaling_area`` (ROI-mean factors): pure numpy (scipy only for the running mean).

Gray levels are in the stack's own units (0..255 for uint8, 0..65535 for uint16...). A
histogram has ``nbins`` equal bins over a global range ``[vmin, vmax]``; bin ``b`` covers
``[vmin + b w, vmin + (b + 1) w)`` with ``w = (vmax - vmin) / nbins`` (the last bin also
holds ``vmax``) and its centre is ``vmin + (b + 1/2) w``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "bin_centres", "bin_index", "final_histograms", "global_range", "luts_from_histograms",
    "reference_histograms", "roi_mean", "slice_histogram", "factors_from_means",
]


def global_range(minmax: Sequence[tuple[float, float]]) -> tuple[float, float, bool]:
    """``(vmin, vmax, widened)``: the stack's gray range from per-slice ``(min, max)``.

    NaN entries (all-NaN float slices) are ignored. A constant stack (``vmin == vmax``)
    gets ``[v - 0.5, v + 0.5]``, as ``numpy.histogram`` does, so bins keep a width.
    """
    arr = np.asarray(minmax, dtype=np.float64).reshape(-1, 2)
    if arr.size == 0 or np.all(np.isnan(arr)):
        raise ValueError("no finite gray value in the stack")
    vmin, vmax = float(np.nanmin(arr)), float(np.nanmax(arr))
    if vmax > vmin:
        return vmin, vmax, False
    return vmin - 0.5, vmax + 0.5, True


def bin_index(image: np.ndarray, vmin: float, vmax: float, nbins: int) -> np.ndarray:
    """Bin of every pixel: ``clip(floor(nbins (img - vmin) / (vmax - vmin)), 0, nbins - 1)``.

    PyStack3D 2026's formula, evaluated in float64 in the same order, so both programs put
    every pixel in the same bin. NaN pixels get bin 0 (callers mask them).
    """
    lo, hi = np.float64(vmin), np.float64(vmax)  # float64 even for float32 images
    scaled = np.floor((image - lo) / (hi - lo) * nbins)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=nbins - 1, neginf=0.0)
    return np.clip(scaled, 0, nbins - 1).astype(np.intp)


def slice_histogram(image: np.ndarray, vmin: float, vmax: float, nbins: int) -> np.ndarray:
    """Counts per bin (int64, ``nbins``) with exactly the bins :func:`bin_index` gives, so the
    histogram describes the pixels the LUT will map. NaN pixels are not counted."""
    idx = bin_index(image, vmin, vmax, nbins)
    if image.dtype.kind == "f":
        idx = idx[np.isfinite(image)]
    return np.bincount(idx.ravel(), minlength=nbins).astype(np.int64)


def bin_centres(vmin: float, vmax: float, nbins: int) -> np.ndarray:
    """Bin centres (float64, ``nbins``), computed as ``numpy.histogram``'s edges are."""
    edges = np.linspace(vmin, vmax, nbins + 1)
    return (edges[1:] + edges[:-1]) / 2.0


def reference_histograms(hist: np.ndarray, filter_size: int) -> np.ndarray:
    """Target histogram of every slice (float64, same shape as ``hist``).

    ``filter_size == -1``: the mean histogram of the stack, for every slice.
    ``filter_size = k``: running mean of the histograms over ``k`` slices along z
    (``scipy.ndimage.uniform_filter1d``, mode ``reflect``) computed in float64; PyStack3D
    filters the integer array and so truncates every count.
    """
    hist = np.asarray(hist)
    if filter_size == -1:
        return np.repeat(np.mean(hist, axis=0)[None, :], hist.shape[0], axis=0)
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(hist.astype(np.float64), int(filter_size), axis=0, mode="reflect")


def luts_from_histograms(hist: np.ndarray, ref: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Histogram-matching look-up tables, one row per slice (float64, ``(n, nbins)``).

    For slice ``k``: ``cdf_t = cumsum(ref_k) / sum(ref_k)``; ``cdf_i`` = the same on
    ``hist_k`` with zero counts replaced by 1 (so it increases strictly);
    ``lut_k = interp(cdf_i, cdf_t, centres)``: each input bin goes to the gray level where
    the target's cumulative distribution reaches the slice's.
    """
    hist = np.asarray(hist)
    ref = np.asarray(ref, dtype=np.float64)
    luts = np.empty(hist.shape, dtype=np.float64)
    for k in range(hist.shape[0]):
        cdf_t = np.cumsum(ref[k])
        top = cdf_t.max()
        if not top > 0:  # empty reference (a stack of empty slices): identity
            luts[k] = centres
            continue
        cdf_t = cdf_t / top
        counts = hist[k].copy()
        counts[counts == 0] = 1
        cdf_i = counts.cumsum().astype(np.float64)
        cdf_i /= cdf_i.max()
        luts[k] = np.interp(cdf_i, cdf_t, centres)
    return luts


def final_histograms(hist: np.ndarray, luts: np.ndarray, vmin: float, vmax: float,
                     dtype: np.dtype | str) -> np.ndarray:
    """Histograms of the written output slices (int64, ``(n, nbins)``), without reading them.

    Every pixel of input bin ``b`` of slice ``k`` becomes ``luts[k, b]``, cast as the engine
    casts (rounded and clipped for integer dtypes), so the output histogram is the input
    histogram moved bin by bin: ``numpy.histogram(cast(luts[k]), weights=hist[k])`` on the
    same ``nbins`` bins over ``[vmin, vmax]``.
    """
    dtype = np.dtype(dtype)
    values = np.asarray(luts, dtype=np.float64)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    elif dtype.kind == "f":
        values = values.astype(dtype)
    nbins = values.shape[1]
    out = np.empty(values.shape, dtype=np.int64)
    for k in range(values.shape[0]):
        counts, _ = np.histogram(values[k], bins=nbins, range=(vmin, vmax), weights=hist[k])
        out[k] = np.rint(counts).astype(np.int64)
    return out


def roi_mean(roi: np.ndarray, threshold_min: float | None, threshold_max: float | None) -> float:
    """Mean gray level of the ROI pixels with ``threshold_min <= value <= threshold_max``
    (absolute gray levels, bounds included; ``None``: no bound). NaN when none qualifies."""
    mask = np.ones(roi.shape, dtype=bool)
    if threshold_min is not None:
        mask &= roi >= threshold_min
    if threshold_max is not None:
        mask &= roi <= threshold_max
    if roi.dtype.kind == "f":
        mask &= np.isfinite(roi)
    if not mask.any():
        return float("nan")
    return float(roi[mask].mean(dtype=np.float64))


def factors_from_means(means: np.ndarray, factors_range: tuple[float, float]) -> tuple[float, np.ndarray]:
    """``(ref, factors)``: ``ref = median`` of the finite means, ``f_k = clip(ref / mean_k,
    factors_range)``. A slice without a valid mean (NaN) or with ``0 / 0`` gets 1.

    :raises ValueError: no slice has a valid mean.
    """
    means = np.asarray(means, dtype=np.float64)
    valid = np.isfinite(means)
    if not valid.any():
        raise ValueError("no pixel of any slice lies in the area within [threshold_min, threshold_max]")
    ref = float(np.median(means[valid]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ref / means
    ratio[np.isnan(ratio)] = 1.0  # NaN: no pixel, or 0 / 0
    return ref, np.clip(ratio, factors_range[0], factors_range[1])
