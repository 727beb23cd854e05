"""Global solution of the cumulative registration matrices from pairs at several offsets.

Unknowns: the cumulative matrices ``T_k`` (``k >= 1``; ``T_0 = I``), each as the top two
rows ``X_k`` of the 3x3 matrix (6 numbers; 2 for TRANSLATION). Every measured pair
``(j, i)`` with matrix ``M`` (see :mod:`._registration_matrices`) says ``T_i ≈ M @ T_j``.
Its residual ``E = (T_i - M @ T_j)[:2]`` is weighed as the displacement it causes at the
block's four corners and centre ``P``: ``|E|² = mean_p |E p|²`` (px²), so the residual is
the RMS misplacement of those points in pixels whatever the transformation class. The
problem is linear in the ``X_k``, sparse and block-banded; it is solved by iteratively
reweighted least squares:

* weights per offset ``d`` are ``1 / sigma_d²``, ``sigma_d`` being re-estimated from the
  residuals of the pairs of that offset divided by their redundancy (variance component
  estimation; the redundancy ``dim - leverage`` is computed exactly on a sample of pairs
  of each offset; the first estimate is a median, later ones are winsorised at
  ``HUBER_K sigma_d``): offsets whose pairs disagree with the rest lose weight;
* a Huber weight (``k = 2.5`` standardised residuals) per pair bounds the influence of a
  failed registration.

The affine solution is finally projected on the transformation class (rotation part of
a polar decomposition, nearest similarity, or translation), about the block centre.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from ._registration_matrices import project

__all__ = ["GlobalSolution", "solve_global"]

HUBER_K = 2.5
ITERATIONS = 10
LEVERAGE_SAMPLES = 12


@attrs.frozen
class GlobalSolution:
    """Result of :func:`solve_global` for every block.

    :param cumulative: ``(n, nb, 3, 3)`` cumulative matrices.
    :param pairs: ``(m, 2)`` the pairs used, ``(j, i)``.
    :param residuals: ``(m, nb)`` RMS misplacement of each pair after the solution (px).
    :param weights: ``(m, nb)`` final robust weights (1: full, smaller: down-weighted).
    :param sigmas: ``{offset: (nb,) sigma_d}`` estimated per-offset noise (px).
    """

    cumulative: np.ndarray
    pairs: np.ndarray
    residuals: np.ndarray
    weights: np.ndarray
    sigmas: dict[int, np.ndarray]


def _points_gram(bounds: tuple[int, int, int, int]) -> np.ndarray:
    """Cholesky factor ``L`` of ``P Pᵀ / 5`` for the corners and centre of ``bounds``."""
    imin, imax, jmin, jmax = bounds
    x0, x1, y0, y1 = jmin, jmax - 1, imin, imax - 1
    pts = np.array([[x0, x1, x0, x1, (x0 + x1) / 2], [y0, y0, y1, y1, (y0 + y1) / 2], [1, 1, 1, 1, 1]], float)
    gram = pts @ pts.T / pts.shape[1]
    return np.linalg.cholesky(gram + 1e-9 * np.eye(3))


def _equations(mats: np.ndarray, js: np.ndarray, translation: bool, chol: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: coefficient blocks of ``x_i`` and ``x_j`` and the right-hand side, so that
    the weighted residual is ``Ci x_i + Cj x_j - rhs``."""
    m = len(mats)
    if translation:
        ci = np.broadcast_to(np.eye(2), (m, 2, 2)).copy()
        cj = -ci
        rhs = mats[:, :2, 2].copy()
        return ci, cj, rhs
    lt = chol.T
    ci = np.broadcast_to(np.kron(np.eye(2), lt), (m, 6, 6)).copy()
    cj = -np.einsum("mab,cd->macbd", mats[:, :2, :2], lt).reshape(m, 6, 6)
    e3 = np.zeros(3)
    e3[2] = 1.0
    rhs = np.einsum("ma,b->mab", mats[:, :2, 2], e3 @ chol).reshape(m, 6)
    # pairs from slice 0: T_0 = I is known, so its term moves to the right-hand side
    x0 = np.eye(3)[:2].reshape(6)
    first = js == 0
    rhs[first] -= np.einsum("mab,b->ma", cj[first], x0)
    return ci, cj, rhs


