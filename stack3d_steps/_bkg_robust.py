"""Robust linear least squares by IRLS (iteratively reweighted least squares).

The M-estimation of ``statsmodels.RLM(y, X, M).fit()`` with its defaults, which PyStack3D
uses, written with numpy only:

1. a starting solution (see below);
2. scale ``s = median(|r|) / 0.6745`` (MAD about 0) of the current residuals ``r``;
3. weights ``w = psi(r / s) / (r / s)`` of the norm: Huber's T (``t = 1.345``) or
   Hampel's (``a, b, c = 2, 4, 8``); solve the weighted least squares; go to 2;
4. stop when the deviance ``sum(rho(r / sigma2))`` (``sigma2 = sum(w r^2) / (N - q)``,
   statsmodels' "dev" criterion) changes by at most ``tol = 1e-8``, or after 50 solves.

``weight_func = "None"`` is ordinary least squares.

**Start.** statsmodels starts from least squares. With many one-sided outliers (30 % of
bright particles, say) the least-squares fit is pulled so far that the first MAD scale is
inflated, every weight stays near 1, and the iteration settles at a biased fixed point
(redescending Hampel ends exactly at least squares). stack3d starts from the least
absolute deviations fit instead (up to 50 IRLS steps with weights ``1 / max(|r|, 1e-6 s)``
on at most 50 000 evenly spaced samples),
which follows the conditional median and is not pulled by a minority of outlying gray
levels however far they lie. On
ordinary data both starts reach the same fixed point (coefficients equal to about 1e-8
relative, ``tests/compat/test_compat_bkg_removal.py``); ``start="ols"`` reproduces
statsmodels exactly (``tests/steps/test_bkg_removal.py``).

**Conditioning.** The columns of ``X`` are scaled to unit norm and orthogonalised by the
R factor of a QR decomposition (computed by chunks: TSQR), so every weighted system solved
is ``Z^T W Z u = Z^T W y`` with ``Z`` (nearly) orthonormal; its condition number depends
on the weights only, not on the polynomial basis. The products are accumulated over row
chunks, so no ``N x q`` temporary is made besides ``Z`` itself (``X`` is overwritten).
Rank-deficient designs (too few distinct sample positions) get the minimum-norm solution
(pseudo-inverse, as statsmodels' ``pinv``) and report their rank.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np

__all__ = ["MAD_NORMALISATION", "RobustFit", "hampel_rho", "hampel_weights", "huber_rho",
           "huber_weights", "mad", "robust_fit"]

MAD_NORMALISATION = 0.6744897501960817
"""``scipy.stats.norm.ppf(0.75)``: MAD / this estimates a Gaussian standard deviation."""
HUBER_T = 1.345
HAMPEL_ABC = (2.0, 4.0, 8.0)
_CHUNK = 1 << 16
LAD_SAMPLES = 50_000
"""Most samples the least-absolute-deviations start is computed on."""
_RCOND = 1e-12


def mad(resid: np.ndarray) -> float:
    """Normalised median absolute deviation about 0 (statsmodels ``mad(r, center=0)``)."""
    return float(np.median(np.abs(resid)) / MAD_NORMALISATION) if resid.size else 0.0


def huber_weights(z: np.ndarray, t: float = HUBER_T) -> np.ndarray:
    """1 for ``|z| <= t``, ``t / |z|`` beyond."""
    a = np.abs(z)
    return np.where(a <= t, 1.0, t / np.maximum(a, t))


def huber_rho(z: np.ndarray, t: float = HUBER_T) -> np.ndarray:
    a = np.abs(z)
    return np.where(a <= t, 0.5 * z * z, a * t - 0.5 * t * t)


def hampel_weights(z: np.ndarray, abc: tuple[float, float, float] = HAMPEL_ABC) -> np.ndarray:
    """1 up to ``a``, ``a / |z|`` up to ``b``, ``a (c - |z|) / (|z| (c - b))`` up to ``c``, 0 beyond."""
    a, b, c = abc
    z = np.abs(z)
    safe = np.maximum(z, a)
    return np.select([z <= a, z <= b, z <= c], [1.0, a / safe, a * (c - z) / (safe * (c - b))], 0.0)


def hampel_rho(z: np.ndarray, abc: tuple[float, float, float] = HAMPEL_ABC) -> np.ndarray:
    a, b, c = abc
    z = np.abs(z)
    top = a * (b + c - a) * 0.5
    return np.select([z <= a, z <= b, z <= c],
                     [0.5 * z * z, a * z - 0.5 * a * a, top - 0.5 * a * (c - z) ** 2 / (c - b)], top)


NORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "HuberT": (huber_weights, huber_rho),
    "Hampel": (hampel_weights, hampel_rho),
}


@attrs.frozen(eq=False)
class RobustFit:
    """Result of :func:`robust_fit`.

    :param coefs: ``(q,)`` coefficients of the columns of ``X``.
    :param scale: final MAD scale of the residuals (0 for ordinary least squares).
    :param iterations: number of least-squares solves (1 for OLS).
    :param rank: numerical rank of ``X`` (``< q``: minimum-norm solution).
    :param n: number of samples.
    """

    coefs: np.ndarray
    scale: float
    iterations: int
    rank: int
    n: int


def _precondition(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Overwrite ``x`` with ``Z = x @ T`` (orthonormal columns); return ``T`` and the rank."""
    n, q = x.shape
    norms = np.sqrt(np.einsum("ij,ij->j", x, x))
    norms[norms == 0] = 1.0
    r = np.zeros((0, q))
    for s in range(0, n, _CHUNK):
        r = np.linalg.qr(np.vstack([r, x[s:s + _CHUNK] / norms]), mode="r")
    sv = np.linalg.svd(r, compute_uv=False) if r.size else np.zeros(0)
    rank = int((sv > _RCOND * sv.max()).sum()) if sv.size and sv.max() > 0 else 0
    t = np.linalg.pinv(r, rcond=_RCOND) / norms[:, None] if r.shape[0] else np.zeros((q, q))
    if t.shape[1] != q:  # fewer samples than terms: r is (n, q), pinv is (q, n)
        t = np.hstack([t, np.zeros((q, q - t.shape[1]))])
    for s in range(0, n, _CHUNK):
        x[s:s + _CHUNK] = x[s:s + _CHUNK] @ t
    return t, rank


