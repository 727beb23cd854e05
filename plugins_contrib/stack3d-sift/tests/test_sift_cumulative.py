"""Composition, bridges over failed slices, the global solve, drift removal and the union
canvas, on pair results built from known matrices (no images)."""

from __future__ import annotations

import numpy as np

from stack3d_sift.cumulative import (
    AFTER_BREAK,
    KEPT_NEIGHBOUR,
    REFERENCE,
    REGISTERED,
    build_chain,
    canvas_offset,
    detrend_linear,
    relative_from_cumulative,
    remove_linear_drift,
    solve_global,
)
from stack3d_sift.pairs import PairResult

SHAPE = (120, 160)


def truth(n: int, seed: int = 0, scale_drift: float = 0.0) -> np.ndarray:
    """Cumulative matrices: random walk of small affine steps (+ a slow scale drift)."""
    rng = np.random.default_rng(seed)
    out = np.tile(np.eye(3), (n, 1, 1))
    for k in range(1, n):
        step = np.eye(3)
        step[:2, :2] += rng.normal(0, 2e-3, (2, 2))
        step[:2, 2] = rng.normal(0, 0.8, 2)
        out[k] = step @ out[k - 1]
    s = 1.0 + scale_drift * np.arange(n) / max(n - 1, 1)
    out[:, 0, :] *= s[:, None]
    out[:, 1, :] *= s[:, None]
    out[:, 2] = [0, 0, 1]
    return out


def pair(matrix: np.ndarray | None, src_centroid=(70.0, 50.0), inliers: int = 200, reason: str = "") -> PairResult:
    if matrix is None:
        return PairResult(None, (300.0, 300.0, 3.0, 0.0) + (float("nan"),) * 4, reason=reason or "failed")
    c = np.asarray(src_centroid, dtype=np.float64)
    xs, ys = np.meshgrid(np.linspace(10, 150, 8), np.linspace(10, 110, 8))
    ph = np.column_stack([xs.ravel(), ys.ravel(), np.ones(64)])
    dst = (matrix @ np.array([*c, 1.0]))[:2]
    return PairResult(np.asarray(matrix, dtype=np.float64), (300.0, 300.0, 250.0, float(inliers), 0.2, 0.25, 0.18, 0.18),
                      c, dst, ph.T @ ph / 64)


