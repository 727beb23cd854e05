"""Models and robust fits on point sets with known transforms (no images)."""

from __future__ import annotations

import numpy as np
import pytest

from stack3d_sift.models import MINIMAL, MODELS, apply_matrix, fit_model, robust_fit

TRUE = {
    "shift": np.array([[1, 0, 3.2], [0, 1, -1.7], [0, 0, 1.0]]),
    "xscale_shift": np.array([[1.012, 0, 3.2], [0, 1, -1.7], [0, 0, 1.0]]),
    "scale_shift": np.array([[1.012, 0, 3.2], [0, 0.991, -1.7], [0, 0, 1.0]]),
    "affine": np.array([[1.008, 0.021, 3.2], [-0.017, 0.994, -1.7], [0, 0, 1.0]]),
    "regularized_affine": np.array([[1.008, 0.021, 3.2], [-0.017, 0.994, -1.7], [0, 0, 1.0]]),
}


def points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 200, (n, 2))


@pytest.mark.parametrize("model", MODELS)
def test_each_model_recovers_its_transform(model: str) -> None:
    src = points(50)
    dst = apply_matrix(TRUE[model], src)
    fitted = fit_model(model, src, dst, reg_lambda=1e-9)
    np.testing.assert_allclose(fitted, TRUE[model], atol=1e-7)


@pytest.mark.parametrize("solver", ["ransac", "lsq"])
@pytest.mark.parametrize("model", MODELS)
def test_robust_fits_ignore_outliers(model: str, solver: str) -> None:
    rng = np.random.default_rng(1)
    src = points(200, 1)
    dst = apply_matrix(TRUE[model], src) + rng.normal(0, 0.1, src.shape)
    bad = rng.choice(200, 60, replace=False)  # 30 % wrong matches
    dst[bad] += rng.uniform(-40, 40, (60, 2))
    fit = robust_fit(model, src, dst, solver=solver, threshold=1.0, seed=3, reg_lambda=1e-3)
    assert fit.matrix is not None
    grid = points(64, 9)
    err = np.linalg.norm(apply_matrix(fit.matrix, grid) - apply_matrix(TRUE[model], grid), axis=1)
    assert err.max() < 0.1, err.max()
    assert not fit.inliers[bad].any() and fit.inliers.sum() >= 130


def test_ransac_never_samples_fewer_than_the_minimal_set() -> None:
    src = points(2)
    dst = apply_matrix(TRUE["affine"], src)
    # two matches cannot determine an affine model: no model, never a silent identity
    assert robust_fit("affine", src, dst).matrix is None
    assert fit_model("affine", src, dst) is None
    # min_samples below the minimal set is raised to it (Shtengel's int(0.005 N) = 0 pitfall)
    src = points(40)
    dst = apply_matrix(TRUE["affine"], src)
    fit = robust_fit("affine", src, dst, min_samples=1, seed=0)
    np.testing.assert_allclose(fit.matrix, TRUE["affine"], atol=1e-8)
    assert MINIMAL == {"shift": 1, "xscale_shift": 2, "scale_shift": 2, "affine": 3, "regularized_affine": 3}


def test_degenerate_points_give_no_model() -> None:
    src = np.column_stack([np.linspace(0, 100, 20), np.full(20, 5.0)])  # all on one row
    dst = src + 1.0
    assert fit_model("affine", src, dst) is None
    assert robust_fit("affine", src, dst).matrix is None
    assert fit_model("shift", src, dst) is not None


def test_regularisation_pulls_toward_a_pure_shift() -> None:
    rng = np.random.default_rng(2)
    src = points(6, 2)
    dst = apply_matrix(TRUE["affine"], src) + rng.normal(0, 0.3, src.shape)
    plain = fit_model("affine", src, dst)
    lin = [np.abs(fit_model("regularized_affine", src, dst, lam)[:2, :2] - np.eye(2)).sum()
           for lam in (0.0, 1.0, 100.0, 1e8)]
    assert np.allclose(fit_model("regularized_affine", src, dst, 0.0), plain)
    assert lin[0] > lin[1] > lin[2] > lin[3] and lin[3] < 1e-6
    # a huge lambda leaves a pure shift through the centroids
    big = fit_model("regularized_affine", src, dst, 1e8)
    np.testing.assert_allclose(big[:2, 2], dst.mean(0) - src.mean(0), atol=1e-4)
    # with hundreds of points lambda = 1 barely moves the affine solution
    src = points(400, 3)
    dst = apply_matrix(TRUE["affine"], src) + rng.normal(0, 0.2, src.shape)
    diff = fit_model("regularized_affine", src, dst, 1.0) - fit_model("affine", src, dst)
    assert np.abs(diff[:2, :2]).max() < 5e-4


def test_ransac_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(4)
    src = points(100, 4)
    dst = apply_matrix(TRUE["affine"], src) + rng.normal(0, 0.2, src.shape)
    dst[:30] += 25.0
    a = robust_fit("affine", src, dst, seed=7)
    b = robust_fit("affine", src, dst, seed=7)
    assert np.array_equal(a.matrix, b.matrix) and np.array_equal(a.inliers, b.inliers)


def test_weighted_centroid_is_mapped_exactly() -> None:
    rng = np.random.default_rng(5)
    src = points(150, 5)
    dst = apply_matrix(TRUE["affine"], src) + rng.standard_t(2, src.shape) * 0.2  # heavy tails
    fit = robust_fit("regularized_affine", src, dst, seed=1)
    w = fit.weights / fit.weights.sum()
    np.testing.assert_allclose(apply_matrix(fit.matrix, (w @ src)[None])[0], w @ dst, atol=1e-9)
