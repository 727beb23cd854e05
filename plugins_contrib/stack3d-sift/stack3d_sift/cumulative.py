"""Driver side: pair matrices -> cumulative matrices, drift handling, output canvas.

**Convention** (stack3d's built-in registration): ``T_k`` (3x3) maps slice-0 coordinates
``(x = column, y = row, 1)`` to the coordinates of the same material in slice ``k`` (an
inverse map: the registered slice ``k`` at pixel ``p`` is slice ``k`` sampled at
``T_k p``); ``T_0 = I``; a usable pair ``(j, i)`` with matrix ``M`` says ``T_i ≈ M T_j``.

**Chain** (``solve = "chain"``, Shtengel's): slice ``k`` is reached through the first
usable pair ``(k - d, k)`` in the order of ``pair_offsets`` whose slice ``k - d`` is
connected to slice 0 (else through any usable pair). With ``pair_offsets = (1, 2)`` one
unusable slice (no texture, a glitch) is bridged by the pair ``(k - 1, k + 1)``, so the
slices after it are not shifted by its failure.

**Global** (``solve = "global"``): every usable pair is a weighted least-squares equation
``T_i - M T_j ≈ 0`` on the unknown top rows of ``T_1 .. T_(n-1)`` (see :func:`solve_global`).

**Failed slices.** A slice that no usable pair connects to slice 0 (through earlier slices
for the chain, through any for the global solve) keeps its neighbour's transform
``T_k = T_(k-1)`` (flag ``kept_neighbour``); slices registered to it but not to slice 0
follow it (flag ``after_break``). The caller warns about both, naming the slices.

**Scale-drift removal** (Shtengel's ``preserve_scales``): each element of the linear parts
``L_k`` is detrended with a Savitzky-Golay fit over ``k``: ``L'_k = L_k + I - SG(L)_k``
(keeps the slice-to-slice corrections, removes the slow accumulated scale / shear /
rotation). The translations are then re-estimated so that the matched points still
coincide: for a pair ``(j, i)`` with inliers ``p -> q``, ``sum |q - T'_i T'_j^-1 p|^2`` is
minimal when ``t_i - B t_j = mean(q) - B mean(p)`` with ``B = L'_i L'_j^-1``; these
equations (one per pair used, weighted) are solved for the ``t_k`` (exact and sequential
for the chain). Finally ``T'_k <- T'_k T'_0^-1`` so that slice 0 stays the reference.

**Linear drift removal**: a straight line is fitted to the displacement of the image
centre ``T_k c - c`` against ``k`` and its slope ``* k`` is subtracted from every
translation (a steady drift of the whole block is not turned into a sheared volume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from .pairs import PairResult

__all__ = ["AFTER_BREAK", "KEPT_NEIGHBOUR", "REFERENCE", "REGISTERED", "Link", "Solution", "build_chain",
           "canvas_offset", "detrend_linear", "relative_from_cumulative", "remove_linear_drift", "solve_global"]

REFERENCE, REGISTERED, KEPT_NEIGHBOUR, AFTER_BREAK = "reference", "ok", "kept_neighbour", "after_break"
"""Slice flags: slice 0; connected to slice 0 by usable pairs; no usable pair connects it
(it keeps slice ``k - 1``'s transform); registered to a ``kept_neighbour`` slice only."""

HUBER_K = 3.0
ITERATIONS = 5


@attrs.frozen(eq=False)
class Link:
    """One relation ``T_i ≈ M T_j`` used by the solvers: a usable pair, or an *anchor*
    (``M = I``) that gives a disconnected slice its neighbour's transform.

    ``info`` is the pair's weight ``N_inliers / sigma²`` (1/px²); ``moments`` the inliers'
    ``mean(p p^T)`` in slice ``j`` (3x3)."""

    j: int
    i: int
    matrix: np.ndarray
    src_centroid: np.ndarray
    dst_centroid: np.ndarray
    moments: np.ndarray
    info: float
    anchor: bool = False


@attrs.frozen(eq=False)
class Solution:
    """Cumulative matrices ``(n, 3, 3)``; per slice the slice it was chained from (``-1``:
    slice 0, or not chained) and its flag; the links used with their final weights and
    residuals (RMS misplacement of their inliers under the solution, px)."""

    cumulative: np.ndarray
    source: np.ndarray
    flags: tuple[str, ...]
    links: tuple[Link, ...]
    weights: np.ndarray
    residuals: np.ndarray


def _frame_moments(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    mx, my = (w - 1) / 2.0, (h - 1) / 2.0
    vx, vy = (w * w - 1) / 12.0, (h * h - 1) / 12.0
    return np.array([[vx + mx * mx, mx * my, mx], [mx * my, vy + my * my, my], [mx, my, 1.0]])


def _infos(pairs: Mapping[tuple[int, int], PairResult]) -> dict[tuple[int, int], float]:
    """``N / sigma²`` per usable pair, ``sigma²`` its residual variance per coordinate
    floored at a quarter of the median (a pair with few inliers is not trusted more
    because its residuals happen to be small)."""
    var = {ji: 0.5 * (r.get("residual_std_x_px") ** 2 + r.get("residual_std_y_px") ** 2)
           for ji, r in pairs.items() if r.ok}
    if not var:
        return {}
    floor = 0.25 * float(np.median(list(var.values()))) + 1e-6
    return {ji: pairs[ji].get("inliers") / max(v, floor) for ji, v in var.items()}


def _link(ji: tuple[int, int], r: PairResult, info: float) -> Link:
    return Link(ji[0], ji[1], np.asarray(r.matrix), np.asarray(r.src_centroid), np.asarray(r.dst_centroid),
                np.asarray(r.src_moments), info)


def _anchor(k: int, shape: tuple[int, int], info: float) -> Link:
    return Link(k - 1, k, np.eye(3), np.zeros(2), np.zeros(2), _frame_moments(shape), info, anchor=True)


def build_chain(n: int, pairs: Mapping[tuple[int, int], PairResult], offsets: Sequence[int],
                shape: tuple[int, int]) -> Solution:
    """Compose the usable pairs into cumulative matrices (module docstring, *Chain*)."""
    infos = _infos(pairs)
    anchor_info = float(np.median(list(infos.values()))) if infos else 1.0
    cum = np.tile(np.eye(3), (n, 1, 1))
    source = np.full(n, -1, dtype=np.int64)
    flags = [REFERENCE] + [KEPT_NEIGHBOUR] * (n - 1)
    connected = np.zeros(n, bool)
    connected[0] = True
    links: list[Link] = []
    for k in range(1, n):
        usable = [k - d for d in offsets if k - d >= 0 and (k - d, k) in pairs and pairs[(k - d, k)].ok]
        chosen = next((j for j in usable if connected[j]), usable[0] if usable else None)
        if chosen is None:
            cum[k] = cum[k - 1]
            links.append(_anchor(k, shape, anchor_info))
            continue
        cum[k] = pairs[(chosen, k)].matrix @ cum[chosen]
        source[k] = chosen
        connected[k] = bool(connected[chosen])
        flags[k] = REGISTERED if connected[chosen] else AFTER_BREAK
        links.append(_link((chosen, k), pairs[(chosen, k)], infos[(chosen, k)]))
    weights = np.ones(len(links))
    return Solution(cum, source, tuple(flags), tuple(links), weights, _residuals(cum, links))


def _residuals(cum: np.ndarray, links: Sequence[Link]) -> np.ndarray:
    """RMS misplacement (px) of each link's inliers: ``sqrt(tr(E Q E^T))`` with
    ``E = T_i T_j^-1 - M`` acting on slice-``j`` points of moments ``Q``."""
    out = np.empty(len(links))
    for m, ln in enumerate(links):
        e = (cum[ln.i] @ np.linalg.inv(cum[ln.j]) - ln.matrix)[:2]
        out[m] = np.sqrt(max(float(np.trace(e @ ln.moments @ e.T)), 0.0))
    return out


def _block_lsq(n: int, dim: int, rows: Sequence[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, float]],
               known: np.ndarray) -> np.ndarray:
    """Solve the weighted least squares ``sum w |Ci x_i + Cj x_j - r|^2`` for ``x_1 ..
    x_(n-1)`` (``x_0 = known``), sparse normal equations (block-banded). ``rows``:
    ``(i, j, Ci, Cj, r, w)``."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    nun = (n - 1) * dim
    r_idx: list[np.ndarray] = []
    c_idx: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rhs = np.zeros(nun)
    ar = np.arange(dim)

    def add(a: int, b: int, block: np.ndarray) -> None:
        r_idx.append(np.repeat((a - 1) * dim + ar, dim))
        c_idx.append(np.tile((b - 1) * dim + ar, dim))
        vals.append(block.ravel())

    for i, j, ci, cj, r, w in rows:
        if j == 0:
            r = r - cj @ known
        add(i, i, w * ci.T @ ci)
        rhs[(i - 1) * dim:i * dim] += w * ci.T @ r
        if j > 0:
            add(j, j, w * cj.T @ cj)
            add(i, j, w * ci.T @ cj)
            add(j, i, w * cj.T @ ci)
            rhs[(j - 1) * dim:j * dim] += w * cj.T @ r
    normal = sp.coo_matrix((np.concatenate(vals), (np.concatenate(r_idx), np.concatenate(c_idx))),
                           shape=(nun, nun)).tocsc()
    ridge = 1e-12 * float(abs(normal.diagonal()).mean())
    return spl.splu((normal + ridge * sp.identity(nun, format="csc")).tocsc()).solve(rhs).reshape(n - 1, dim)


def _project(matrix: np.ndarray, model: str, centre: np.ndarray) -> np.ndarray:
    """Nearest matrix of the model's class keeping the image of ``centre`` (x, y)."""
    if model in ("affine", "regularized_affine"):
        return matrix
    lin = np.eye(2)
    if model in ("xscale_shift", "scale_shift"):
        lin[0, 0] = matrix[0, 0]
        if model == "scale_shift":
            lin[1, 1] = matrix[1, 1]
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = matrix[:2, :2] @ centre + matrix[:2, 2] - lin @ centre
    return out


def solve_global(n: int, pairs: Mapping[tuple[int, int], PairResult], chain: Solution, shape: tuple[int, int],
                 model: str) -> Solution:
    """Cumulative matrices from every usable pair at once.

    Unknowns: the top rows ``X_k`` of ``T_k`` (6 numbers), ``k >= 1``. A pair ``(j, i)``
    contributes ``info * sum_p |E r_p|^2 / N`` with ``E = X_i - M X_j`` (as 2x3 on ``(x, y,
    1)``) and ``r_p`` its inliers carried to slice-0 coordinates by the chain's ``T_j^-1``
    (second moments ``G = T_j^-1 Q T_j^-T``): the misplacement of its own key points, in
    px², weighted by ``N / sigma²``. Iteratively reweighted (Huber, ``k = 3`` on the RMS
    misplacement divided by its median over the pairs) so a wrong pair cannot pull the
    stack. Disconnected slices get anchors (``kept_neighbour``). The result is projected
    on the model's class (shift, scales) about the image centre.
    """
    infos = _infos(pairs)
    usable = sorted((ji for ji in infos), key=lambda ji: (ji[1], ji[0]))
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for j, i in usable:
        parent[root(i)] = root(j)
    anchor_info = float(np.median(list(infos.values()))) if infos else 1.0
    links = [_link(ji, pairs[ji], infos[ji]) for ji in usable]
    flags = [REFERENCE] + [REGISTERED] * (n - 1)
    first_of: dict[int, int] = {}
    for k in range(1, n):
        r = root(k)
        if r == root(0):
            continue
        if r not in first_of:
            first_of[r] = k
            flags[k] = KEPT_NEIGHBOUR
            links.append(_anchor(k, shape, anchor_info))
        else:
            flags[k] = AFTER_BREAK
    if n < 2:
        return Solution(np.tile(np.eye(3), (n, 1, 1)), np.full(n, -1), tuple(flags), (), np.zeros(0), np.zeros(0))
    # solved in normalised coordinates u = S^-1 p (origin at the image centre, unit = half
    # the diagonal): the normal equations are then well conditioned
    h, w = shape
    half = 0.5 * float(np.hypot(h, w))
    norm = np.array([[half, 0.0, (w - 1) / 2.0], [0.0, half, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    inv_norm = np.linalg.inv(norm)
    inv_chain = inv_norm @ np.linalg.inv(chain.cumulative) @ norm
    coeffs = []
    for ln in links:
        q = inv_norm @ ln.moments @ inv_norm.T
        m = inv_norm @ ln.matrix @ norm
        g = inv_chain[ln.j] @ q @ inv_chain[ln.j].T
        c = np.linalg.cholesky(0.5 * (g + g.T) + 1e-12 * np.eye(3))
        ci = np.kron(np.eye(2), c.T)
        cj = -np.kron(m[:2, :2], c.T)
        rhs = np.kron(m[:2, 2], c[2])
        coeffs.append((ci, cj, rhs))
    known = np.eye(3)[:2].ravel()
    huber = np.ones(len(links))
    cum = chain.cumulative
    for _ in range(ITERATIONS):
        rows = [(ln.i, ln.j, ci, cj, rhs, ln.info * hw) for ln, (ci, cj, rhs), hw in zip(links, coeffs, huber)]
        x = _block_lsq(n, 6, rows, known)
        cum = np.tile(np.eye(3), (n, 1, 1))
        cum[1:, :2, :] = x.reshape(n - 1, 2, 3)
        cum = norm @ cum @ inv_norm
        res = _residuals(cum, links)
        real = np.array([not ln.anchor for ln in links])
        scale = float(np.median(res[real])) if real.any() else 1.0
        z = res / max(scale, 1e-9)
        huber = np.where(z <= HUBER_K, 1.0, HUBER_K / np.maximum(z, 1e-12))
        huber[~real] = 1.0
    centre = np.array([(shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0])
    cum = np.stack([_project(t, model, centre) for t in cum])
    for k, flag in enumerate(flags):  # exactly the neighbour's (the anchor gives it to ~1e-10)
        if flag == KEPT_NEIGHBOUR:
            cum[k] = cum[k - 1]
    return Solution(cum, np.full(n, -1, dtype=np.int64), tuple(flags), tuple(links), huber, _residuals(cum, links))


def _savgol_window(n: int, window: int, order: int) -> int | None:
    w = min(window, n if n % 2 else n - 1)
    return w if w > order else None


def detrend_linear(sol: Solution, window: int, order: int) -> np.ndarray | None:
    """Cumulative matrices with the slow trend of their linear parts removed and the
    translations re-estimated from the links (module docstring). ``None`` when the stack
    is too short for the window (fewer than ``order + 2`` slices)."""
    from scipy.signal import savgol_filter

    cum = sol.cumulative
    n = len(cum)
    w = _savgol_window(n, window, order)
    if w is None:
        return None
    lin = cum[:, :2, :2]
    new_lin = lin + np.eye(2) - savgol_filter(lin, w, order, axis=0, mode="interp")
    for ln in sol.links:  # anchored slices copy their neighbour exactly
        if ln.anchor:
            new_lin[ln.i] = new_lin[ln.j]
    inv = np.linalg.inv(new_lin)
    rows = []
    for ln, wt in zip(sol.links, sol.weights):
        b = new_lin[ln.i] @ inv[ln.j]
        rows.append((ln.i, ln.j, np.eye(2), -b, ln.dst_centroid - b @ ln.src_centroid, ln.info * wt))
    t = _block_lsq(n, 2, rows, np.zeros(2))
    out = np.tile(np.eye(3), (n, 1, 1))
    out[:, :2, :2] = new_lin
    out[1:, :2, 2] = t
    return out @ np.linalg.inv(out[0])


def remove_linear_drift(cumulative: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Subtract ``slope * k`` from the translations, ``slope`` (px/slice, (x, y)) fitted to
    the displacement of the image centre. Returns ``(matrices, slope)``."""
    n = len(cumulative)
    out = np.array(cumulative, dtype=np.float64)
    if n < 2:
        return out, np.zeros(2)
    h, w = shape
    ctr = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])
    disp = (cumulative @ ctr)[:, :2] - ctr[:2]
    k = np.arange(n, dtype=np.float64)
    slope = np.polyfit(k, disp, 1)[0]  # (2,)
    out[:, :2, 2] -= k[:, None] * slope[None, :]
    return out, slope


def canvas_offset(cumulative: np.ndarray, shape: tuple[int, int]) -> tuple[tuple[float, float], tuple[int, int]]:
    """Union canvas: ``((ox, oy), (rows, cols))`` of the box of slice-0 coordinates that
    holds every slice's frame ``T_k^-1([0, W-1] x [0, H-1])``, on the pixel grid of slice 0
    (``ox``, ``oy`` integers: output pixel ``(c, r)`` is slice-0 point ``(c + ox, r + oy)``)."""
    h, w = shape
    corners = np.array([[0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], dtype=np.float64)
    pts = np.linalg.inv(cumulative) @ corners  # (n, 3, 4)
    x, y = pts[:, 0], pts[:, 1]
    ox = float(np.floor(min(0.0, x.min()) + 1e-6))
    oy = float(np.floor(min(0.0, y.min()) + 1e-6))
    cols = int(np.ceil(max(w - 1.0, x.max()) - 1e-6) - ox) + 1
    rows = int(np.ceil(max(h - 1.0, y.max()) - 1e-6) - oy) + 1
    return (ox, oy), (rows, cols)


def relative_from_cumulative(cumulative: np.ndarray) -> np.ndarray:
    """Pair matrices ``tmats[k] = T_k @ T_(k-1)^-1`` (``tmats[0] = T_0``) whose chain
    ``T_k = tmats[k] @ T_(k-1)`` gives back ``cumulative``: the ``tmats.npy`` format that
    ``registration_transformation`` composes."""
    out = np.empty_like(cumulative)
    out[0] = cumulative[0]
    out[1:] = cumulative[1:] @ np.linalg.inv(cumulative[:-1])
    return out