def _normal_equations(ci: np.ndarray, cj: np.ndarray, rhs: np.ndarray, w: np.ndarray, ui: np.ndarray,
                      uj: np.ndarray, dim: int, nun: int) -> tuple[object, np.ndarray]:
    """Sparse normal matrix ``Σ w Cᵀ C`` and right-hand side ``Σ w Cᵀ rhs`` (unknown
    ``u`` of slice ``u + 1``; ``uj = -1`` for pairs from slice 0, whose term is known)."""
    import scipy.sparse as sp

    ar = np.arange(dim)
    has_j = uj >= 0
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    blocks_ii = np.einsum("m,mka,mkb->mab", w, ci, ci)
    blocks_jj = np.einsum("m,mka,mkb->mab", w, cj, cj)
    blocks_ij = np.einsum("m,mka,mkb->mab", w, ci, cj)
    for r, c, b in ((ui, ui, blocks_ii), (uj[has_j], uj[has_j], blocks_jj[has_j]),
                    (ui[has_j], uj[has_j], blocks_ij[has_j]),
                    (uj[has_j], ui[has_j], np.transpose(blocks_ij[has_j], (0, 2, 1)))):
        rows.append((r[:, None, None] * dim + ar[None, :, None]).repeat(dim, 2).ravel())
        cols.append((c[:, None, None] * dim + ar[None, None, :]).repeat(dim, 1).ravel())
        vals.append(b.ravel())
    normal = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(nun, nun)).tocsc()
    rhs_vec = np.zeros(nun)
    np.add.at(rhs_vec, (ui[:, None] * dim + ar).ravel(), np.einsum("m,mka,mk->ma", w, ci, rhs).ravel())
    np.add.at(rhs_vec, (uj[has_j, None] * dim + ar).ravel(),
              np.einsum("m,mka,mk->ma", w[has_j], cj[has_j], rhs[has_j]).ravel())
    return normal, rhs_vec