def _solve(z: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Minimise ``sum(w (y - Z u)^2)`` by the normal equations of the orthonormal ``Z``."""
    q = z.shape[1]
    gram, rhs = np.zeros((q, q)), np.zeros(q)
    for s in range(0, z.shape[0], _CHUNK):
        zc = z[s:s + _CHUNK]
        zw = zc if w is None else zc * w[s:s + _CHUNK, None]
        gram += zw.T @ zc
        rhs += zw.T @ y[s:s + _CHUNK]
    return np.linalg.lstsq(gram, rhs, rcond=_RCOND)[0]


def _irls(z: np.ndarray, y: np.ndarray, u: np.ndarray, norm: str, maxiter: int,
          tol: float) -> tuple[np.ndarray, float, int]:
    """statsmodels' IRLS loop from the solution ``u``; returns ``(u, scale, solves)``."""
    weights_of, rho = NORMS[norm]
    n, q = z.shape
    df = n - q
    resid = y - z @ u
    scale = mad(resid)
    deviance = float(rho(resid / (np.dot(resid, resid) / df)).sum()) if scale > 0 else 0.0
    iteration = 1
    while scale > 0:
        w = weights_of(resid / scale)
        if np.count_nonzero(w) < q:
            break
        u = _solve(z, y, w)
        resid = y - z @ u
        scale = mad(resid)
        sigma2 = float(np.dot(w * resid, resid) / df)
        previous, deviance = deviance, float(rho(resid / sigma2).sum()) if sigma2 > 0 else 0.0
        iteration += 1
        if abs(deviance - previous) <= tol or iteration >= maxiter:
            break
    return u, scale, iteration - 1


def _lad(z: np.ndarray, y: np.ndarray, u: np.ndarray, maxiter: int = 50, rtol: float = 1e-6) -> np.ndarray:
    """Least absolute deviations from ``u`` by IRLS (weights ``1 / max(|r|, delta)``), on
    at most :data:`LAD_SAMPLES` evenly spaced rows: it only has to find the right basin."""
    step = max(1, -(-z.shape[0] // LAD_SAMPLES))
    z, y = z[::step], y[::step]
    resid = y - z @ u
    delta = 1e-6 * max(mad(resid), 1e-12)
    cost = float(np.abs(resid).sum())
    for _ in range(maxiter):
        u_new = _solve(z, y, 1.0 / np.maximum(np.abs(resid), delta))
        resid_new = y - z @ u_new
        new_cost = float(np.abs(resid_new).sum())
        if new_cost > cost:
            break
        u, resid, previous, cost = u_new, resid_new, cost, new_cost
        if previous - cost <= rtol * cost:
            break
    return u


def robust_fit(x: np.ndarray, y: np.ndarray, weight_func: str = "HuberT", *,
               maxiter: int = 50, tol: float = 1e-8, start: str = "lad") -> RobustFit:
    """Fit ``y ~ X c`` robustly (see the module docstring). ``x`` is overwritten.

    :param x: ``(N, q)`` float64 design matrix (consumed).
    :param y: ``(N,)`` observations.
    :param weight_func: ``"HuberT"``, ``"Hampel"`` or ``"None"`` (ordinary least squares).
    :param maxiter: most least-squares solves of the M-estimation (statsmodels' count:
        the starting solution included).
    :param tol: deviance change that stops the iterations.
    :param start: ``"lad"`` (default): the M-estimation starts from the least absolute
        deviations fit; ``"ols"``: from least squares, exactly as statsmodels (whose
        iteration can stall at a biased fixed point with many one-sided outliers).
    """
    if weight_func not in (*NORMS, "None"):
        raise ValueError(f"weight_func must be 'HuberT', 'Hampel' or 'None' (got {weight_func!r})")
    y = np.asarray(y, dtype=np.float64)
    n, q = x.shape
    if n == 0:
        return RobustFit(np.zeros(q), 0.0, 0, 0, 0)
    t, rank = _precondition(x)
    u = _solve(x, y, None)
    if weight_func == "None" or n <= q:
        return RobustFit(t @ u, 0.0, 1, rank, n)
    if start == "lad":
        u = _lad(x, y, u)
    u, scale, solves = _irls(x, y, u, weight_func, maxiter, tol)
    return RobustFit(t @ u, scale, solves + 1, rank, n)
