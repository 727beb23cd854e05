"""Transformation models and robust fits of matched key points (numpy only).

**Convention.** Points are ``(x, y)`` = (column, row) in pixels, origin at the centre of
the top-left pixel. A fit of ``src`` (points in slice ``j``) to ``dst`` (the same material
in slice ``i``) returns the 3x3 matrix ``M`` with ``dst ~ M @ (x, y, 1)``: the inverse map
that warps slice ``i`` onto slice ``j`` (stack3d's / pystackreg's convention, and
Shtengel's ``src -> dst`` matrices).

**Models** (:data:`MINIMAL` gives the minimal sample of each):

* ``shift``: ``t = mean(dst - src)``;
* ``xscale_shift``: ``x' = sx x + tx``, ``y' = y + ty`` (least-squares ``sx`` from the
  x coordinates; the y scale is fixed at 1, as Shtengel's ``XScaleShiftTransform``);
* ``scale_shift``: independent least-squares ``sx`` and ``sy``, no rotation or shear;
* ``affine``: 6-parameter least squares;
* ``regularized_affine``: affine with a Tikhonov penalty pulling the linear part toward the
  identity (a pure shift), see :func:`fit_model`.

Every model fitted by least squares passes through the centroids (``M @ mean(src) =
mean(dst)``): the translations are never penalised. The cumulative step relies on it.

**Robust fits** (:func:`robust_fit`): RANSAC (MSAC scoring, samples of at least the
model's minimal set, adaptive trial count, seeded) or iterative least squares dropping the
worst matches (Shtengel's ``LinReg``).
"""

from __future__ import annotations

import math

import attrs
import numpy as np

__all__ = ["MINIMAL", "MODELS", "FitResult", "apply_matrix", "fit_model", "robust_fit"]

IRLS_ROUNDS = 5
CAUCHY_C = 2.385
"""Cauchy weight ``1 / (1 + (r / (c sigma))^2)`` of the final fit (95 % efficiency at the
Gaussian)."""

MODELS = ("shift", "xscale_shift", "scale_shift", "affine", "regularized_affine")
MINIMAL = {"shift": 1, "xscale_shift": 2, "scale_shift": 2, "affine": 3, "regularized_affine": 3}
"""Smallest number of point pairs that determines each model (RANSAC never samples fewer)."""


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points mapped by the 3x3 affine ``matrix``."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _from_linear(lin: np.ndarray, src_mean: np.ndarray, dst_mean: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = dst_mean - lin @ src_mean
    return out