def _solve_block(mats: np.ndarray, pairs: np.ndarray, n: int, transformation: str,
                 bounds: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, float]]:
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    translation = transformation == "TRANSLATION"
    dim = 2 if translation else 6
    chol = _points_gram(bounds)
    js, is_ = pairs[:, 0], pairs[:, 1]
    offsets = is_ - js
    ci, cj, rhs = _equations(mats, js, translation, chol)
    x_identity = np.zeros(dim) if translation else np.eye(3)[:2].reshape(6)
    nun = (n - 1) * dim
    # block (row, column) positions of the four blocks of each pair in the normal matrix
    ui, uj = is_ - 1, js - 1
    has_j = uj >= 0
    sig = {int(d): 1.0 for d in np.unique(offsets)}
    huber = np.ones(len(pairs))
    lev_mean: dict[int, float] = {}
    from scipy.stats import chi2

    chi2_median_ratio = float(chi2.ppf(0.5, dim)) / dim
    for it in range(ITERATIONS):
        w = huber / np.array([sig[int(d)] ** 2 for d in offsets])
        normal, rhs_vec = _normal_equations(ci, cj, rhs, w, ui, uj, dim, nun)
        ridge = 1e-10 * (float(normal.diagonal().mean()) if nun else 1.0)
        rhs_vec += ridge * np.tile(x_identity, n - 1)
        lu = spl.splu((normal + ridge * sp.identity(nun, format="csc")).tocsc())
        x = lu.solve(rhs_vec).reshape(n - 1, dim)
        xs = np.vstack([x_identity, x])
        res = np.einsum("mka,ma->mk", ci, xs[is_]) + np.einsum("mka,ma->mk", cj, xs[js]) - rhs
        if not translation:  # pairs from slice 0 had T_0 folded into rhs: remove the double count
            res[js == 0] -= np.einsum("mka,a->mk", cj[js == 0], x_identity)
        r2 = (res**2).sum(1)
        # redundancy per offset from the exact leverage of a sample of its pairs
        for d in sig:
            sel = np.flatnonzero(offsets == d)
            sample = sel[np.linspace(0, len(sel) - 1, min(LEVERAGE_SAMPLES, len(sel))).astype(int)]
            levs = []
            for p in sample:
                a = np.zeros((nun, dim))
                a[ui[p] * dim:(ui[p] + 1) * dim] = ci[p].T
                if has_j[p]:
                    a[uj[p] * dim:(uj[p] + 1) * dim] = cj[p].T
                z = lu.solve(a)
                levs.append(w[p] * float(np.trace(a.T @ z)))
            lev_mean[d] = float(np.clip(np.mean(levs), 0.0, dim - 1e-6))
        red = np.array([dim - lev_mean[int(d)] for d in offsets])
        for d in sig:
            s = offsets == d
            if it == 0:  # robust start: median of the standardised squared residuals
                value = float(np.median(r2[s] / red[s])) / chi2_median_ratio
            else:  # winsorised at HUBER_K sigma: a failed pair cannot inflate its offset's sigma
                clipped = np.minimum(r2[s], HUBER_K**2 * sig[d] ** 2 * red[s])
                value = float(clipped.sum() / max(red[s].sum(), 1e-12))
            sig[d] = max(float(np.sqrt(value)), 1e-4)
        u = np.sqrt(r2 / red) / np.array([sig[int(d)] for d in offsets])
        huber = np.where(u <= HUBER_K, 1.0, HUBER_K / np.maximum(u, 1e-12))
    cumulative = np.tile(np.eye(3), (n, 1, 1))
    if translation:
        cumulative[1:, :2, 2] = x
    else:
        cumulative[1:, :2, :] = x.reshape(n - 1, 2, 3)
    imin, imax, jmin, jmax = bounds
    centre = ((jmin + jmax - 1) / 2, (imin + imax - 1) / 2)
    cumulative = np.stack([project(t, transformation, centre) for t in cumulative])
    return cumulative, np.sqrt(r2), huber, sig


def solve_global(pairs: Mapping[tuple[int, int], np.ndarray], n: int, transformation: str,
                 blocks: Sequence[tuple[int, int, int, int]]) -> GlobalSolution:
    """Cumulative matrices ``(n, nb, 3, 3)`` from pair matrices ``{(j, i): (nb, 3, 3)}``.

    Pairs with non-finite matrices must be left out by the caller. Slices reached by no
    pair keep the identity (a tiny ridge towards it keeps the system solvable).
    """
    keys = sorted(pairs, key=lambda ji: (ji[1], ji[0]))
    pair_arr = np.array(keys, dtype=np.int64).reshape(-1, 2)
    nb = len(blocks)
    cumulative = np.tile(np.eye(3), (n, nb, 1, 1))
    residuals = np.zeros((len(keys), nb))
    weights = np.ones((len(keys), nb))
    sigmas: dict[int, np.ndarray] = {int(d): np.zeros(nb) for d in np.unique(pair_arr[:, 1] - pair_arr[:, 0])}
    if n < 2 or not keys:
        return GlobalSolution(cumulative, pair_arr, residuals, weights, sigmas)
    stacked = np.stack([np.asarray(pairs[k], dtype=np.float64) for k in keys])  # (m, nb, 3, 3)
    for b in range(nb):
        cum, res, wts, sig = _solve_block(stacked[:, b], pair_arr, n, transformation, blocks[b])
        cumulative[:, b] = cum
        residuals[:, b] = res
        weights[:, b] = wts
        for d, s in sig.items():
            sigmas[d][b] = s
    return GlobalSolution(cumulative, pair_arr, residuals, weights, sigmas)
