"""One pair of slices: key points -> matches -> robust model, with its QC numbers.

Runs in the workers; returns a :class:`PairResult` of a few numbers (no pixels, no
point lists): the matrix, counts, residual spread, and the centroids and second moments
of the inliers (enough to re-estimate the translations exactly after the linear parts are
detrended, and to weigh the pair in the global solve, see :mod:`.cumulative`).
"""

from __future__ import annotations

import attrs
import numpy as np

from .features import SiftOptions, features_of, match, single_threaded
from .models import MINIMAL, apply_matrix, robust_fit

__all__ = ["QC_FIELDS", "PairOptions", "PairResult", "register_pair"]


@attrs.frozen
class PairOptions:
    """Matching and fitting options of a pair (see the step's parameters)."""

    matcher: str = "flann"
    lowe_ratio: float = 0.7
    model: str = "regularized_affine"
    reg_lambda: float = 1.0
    solver: str = "ransac"
    residual_threshold: float = 1.5
    max_iter: int = 1000
    min_samples: int = 0
    remove_per_iter: int = 1
    min_inliers: int = 10


QC_FIELDS = ("keypoints_j", "keypoints_i", "matches", "inliers", "residual_mean_px", "residual_rms_px",
             "residual_std_x_px", "residual_std_y_px")
"""Per-pair QC numbers, in :attr:`PairResult.qc` order (residuals: ``dst - M src`` of the
inliers, px)."""


@attrs.frozen(eq=False)
class PairResult:
    """What one pair ``(j, i)`` gave.

    :param matrix: 3x3 ``M`` mapping slice-``j`` coordinates to slice ``i`` (inverse map,
        x = column, y = row), or ``None`` when the pair failed.
    :param qc: the numbers of :data:`QC_FIELDS` (NaN where undefined).
    :param src_centroid: mean ``(x, y)`` of the inliers in slice ``j`` (px), weighted as
        in the final fit.
    :param dst_centroid: its image ``M @ src_centroid`` in slice ``i`` (the weighted
        centroid of the inliers there, as the fit passes through the centroids).
    :param src_moments: weighted ``mean(p p^T)`` of the inliers ``p = (x, y, 1)`` in slice
        ``j`` (3x3, px²): where the pair's information lies.
    :param reason: why the pair failed (``""`` when it did not).
    """

    matrix: np.ndarray | None
    qc: tuple[float, ...]
    src_centroid: np.ndarray | None = None
    dst_centroid: np.ndarray | None = None
    src_moments: np.ndarray | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.matrix is not None

    def get(self, field: str) -> float:
        """One QC number by name."""
        return self.qc[QC_FIELDS.index(field)]


def register_pair(previous: np.ndarray, current: np.ndarray, sift: SiftOptions, opts: PairOptions,
                  seed: int = 0) -> PairResult:
    """Register ``current`` (slice ``i``) against ``previous`` (slice ``j < i``)."""
    nan = float("nan")
    with single_threaded():
        fa = features_of(previous, sift)
        fb = features_of(current, sift)
        src, dst, _ = match(fa, fb, matcher=opts.matcher, ratio=opts.lowe_ratio, seed=seed)
    n_kp = (float(len(fa.xy)), float(len(fb.xy)))
    need = max(opts.min_inliers, opts.min_samples, MINIMAL[opts.model])
    if len(src) < need:
        return PairResult(None, (*n_kp, float(len(src)), 0.0, nan, nan, nan, nan),
                          reason=f"{len(src)} matches after the ratio test (fewer than {need})")
    fit = robust_fit(opts.model, src, dst, solver=opts.solver, threshold=opts.residual_threshold,
                     max_iter=opts.max_iter, min_samples=opts.min_samples, reg_lambda=opts.reg_lambda,
                     remove_per_iter=opts.remove_per_iter, seed=seed)
    inl = fit.inliers
    n_in = int(inl.sum())
    if fit.matrix is None or n_in < need:
        return PairResult(None, (*n_kp, float(len(src)), float(n_in), nan, nan, nan, nan),
                          reason=f"{n_in} inliers of {len(src)} matches (fewer than {need})")
    res = dst[inl] - apply_matrix(fit.matrix, src[inl])
    dist = np.linalg.norm(res, axis=1)
    qc = (*n_kp, float(len(src)), float(n_in), float(dist.mean()), float(np.sqrt((dist**2).mean())),
          float(res[:, 0].std()), float(res[:, 1].std()))
    # weighted centroid and moments of the final fit: the model maps this centroid exactly
    w = fit.weights[inl] / fit.weights[inl].sum() if fit.weights is not None else np.full(n_in, 1.0 / n_in)
    ph = np.column_stack([src[inl], np.ones(n_in)])
    c_src = w @ src[inl]
    c_dst = apply_matrix(fit.matrix, c_src[None])[0]
    return PairResult(fit.matrix, qc, c_src, c_dst, (ph * w[:, None]).T @ ph)