def fit_model(model: str, src: np.ndarray, dst: np.ndarray, reg_lambda: float = 1.0,
              weights: np.ndarray | None = None) -> np.ndarray | None:
    """Least-squares ``model`` of ``dst ~ M src`` (``(N, 2)`` arrays); ``None`` when the
    points do not determine it (fewer than the minimal set, all on one line, ...).

    ``weights`` (``(N,)``, default 1) weigh each pair's squared residual; they are
    normalised to a mean of 1, so ``reg_lambda`` still counts in points. Centroids are
    weighted means.

    ``regularized_affine``: both point sets are centred on their own centroid and scaled by
    the same factor ``k`` (mean distance of the source points to their centroid = sqrt(2),
    Hartley's normalisation), then the linear part ``A`` minimises::

        sum_i |A s_i - d_i|^2 + reg_lambda * ||A - I||_F^2      (normalised points)

    i.e. ``A = (D^T S + lambda I)(S^T S + lambda I)^-1``; ``A`` is also the linear part in
    pixels (the common scale cancels) and the shift follows from the centroids. ``lambda``
    counts in points: each normalised point contributes about 1 per coordinate to
    ``S^T S``, so ``lambda = 1`` weighs the prior "pure shift" like one extra point; with
    hundreds of matches the bias is negligible (relative pull ``lambda / N``), with a
    handful it keeps the scale/shear from running away. Shtengel's
    ``RegularizedAffineTransform`` solves ``(A^T A / n^2 + G)`` with ``G = 1e-5``, which is
    ``lambda = 1e-5 n^2`` here (1 at n = 316 matches): a pull that grows with the number
    of points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = len(src)
    if n < MINIMAL[model]:
        return None
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64) * (n / float(np.sum(weights)))
    sm, dm = w @ src / n, w @ dst / n
    if model == "shift":
        return _from_linear(np.eye(2), sm, dm)
    s, d = src - sm, dst - dm
    sw = s * w[:, None]
    if model in ("xscale_shift", "scale_shift"):
        lin = np.eye(2)
        axes = (0,) if model == "xscale_shift" else (0, 1)
        for a in axes:
            var = float(sw[:, a] @ s[:, a])
            if var <= 1e-12 * max(1.0, float(np.abs(src[:, a]).max()) ** 2):
                return None
            lin[a, a] = float(sw[:, a] @ d[:, a]) / var
        return _from_linear(lin, sm, dm)
    if model == "affine":
        sts = sw.T @ s
        if np.linalg.cond(sts) > 1e10:
            return None
        lin = np.linalg.solve(sts, sw.T @ d).T
        return _from_linear(lin, sm, dm)
    if model == "regularized_affine":
        mean_dist = float(w @ np.sqrt((s**2).sum(axis=1)) / n)
        if mean_dist <= 0:
            return None
        k = math.sqrt(2.0) / mean_dist
        lam = float(reg_lambda) * np.eye(2)
        lhs = k * k * (sw.T @ s) + lam
        if np.linalg.cond(lhs) > 1e10:
            return None
        lin = np.linalg.solve(lhs, k * k * (sw.T @ d) + lam).T   # lhs symmetric: A^T = lhs^-1 (S^T W D + lam)
        return _from_linear(lin, sm, dm)
    raise ValueError(f"unknown model {model!r} (one of {', '.join(MODELS)})")


def _hypotheses(model: str, src: np.ndarray, dst: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """``(T, 2, 3)`` exact models of minimal samples ``(T, m)``; NaN where degenerate."""
    s, d = src[samples], dst[samples]  # (T, m, 2)
    t = len(samples)
    out = np.full((t, 2, 3), np.nan)
    if model == "shift":
        out[:, :, :2] = np.eye(2)
        out[:, :, 2] = (d - s).mean(axis=1)
        return out
    if model in ("xscale_shift", "scale_shift"):
        out[:, :, :2] = np.eye(2)
        axes = (0,) if model == "xscale_shift" else (0, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            for a in axes:
                ds = s[:, 0, a] - s[:, 1, a]
                scale = np.where(np.abs(ds) > 1e-6, (d[:, 0, a] - d[:, 1, a]) / ds, np.nan)
                out[:, a, a] = scale
            sm, dm = s.mean(axis=1), d.mean(axis=1)
            out[:, :, 2] = dm - np.einsum("tab,tb->ta", out[:, :, :2], sm)
        return out
    # affine (and the hypotheses of the regularised affine): solve [x y 1] X = d exactly
    a = np.concatenate([s, np.ones((t, 3, 1))], axis=2)  # (T, 3, 3)
    det = np.linalg.det(a)
    ok = np.abs(det) > 1e-6
    if ok.any():
        sol = np.linalg.solve(a[ok], d[ok])  # (T', 3, 2): rows x, y, 1
        out[ok] = np.transpose(sol, (0, 2, 1))
    return out


@attrs.frozen
class FitResult:
    """A robust fit: ``matrix`` (3x3, ``None`` if none was found), the inlier mask and the
    weights of the final least-squares fit (0 outside the inliers): the fitted model
    passes through the weighted centroids."""

    matrix: np.ndarray | None
    inliers: np.ndarray
    weights: np.ndarray | None = None


def _residuals(matrix: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return np.linalg.norm(dst - apply_matrix(matrix, src), axis=1)


def _refine(model: str, src: np.ndarray, dst: np.ndarray, inliers: np.ndarray, threshold: float,
            reg_lambda: float, weights: np.ndarray | None, rounds: int = 3) -> FitResult:
    """Refit on the inliers and re-select them until the set is stable, then
    :data:`IRLS_ROUNDS` rounds of Cauchy-weighted least squares on the inliers (scale from
    the median residual), which tames the heavy tail of key-point mismatches that still
    pass the threshold."""
    matrix = None
    for _ in range(rounds):
        fitted = fit_model(model, src[inliers], dst[inliers], reg_lambda,
                           None if weights is None else weights[inliers])
        if fitted is None:
            break
        matrix = fitted
        new = _residuals(matrix, src, dst) < threshold
        if np.array_equal(new, inliers) or new.sum() < MINIMAL[model]:
            break
        inliers = new
    if matrix is None:
        return FitResult(None, np.zeros(len(src), bool))
    inliers = _residuals(matrix, src, dst) < threshold
    base = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    final = np.where(inliers, base, 0.0)
    if inliers.sum() > 2 * MINIMAL[model]:
        for _ in range(IRLS_ROUNDS):
            r = _residuals(matrix, src[inliers], dst[inliers])
            sigma = float(np.median(r)) / 1.1774 + 1e-6   # per-coordinate sigma of a 2D Gaussian
            w = base[inliers] / (1.0 + (r / (CAUCHY_C * sigma)) ** 2)
            fitted = fit_model(model, src[inliers], dst[inliers], reg_lambda, w)
            if fitted is None:
                break
            matrix = fitted
            final = np.zeros(len(src))
            final[inliers] = w
    return FitResult(matrix, inliers, final)


def robust_fit(model: str, src: np.ndarray, dst: np.ndarray, *, solver: str = "ransac", threshold: float = 1.5,
               max_iter: int = 1000, min_samples: int = 0, reg_lambda: float = 1.0, remove_per_iter: int = 1,
               seed: int = 0, confidence: float = 0.999, weights: np.ndarray | None = None) -> FitResult:
    """Robust ``model`` of ``dst ~ M src`` against outlying matches.

    :param solver: ``"ransac"``: random samples of ``max(min_samples, MINIMAL[model])``
        pairs (never fewer than the minimal set: Shtengel's ``int(0.005 N)`` rounds to 0
        below 200 matches and silently returns the identity), each scored by MSAC
        (``sum min(r^2, threshold^2)``); at most ``max_iter`` samples, fewer once the best
        inlier ratio ``w`` makes ``1 - (1 - w^m)^T >= confidence``; then least-squares
        refits on the inliers. ``"lsq"``: fit on all matches, drop the ``remove_per_iter``
        worst, refit, until every residual is below ``threshold`` (or ``max_iter`` rounds).
    :param threshold: inlier residual ``|dst - M src|``, px.
    :param seed: seed of the sampling (deterministic results).
    :param weights: per-match weights of the least-squares fits (e.g. inverse squared
        key-point size: coarse key points are located less precisely); the samples and
        the inlier test are unweighted.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = len(src)
    m = max(int(min_samples), MINIMAL[model])
    empty = FitResult(None, np.zeros(n, bool))
    if n < m:
        return empty
    if solver == "lsq":
        keep = np.ones(n, bool)
        for _ in range(max_iter):
            fitted = fit_model(model, src[keep], dst[keep], reg_lambda, None if weights is None else weights[keep])
            if fitted is None:
                return empty
            r = np.where(keep, _residuals(fitted, src, dst), -np.inf)
            if r.max() < threshold:
                break
            if keep.sum() - remove_per_iter < m:
                return empty
            keep[np.argsort(r)[-remove_per_iter:]] = False
        return _refine(model, src, dst, keep, threshold, reg_lambda, weights, rounds=1)
    if solver != "ransac":
        raise ValueError(f"unknown solver {solver!r} ('ransac' or 'lsq')")
    rng = np.random.default_rng(seed)
    thr2 = threshold * threshold
    best_cost, best = np.inf, None
    done, needed, batch = 0, max_iter, 128
    while done < min(needed, max_iter):
        t = min(batch, max_iter - done)
        samples = np.argsort(rng.random((t, n)), axis=1)[:, :m] if n <= 64 else \
            _distinct_samples(rng, n, m, t)
        done += t
        if m == MINIMAL[model]:
            hyp = _hypotheses(model, src, dst, samples)
        else:
            hyp = np.full((t, 2, 3), np.nan)
            for b, sample in enumerate(samples):
                fitted = fit_model(model, src[sample], dst[sample], reg_lambda)
                if fitted is not None:
                    hyp[b] = fitted[:2]
        good = np.isfinite(hyp).all(axis=(1, 2))
        if not good.any():
            continue
        hyp = hyp[good]
        pred = np.einsum("tab,nb->tna", hyp[:, :, :2], src) + hyp[:, None, :, 2]
        r2 = ((dst[None] - pred) ** 2).sum(axis=2)  # (T, N)
        cost = np.minimum(r2, thr2).sum(axis=1)
        b = int(np.argmin(cost))
        if cost[b] < best_cost:
            best_cost, best = float(cost[b]), r2[b] < thr2
            w = best.sum() / n
            if w >= 1.0:
                needed = 0
            elif w > 0:
                p_good = w**m
                needed = int(math.ceil(math.log(1 - confidence) / math.log1p(-p_good))) if p_good > 1e-12 else max_iter
    if best is None or best.sum() < m:
        return empty
    return _refine(model, src, dst, best, threshold, reg_lambda, weights)


def _distinct_samples(rng: np.random.Generator, n: int, m: int, t: int) -> np.ndarray:
    """``(t, m)`` samples of ``m`` distinct indices in ``range(n)`` (rejection of repeats)."""
    out = rng.integers(0, n, (t, m))
    for _ in range(100):
        srt = np.sort(out, axis=1)
        bad = (np.diff(srt, axis=1) == 0).any(axis=1) if m > 1 else np.zeros(t, bool)
        if not bad.any():
            break
        out[bad] = rng.integers(0, n, (int(bad.sum()), m))
    return out
