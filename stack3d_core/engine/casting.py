"""Casting step results back to the stack's dtype, and per-slice statistics.

PyStack3D truncates (``astype`` after ``clip``) and lets NaN fall through to a
platform-dependent integer. stack3d rounds to the nearest integer, clips to the dtype's
range, and replaces NaN explicitly (by 0, the value PyStack3D gets on x86) before the
cast, counting how many pixels that concerned.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cast_to_dtype", "slice_stats"]


def cast_to_dtype(image: np.ndarray, dtype: np.dtype | str) -> tuple[np.ndarray, int]:
    """Round, clip and cast ``image`` to ``dtype``.

    :returns: the cast image and the number of NaN pixels that were set to 0 (always 0 for
        float dtypes, whose NaNs are kept).
    """
    dtype = np.dtype(dtype)
    if image.dtype == dtype:
        return image, 0
    if dtype.kind == "f":
        return image.astype(dtype), 0
    if dtype.kind == "b":
        return image.astype(bool), 0
    work = np.asarray(image)
    if work.dtype.kind != "f":  # integer input of another type: exact in float64
        work = work.astype(np.float64)
    nan_mask = np.isnan(work)
    n_nan = int(nan_mask.sum())
    if n_nan:
        work = np.where(nan_mask, 0.0, work)
    info = np.iinfo(dtype)
    out = np.clip(np.rint(work), info.min, info.max).astype(dtype)
    return out, n_nan


def slice_stats(image: np.ndarray) -> np.ndarray:
    """``[min, max, mean]`` of a slice as float64, ignoring NaN and infinities (all NaN if
    no value is finite)."""
    data = np.asarray(image)
    if data.size == 0:
        return np.full(3, np.nan)
    lo, hi = data.min(), data.max()
    if data.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):  # rare: mask the non-finite
        finite = data[np.isfinite(data)]
        if finite.size == 0:
            return np.full(3, np.nan)
        lo, hi, data = finite.min(), finite.max(), finite
    return np.array([lo, hi, data.mean(dtype=np.float64)], dtype=np.float64)
