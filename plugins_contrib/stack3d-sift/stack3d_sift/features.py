"""Worker side: the 8-bit view of a slice, SIFT key points, matching (OpenCV).

``cv2`` is imported inside the functions (the package imports without it). Each call that
uses OpenCV pins it to one thread (:func:`single_threaded`): the engine already runs one
task per worker process, so OpenCV's own thread pool would only oversubscribe the cores.

Key-point coordinates are OpenCV's ``(x, y)`` = (column, row), pixel centres at integer
coordinates, origin at the centre of the top-left pixel: the registration convention.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np

__all__ = ["Features", "SiftOptions", "detect", "eight_bit_view", "features_of", "match", "single_threaded"]


@attrs.frozen
class SiftOptions:
    """What defines the key points of a slice (the cache key): CDF thresholds of the 8-bit
    view and ``cv2.SIFT_create``'s arguments."""

    cdf_low: float = 0.01
    cdf_high: float = 0.99
    n_features: int = 0
    n_octave_layers: int = 3
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    sigma: float = 1.6


@attrs.frozen(eq=False)
class Features:
    """Key points of one slice: ``xy`` ``(N, 2)`` float64 (x = column, y = row, px), their
    ``size`` ``(N,)`` (diameter of the meaningful neighbourhood, px) and SIFT descriptors
    ``(N, 128)`` float32."""

    xy: np.ndarray
    descriptors: np.ndarray
    size: np.ndarray


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """``cv2.setNumThreads(1)`` for the duration of a task, restored afterwards (the
    serial executor runs tasks in the caller's own process)."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _cdf_bounds(image: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Gray levels where the slice's cumulative histogram reaches ``low`` and ``high``
    (exact: integer slices of <= 16 bits by counting values, others with ``np.quantile``;
    non-finite pixels ignored)."""
    a = np.asarray(image)
    if a.dtype.kind in "ui" and a.dtype.itemsize <= 2:
        base = int(np.iinfo(a.dtype).min)
        counts = np.bincount((a.astype(np.int64) - base).ravel())
        cdf = np.cumsum(counts) / a.size
        lo = int(np.searchsorted(cdf, low, side="left")) + base
        hi = int(np.searchsorted(cdf, high, side="left")) + base
        return float(lo), float(hi)
    values = a[np.isfinite(a)] if a.dtype.kind == "f" else a.ravel()
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.quantile(values, [low, high])
    return float(lo), float(hi)


def eight_bit_view(image: np.ndarray, low: float = 0.01, high: float = 0.99) -> np.ndarray:
    """uint8 view of a slice for feature detection only (the data are never converted):
    ``rint(255 * (clip(I, d_low, d_high) - d_low) / (d_high - d_low))`` with ``d_low``,
    ``d_high`` the gray levels at the ``low`` and ``high`` points of the slice's own
    cumulative histogram (Shtengel's CDF thresholds, per slice). NaN -> 0."""
    d_low, d_high = _cdf_bounds(image, low, high)
    span = d_high - d_low if d_high > d_low else 1.0
    a = (np.asarray(image, dtype=np.float32) - np.float32(d_low)) * np.float32(255.0 / span)
    np.clip(a, 0, 255, out=a)
    a = np.nan_to_num(a, nan=0.0)
    return np.rint(a).astype(np.uint8)


def detect(image: np.ndarray, options: SiftOptions) -> Features:
    """SIFT key points and descriptors of a slice (on its 8-bit view)."""
    import cv2

    view = eight_bit_view(image, options.cdf_low, options.cdf_high)
    sift = cv2.SIFT_create(nfeatures=options.n_features, nOctaveLayers=options.n_octave_layers,
                           contrastThreshold=options.contrast_threshold, edgeThreshold=options.edge_threshold,
                           sigma=options.sigma)
    keypoints, descriptors = sift.detectAndCompute(view, None)
    if descriptors is None or not keypoints:
        return Features(np.zeros((0, 2)), np.zeros((0, 128), np.float32), np.zeros(0))
    xy = np.array([kp.pt for kp in keypoints], dtype=np.float64)
    size = np.array([kp.size for kp in keypoints], dtype=np.float64)
    return Features(xy, np.ascontiguousarray(descriptors, dtype=np.float32), size)


# Key points of the last few slices seen by this process, keyed by the slice's content
# (BLAKE2 digest, shape, dtype) and the options: a slice used by several pairs (offsets
# 1, 2, ...) is detected once per worker, even across tasks. Only features are kept.
_CACHE: OrderedDict[tuple[Any, ...], Features] = OrderedDict()
_CACHE_SIZE = 8


def _content_key(image: np.ndarray, options: SiftOptions) -> tuple[Any, ...]:
    import hashlib

    a = np.ascontiguousarray(image)
    return (hashlib.blake2b(a.data, digest_size=16).digest(), a.shape, a.dtype.str, options)


def features_of(image: np.ndarray, options: SiftOptions) -> Features:
    """:func:`detect`, cached per process for the last few slices (so each slice's key
    points are computed about once, however many pairs use it)."""
    key = _content_key(image, options)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    feats = detect(image, options)
    _CACHE[key] = feats
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return feats


def clear_cache() -> None:
    """Forget the cached key points (tests)."""
    _CACHE.clear()


def match(src: Features, dst: Features, *, matcher: str = "flann", ratio: float = 0.7,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matched point pairs ``(src_xy (M, 2), dst_xy (M, 2), size (M,))`` of two slices
    (``size``: the root mean square of the two key points' sizes, px).

    Each ``src`` descriptor's two nearest ``dst`` descriptors (``knnMatch(k=2)``, L2) by
    ``"bf"`` (brute force, exact) or ``"flann"`` (KD-tree forest: ``trees = 5``,
    ``checks = 50``, Shtengel's defaults; its random trees are seeded with
    ``cv2.setRNGSeed(seed)``, so the result is reproducible); Lowe's ratio test keeps a
    match when ``d1 < ratio * d2``.
    """
    import cv2

    if len(src.xy) < 2 or len(dst.xy) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    if matcher == "bf":
        engine: Any = cv2.BFMatcher(cv2.NORM_L2)
    elif matcher == "flann":
        cv2.setRNGSeed(int(seed))
        engine = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 5}, {"checks": 50})
    else:
        raise ValueError(f"unknown matcher {matcher!r} ('flann' or 'bf')")
    pairs = engine.knnMatch(src.descriptors, dst.descriptors, k=2)
    q, t = [], []
    for candidates in pairs:
        if len(candidates) == 2 and candidates[0].distance < ratio * candidates[1].distance:
            q.append(candidates[0].queryIdx)
            t.append(candidates[0].trainIdx)
    qi, ti = np.array(q, dtype=np.int64), np.array(t, dtype=np.int64)
    size = np.sqrt(0.5 * (src.size[qi] ** 2 + dst.size[ti] ** 2))
    return src.xy[qi], dst.xy[ti], size