def exact_pairs(cum: np.ndarray, offsets=(1, 2), noise: float = 0.0, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(1, len(cum)):
        for d in offsets:
            if i - d >= 0:
                m = cum[i] @ np.linalg.inv(cum[i - d])
                if noise:
                    m = m.copy()
                    m[:2, 2] += rng.normal(0, noise, 2)
                out[(i - d, i)] = pair(m)
    return out


def test_chain_composes_inverse_maps_in_order() -> None:
    cum = truth(30)
    sol = build_chain(30, exact_pairs(cum, (1,)), (1,), SHAPE)
    np.testing.assert_allclose(sol.cumulative, cum, atol=1e-9)
    assert sol.flags == (REFERENCE,) + (REGISTERED,) * 29
    # relative_from_cumulative gives the pair matrices back: T_k = tmats[k] @ T_(k-1)
    rel = relative_from_cumulative(cum)
    again = np.empty_like(cum)
    again[0] = rel[0]
    for k in range(1, 30):
        again[k] = rel[k] @ again[k - 1]
    np.testing.assert_allclose(again, cum, atol=1e-10)


def test_a_failed_slice_is_bridged_and_flagged() -> None:
    cum = truth(30)
    pairs = exact_pairs(cum)
    for ji in ((13, 15), (14, 15), (15, 16), (15, 17)):
        pairs[ji] = pair(None)
    for solver in ("chain", "global"):
        sol = build_chain(30, pairs, (1, 2), SHAPE)
        if solver == "global":
            sol = solve_global(30, pairs, sol, SHAPE, "affine")
        assert sol.flags[15] == KEPT_NEIGHBOUR and set(sol.flags[16:]) == {REGISTERED}, solver
        np.testing.assert_allclose(sol.cumulative[15], sol.cumulative[14], atol=1e-9)
        keep = np.arange(30) != 15
        np.testing.assert_allclose(sol.cumulative[keep], cum[keep], atol=1e-6)


def test_without_bridges_the_break_is_flagged() -> None:
    cum = truth(20)
    pairs = exact_pairs(cum, (1,))
    pairs[(9, 10)] = pair(None)
    for sol in (build_chain(20, pairs, (1,), SHAPE),
                solve_global(20, pairs, build_chain(20, pairs, (1,), SHAPE), SHAPE, "affine")):
        assert sol.flags[10] == KEPT_NEIGHBOUR and set(sol.flags[11:]) == {AFTER_BREAK}
        np.testing.assert_allclose(sol.cumulative[10], sol.cumulative[9], atol=1e-9)
        # the slices after the break are still registered to one another
        np.testing.assert_allclose(sol.cumulative[15] @ np.linalg.inv(sol.cumulative[12]),
                                   cum[15] @ np.linalg.inv(cum[12]), atol=1e-6)


def test_global_solve_averages_noise_and_resists_a_wrong_pair() -> None:
    cum = truth(60, seed=3)
    pairs = exact_pairs(cum, (1, 2, 4), noise=0.05, seed=2)
    chain = build_chain(60, pairs, (1, 2, 4), SHAPE)
    glob = solve_global(60, pairs, chain, SHAPE, "affine")
    err = lambda c: np.abs((c - cum)[:, :2, 2]).max()  # noqa: E731
    assert err(glob.cumulative) < 0.7 * err(chain.cumulative)
    wrong = cum[31] @ np.linalg.inv(cum[30])
    wrong = wrong.copy()
    wrong[:2, 2] += (6.0, -4.0)
    pairs[(30, 31)] = pair(wrong)
    glob = solve_global(60, pairs, build_chain(60, pairs, (1, 2, 4), SHAPE), SHAPE, "affine")
    assert err(glob.cumulative) < 0.5
    links = [ln for ln in glob.links if (ln.j, ln.i) == (30, 31)]
    assert glob.weights[glob.links.index(links[0])] < 0.2


def test_global_solve_keeps_the_model_class() -> None:
    cum = np.tile(np.eye(3), (12, 1, 1))
    cum[:, 0, 0] = 1 + 0.001 * np.arange(12)
    cum[:, :2, 2] = np.random.default_rng(0).normal(0, 2, (12, 2))
    cum[0] = np.eye(3)
    pairs = exact_pairs(cum, (1, 2), noise=0.05)
    sol = solve_global(12, pairs, build_chain(12, pairs, (1, 2), SHAPE), SHAPE, "xscale_shift")
    assert np.all(sol.cumulative[:, 0, 1] == 0) and np.all(sol.cumulative[:, 1, 0] == 0)
    assert np.all(sol.cumulative[:, 1, 1] == 1)


def test_detrending_removes_the_slow_linear_drift_and_keeps_the_points_together() -> None:
    cum = truth(80, seed=5, scale_drift=0.02)
    pairs = exact_pairs(cum, (1,))
    sol = build_chain(80, pairs, (1,), SHAPE)
    out = detrend_linear(sol, 21, 2)
    assert out is not None
    np.testing.assert_allclose(out[0], np.eye(3), atol=1e-12)
    scale = np.sqrt(np.abs(np.linalg.det(out[:, :2, :2])))
    assert np.abs(scale - 1).max() < 5e-3 < np.abs(np.sqrt(np.linalg.det(cum[:, :2, :2])) - 1).max()
    # every pair's inlier centroid still lands on its match under the new transforms
    for (j, i), r in pairs.items():
        p = out[i] @ np.linalg.solve(out[j], np.array([*r.src_centroid, 1.0]))
        np.testing.assert_allclose(p[:2], r.dst_centroid, atol=1e-8)
    assert detrend_linear(build_chain(3, exact_pairs(cum[:3], (1,)), (1,), SHAPE), 21, 3) is None


def test_linear_drift_removal() -> None:
    n = 40
    cum = np.tile(np.eye(3), (n, 1, 1))
    k = np.arange(n)
    jitter = np.random.default_rng(0).normal(0, 0.3, (n, 2))
    jitter[0] = 0
    cum[:, 0, 2] = 0.7 * k + jitter[:, 0]
    cum[:, 1, 2] = -0.4 * k + jitter[:, 1]
    out, slope = remove_linear_drift(cum, SHAPE)
    np.testing.assert_allclose(slope, [0.7, -0.4], atol=0.03)
    assert np.abs(out[:, :2, 2]).max() < 1.5 and np.array_equal(out[0], np.eye(3))


def test_union_canvas_holds_every_slice() -> None:
    cum = np.tile(np.eye(3), (3, 1, 1))
    cum[1, :2, 2] = (5.5, -3.2)   # slice 1's content sits 5.5 px right, 3.2 px up of slice 0's
    cum[2, :2, 2] = (-7.0, 10.0)
    (ox, oy), (rows, cols) = canvas_offset(cum, SHAPE)
    assert (ox, oy) == (-6.0, -10.0)
    assert (rows, cols) == (120 + 10 + 4, 160 + 6 + 7)
