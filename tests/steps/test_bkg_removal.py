"""``bkg_removal``: basis, robust fit, accuracy on synthetic ground truth, fixed PyStack3D
bugs, side outputs, parameter errors, and a run on the ``processes`` executor."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from stack3d_core import PluginHost, parse_config, run
from stack3d_core.config.strict import structure_table, unstructure
from stack3d_core.errors import ConfigError
from stack3d_core.testing import check_step, run_step_on_arrays
from stack3d_core.testing.synth import make_stack
from stack3d_steps import _bkg_poly as poly
from stack3d_steps._bkg_robust import hampel_weights, huber_weights, robust_fit
from stack3d_steps.bkg_removal import BkgRemoval, BkgRemovalParams

from ..conftest import write_slices

# Only the background (and what a test switches on): no drift, gains, curtains.
QUIET = dict(gains=False, stripes=False, nonuniform_z=False, drift_px_per_slice=(0.0, 0.0), jitter_px=0.0)
FLAT = dict(QUIET, noise_sigma=0.0, texture_levels=(0.5, 0.5), sphere_fraction=0.0)


def step(**params: object) -> BkgRemoval:
    return BkgRemoval(BkgRemovalParams(**params))


def background_error(stack, state) -> float:
    """Largest |fitted - true| background over every pixel and slice, each taken relative
    to its slice mean (the constant level is not part of the background), / full scale."""
    worst = 0.0
    for k in range(len(stack)):
        true = stack.background(k).astype(np.float64)
        fit = poly.evaluate(state.powers, state.slice_coefs(k), stack.shape, poly.z_coord(k, len(stack)))
        worst = max(worst, float(np.abs((fit - fit.mean()) - (true - true.mean())).max()))
    return worst / stack.full_scale


# -- contract and parameters ------------------------------------------------------------------
def test_contract_round_trip_and_pickling(tmp_path: Path) -> None:
    check_step(BkgRemoval)
    params = BkgRemovalParams(orders=[1, 2, 1], cross_terms=True, skip_factors=[5, 5, 2], threshold_min=2)
    rebuilt, issues = structure_table(BkgRemovalParams, unstructure(params), "bkg_removal")
    assert not issues and rebuilt == params
    assert pickle.loads(pickle.dumps(BkgRemoval(params))) == BkgRemoval(params)
    _, state, _ = run_step_on_arrays(BkgRemoval(params), make_stack(n_slices=3, shape=(20, 30), **FLAT).volume(),
                                     workdir=tmp_path)
    assert pickle.loads(pickle.dumps(state)).coefs.tolist() == state.coefs.tolist()


def test_powers_follow_pystack3d_order() -> None:
    assert poly.powers_from_orders([1, 1, 1], True) == (
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1))
    assert poly.powers_from_orders([2, 2, 0], False) == ((0, 0, 0), (0, 1, 0), (0, 2, 0), (1, 0, 0), (2, 0, 0))
    assert poly.powers_from_orders([2, 1], True) == ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1))
    assert poly.expr_from_powers(((0, 0), (0, 1), (1, 0), (2, 1))) == "1 + y + x + x**2*y"


def test_poly_basis_parsing() -> None:
    assert poly.powers_from_expr("1 + x + y + x*y + x**2 + z", 3) == (
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 1, 0), (2, 0, 0))
    assert poly.powers_from_expr("y + x + x*y + x**2 + x**2*y", 2) == ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1))
    assert poly.powers_from_expr("x*x + 2*y^3 + x**10", 2) == ((0, 0), (0, 3), (2, 0), (10, 0))
    for bad, word in (("x + w", "'w'"), ("x + z", "dim = 3"), ("x + + y", "empty"), ("x**", "factor")):
        with pytest.raises(ValueError, match=word):
            poly.powers_from_expr(bad, 2)


def test_separable_evaluation_matches_the_dense_basis() -> None:
    powers = poly.powers_from_orders([2, 3, 2], True)
    coefs = np.random.default_rng(1).normal(size=len(powers))
    shape, z = (13, 17), 0.37
    rows, cols = np.mgrid[0:13, 0:17]
    xs, ys = poly.axis_coords(17)[cols.ravel()], poly.axis_coords(13)[rows.ravel()]
    dense = (poly.design_matrix(powers, xs, ys, np.full(xs.size, z)) @ coefs).reshape(shape)
    np.testing.assert_allclose(poly.evaluate(powers, coefs, shape, z), dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(poly.evaluate(powers, coefs, shape, z, step=4), dense[::4, ::4], atol=1e-12)
    assert poly.stack_mean(powers, coefs, shape, 1) == pytest.approx(
        poly.evaluate(powers, coefs, shape, 0.0).mean(), rel=1e-12)


# -- robust fit -------------------------------------------------------------------------------
def _plane_with_outliers() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    n = 300
    x, y = rng.random(n), rng.random(n)
    design = np.column_stack([np.ones(n), y, x, x * y, x**2])
    truth = np.array([100.0, -20.0, 30.0, 15.0, -10.0])
    values = design @ truth + rng.normal(0, 2.0, n)
    out = rng.random(n) < 0.3
    values[out] += rng.uniform(80, 120, out.sum())
    return design, values, truth


def test_ols_start_reproduces_statsmodels_rlm() -> None:
    # statsmodels 0.14 (PyStack3D 2026.2's environment): RLM(values, design, M).fit().params
    design, values, _ = _plane_with_outliers()
    huber = [132.742217993404, -57.712083789869, 3.085150953571, 67.152041905547, -6.801404950702]
    hampel = [156.276015842792, -75.948818260735, -10.900637844425, 92.747481040141, -5.286193571794]
    np.testing.assert_allclose(robust_fit(design.copy(), values, "HuberT", start="ols").coefs, huber, rtol=1e-9)
    np.testing.assert_allclose(robust_fit(design.copy(), values, "Hampel", start="ols").coefs, hampel, rtol=1e-8)
    np.testing.assert_allclose(robust_fit(design.copy(), values, "None").coefs,
                               np.linalg.lstsq(design, values, rcond=None)[0], rtol=1e-10)


def test_thirty_percent_far_outliers_do_not_move_the_hampel_fit() -> None:
    design, values, truth = _plane_with_outliers()
    ols = robust_fit(design.copy(), values, "None").coefs
    hampel = robust_fit(design.copy(), values, "Hampel").coefs
    huber = robust_fit(design.copy(), values, "HuberT").coefs
    grid = poly.design_matrix(((0, 0), (0, 1), (1, 0), (1, 1), (2, 0)), *np.mgrid[0:1:21j, 0:1:21j].reshape(2, -1))
    error = {name: np.abs(grid @ (c - truth)).max() for name, c in (("ols", ols), ("hampel", hampel), ("huber", huber))}
    assert error["ols"] > 50          # least squares is dragged up by the outliers (~+100)
    assert error["hampel"] < 2.0      # within the noise (sigma 2)
    assert error["huber"] < 0.7 * error["ols"]


def test_weight_functions() -> None:
    z = np.array([0.0, 1.0, 1.345, 2.69, -5.0])
    np.testing.assert_allclose(huber_weights(z), [1, 1, 1, 0.5, 1.345 / 5])
    z = np.array([0.0, 2.0, 3.0, 6.0, -7.0, 9.0])
    np.testing.assert_allclose(hampel_weights(z), [1, 1, 2 / 3, 2 * 2 / (6 * 4), 2 * 1 / (7 * 4), 0])


def test_degenerate_samples() -> None:
    fit = robust_fit(np.zeros((0, 3)), np.zeros(0))
    assert fit.n == 0 and not fit.coefs.any()
    design = poly.design_matrix(((0, 0), (0, 1), (1, 0)), np.linspace(0, 1, 20), np.full(20, 0.5))
    fit = robust_fit(design, 3.0 + 2.0 * np.linspace(0, 1, 20))  # y constant: y and 1 collinear
    assert fit.rank == 2
    values = poly.design_matrix(((0, 0), (0, 1), (1, 0)), np.linspace(0, 1, 20), np.full(20, 0.5)) @ fit.coefs
    np.testing.assert_allclose(values, 3.0 + 2.0 * np.linspace(0, 1, 20), atol=1e-9)


# -- accuracy against the synthetic ground truth ----------------------------------------------------
@pytest.mark.parametrize("orders", [[1, 2], [1, 2, 1]])
@pytest.mark.parametrize("weight_func", ["HuberT", "Hampel", "None"])
def test_background_alone_is_recovered(tmp_path: Path, orders: list[int], weight_func: str) -> None:
    stack = make_stack(n_slices=6, shape=(64, 80), **FLAT)
    skips = [3, 4, 1][: len(orders)]
    out, state, _ = run_step_on_arrays(step(orders=orders, cross_terms=True, skip_factors=skips,
                                            weight_func=weight_func), stack.volume(), workdir=tmp_path)
    assert background_error(stack, state) < 0.002           # < 0.2 % of full scale (rounding)
    residual = out.astype(float) - np.stack([stack.clean(k) for k in range(len(stack))])
    assert np.ptp(residual.mean(axis=(1, 2))) < 1.0 and np.abs(residual - residual.mean()).max() < 2.5


@pytest.mark.slow
def test_robust_2d_fit_sees_through_pores_particles_and_noise(tmp_path: Path) -> None:
    stack = make_stack(n_slices=4, shape=(192, 192), dz_um=0.3, radius_px=(2, 8),
                       **dict(QUIET, noise_sigma=0.02, texture_levels=(0.5, 0.5)))
    volume = stack.volume()
    errors = {}
    for wf in ("HuberT", "Hampel", "None"):
        _, state, _ = run_step_on_arrays(step(orders=[1, 2], cross_terms=True, skip_factors=[4, 4], weight_func=wf),
                                         volume, workdir=tmp_path / wf)
        errors[wf] = background_error(stack, state)
    assert errors["HuberT"] < 0.01 and errors["Hampel"] < 0.01, errors     # < 1 % of full scale
    assert errors["None"] > 0.03, errors                                     # least squares: > 3 %


@pytest.mark.slow
def test_robust_3d_fit_sees_through_texture_pores_particles_and_noise(tmp_path: Path) -> None:
    stack = make_stack(n_slices=16, shape=(192, 192), dz_um=0.3, radius_px=(2, 8), wavelength_px=(2, 8),
                       texture_levels=(0.45, 0.55), **dict(QUIET, noise_sigma=0.02))
    volume = stack.volume()
    span = float(volume.max()) - float(volume.min())
    errors = {}
    for wf in ("HuberT", "Hampel", "None"):
        _, state, _ = run_step_on_arrays(step(orders=[1, 2, 1], cross_terms=True, skip_factors=[4, 4, 1],
                                              weight_func=wf), volume, workdir=tmp_path / wf)
        errors[wf] = background_error(stack, state) * stack.full_scale / span
    assert errors["HuberT"] < 0.01 and errors["Hampel"] < 0.01, errors      # < 1 % of the stack's range
    assert errors["None"] > 0.015, errors


# -- semantics and PyStack3D bugs fixed -------------------------------------------------------------
@pytest.mark.slow
def test_kept_level_and_preserve_avg(tmp_path: Path) -> None:
    stack = make_stack(n_slices=5, shape=(40, 50), dtype="uint16", **FLAT)
    volume = stack.volume()
    for orders in ([1, 2], [1, 2, 1]):
        skips = [2, 2, 1][: len(orders)]
        out, state, stats = run_step_on_arrays(step(orders=orders, cross_terms=True, skip_factors=skips),
                                               volume, workdir=tmp_path / f"a{len(orders)}")
        for k in range(len(stack)):  # out = in - (B - c0)
            expected = volume[k] - (poly.evaluate(state.powers, state.slice_coefs(k), stack.shape,
                                                  poly.z_coord(k, 5)) - state.slice_coefs(k)[0])
            np.testing.assert_allclose(out[k], np.rint(expected), atol=0)
        out, state, stats = run_step_on_arrays(step(orders=orders, cross_terms=True, skip_factors=skips,
                                                    preserve_avg=True), volume, workdir=tmp_path / f"p{len(orders)}")
        if len(orders) == 2:   # each slice keeps its mean
            np.testing.assert_allclose(stats[:, 1, 2], stats[:, 0, 2], rtol=1e-12)
        else:                  # the stack keeps its mean; the z trend of the background is gone
            assert stats[:, 1, 2].mean() == pytest.approx(stats[:, 0, 2].mean(), rel=1e-12)
            clean_means = [stack.clean(k).mean() for k in range(5)]
            assert np.ptp(stats[:, 1, 2] - clean_means) < 0.5 < np.ptp(stats[:, 0, 2] - clean_means)


def test_thresholded_pixels_are_left_out_of_the_fit_but_corrected(tmp_path: Path) -> None:
    stack = make_stack(n_slices=3, shape=(60, 60), **FLAT)
    volume = stack.volume().copy()
    volume[:, 10:30, 5:25] = 255   # saturated blob: would bias the fit
    volume[:, 40:50, 40:55] = 0    # dead area
    out, state, _ = run_step_on_arrays(step(orders=[1, 2], cross_terms=True, skip_factors=[2, 2],
                                            threshold_min=5, threshold_max=250), volume, workdir=tmp_path)
    assert background_error(stack, state) < 0.003
    removed = state.removed(1, stack.shape)
    np.testing.assert_array_equal(out[1, 40:50, 40:55], np.clip(np.rint(-removed[40:50, 40:55]), 0, 255))
    assert not np.array_equal(out[1, 10:30, 5:25], volume[1, 10:30, 5:25])


@pytest.mark.parametrize("skips", [[2, 6], [6, 2]])
@pytest.mark.parametrize("averaging", [False, True])
def test_anisotropic_skips_and_averaging_on_any_size(tmp_path: Path, skips: list[int], averaging: bool) -> None:
    # PyStack3D skips rows by skip_x in 2D (wrong fit) and crashes with averaging when the
    # size is not a multiple of the skip; 50 x 71 is a multiple of neither.
    stack = make_stack(n_slices=2, shape=(50, 71), **FLAT)
    _, state, _ = run_step_on_arrays(step(orders=[1, 2], cross_terms=True, skip_factors=skips,
                                          skip_averaging=averaging), stack.volume(), workdir=tmp_path)
    assert background_error(stack, state) < 0.003


def test_averaging_ignores_thresholded_pixels() -> None:
    image = np.full((9, 10), 100.0)
    image[0, 0] = 0.0
    samples = poly.sample_slice(image, 4, 3, True, 50, None)   # blocks of 3 rows x 4 columns
    assert samples.size == 9 and np.all(samples.values == 100.0)
    xs, ys = poly.axis_coords(10), poly.axis_coords(9)
    assert samples.x[0] == pytest.approx(3 * xs[:4].sum() / 11)        # centroid of the 11 valid pixels
    assert samples.y[0] == pytest.approx((4 * ys[:3].sum() - ys[0]) / 11)
    assert samples.x[2] == pytest.approx(xs[8:].mean())                  # partial last block


def test_single_slice_and_single_sampled_z(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stack = make_stack(n_slices=1, shape=(40, 40), **FLAT)
    for orders, skips in (([1, 2], [2, 2]), ([1, 2, 1], [2, 2, 1])):
        _, state, _ = run_step_on_arrays(step(orders=orders, cross_terms=True, skip_factors=skips),
                                         stack.volume(), workdir=tmp_path / str(len(orders)))
        assert background_error(stack, state) < 0.003
    assert "zero at every sample" in caplog.text


def test_no_valid_pixel_leaves_the_slice_unchanged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    volume = make_stack(n_slices=2, shape=(30, 30), **FLAT).volume()
    out, _, _ = run_step_on_arrays(step(orders=[1, 1], cross_terms=False, skip_factors=[2, 2], threshold_min=254),
                                   volume, workdir=tmp_path)
    np.testing.assert_array_equal(out, volume)
    assert "without any pixel within the thresholds" in caplog.text


# -- outputs ----------------------------------------------------------------------------------
def project(tmp_path: Path, host: PluginHost, table: dict, n: int = 6, **top: object) -> tuple[Path, object]:
    folder = tmp_path / "project"
    write_slices(folder, make_stack(n_slices=n, shape=(48, 64), **dict(QUIET, noise_sigma=0.02)).volume())
    data = {"channels": ["."], "process_steps": ["bkg_removal"], "bkg_removal": table, **top}
    return folder, parse_config(data, host, project_dir=folder)


def test_side_outputs_3d_and_z_over_the_selected_slices(tmp_path: Path, host: PluginHost) -> None:
    table = {"orders": [1, 2, 1], "cross_terms": True, "skip_factors": [4, 4, 2]}
    folder, config = project(tmp_path, host, table, n=8, ind_min=2, ind_max=6)
    run(config, host=host)
    outputs = folder / "process/bkg_removal/outputs"
    with np.load(outputs / "coefs.npz") as npz:
        coefs, powers = npz["coefs"], npz["powers"]
    assert coefs.shape == (5, 12) and powers.shape == (12, 3) and powers.dtype == np.int64
    assert np.all(coefs == coefs[0])
    np.testing.assert_allclose(np.loadtxt(outputs / "coefs_3d.txt"), coefs[0], rtol=1e-15)
    assert len(list((outputs / "bkgs").glob("*.png"))) == 5
    assert {"coefs.png", "stats_X.png", "stats_Y.png", "log.txt", "stats.npy"} <= {p.name for p in outputs.iterdir()}
    assert "X/Y statistics slices: [0, 2, 4]" in (outputs / "log.txt").read_text()
    # z runs over the 5 processed slices: the same fit as on those slices alone
    volume = np.stack([make_stack(n_slices=8, shape=(48, 64), **dict(QUIET, noise_sigma=0.02)).observed(k)
                       for k in range(2, 7)])
    _, state, _ = run_step_on_arrays(step(**table), volume, workdir=tmp_path / "direct")
    np.testing.assert_allclose(coefs[0], state.coefs, rtol=1e-9, atol=1e-9)


def test_side_outputs_2d(tmp_path: Path, host: PluginHost) -> None:
    folder, config = project(tmp_path, host, {"poly_basis": "x + y + x*y", "dim": 2, "skip_factors": [3, 3]})
    run(config, host=host)
    outputs = folder / "process/bkg_removal/outputs"
    with np.load(outputs / "coefs.npz") as npz:
        assert npz["coefs"].shape == (6, 4) and npz["powers"].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
        assert np.ptp(npz["coefs"][:, 0]) > 0   # fitted per slice
    assert not (outputs / "coefs_3d.txt").exists()
    assert {"coefs.png", "stats_X.png", "stats_Y.png"} <= {p.name for p in outputs.iterdir()}


@pytest.mark.slow
def test_processes_executor_gives_the_same_files(tmp_path: Path, host: PluginHost) -> None:
    table = {"orders": [1, 1, 1], "cross_terms": True, "skip_factors": [2, 2, 2], "weight_func": "Hampel"}
    serial_dir, config = project(tmp_path / "s", host, table)
    run(config, host=host)
    procs_dir, config = project(tmp_path / "p", host, table)
    run(config, host=host, executor="processes", workers=2)
    for sub in ("process/bkg_removal", "process/bkg_removal/outputs"):
        for path in sorted((serial_dir / sub).glob("*.tif")) + sorted((serial_dir / sub).glob("*.np?")):
            assert path.read_bytes() == (procs_dir / sub / path.name).read_bytes(), path.name


# -- parameter errors ------------------------------------------------------------------------
@pytest.mark.parametrize(("table", "key", "words"), [
    ({"orders": [1, -1], "cross_terms": True}, "bkg_removal.orders", ">= 0"),
    ({"orders": [1, 1, 1, 1], "cross_terms": True}, "bkg_removal.orders", "2 (x, y) or 3"),
    ({"orders": [1, 1]}, "bkg_removal", "'cross_terms'"),
    ({"skip_factors": [2, 2]}, "bkg_removal", "'orders'"),
    ({"orders": [1, 1], "cross_terms": True, "threshold_min": 10, "threshold_max": 5}, "bkg_removal", "threshold_min"),
    ({"orders": [1, 1], "cross_terms": True, "weight_func": "Tukey"}, "bkg_removal.weight_func", "HuberT"),
    ({"orders": [1, 1, 1], "cross_terms": True}, "bkg_removal", "skip_factors has 2 entries"),
    ({"orders": [1, 1], "cross_terms": True, "skip_factors": [0, 2]}, "bkg_removal.skip_factors", ">= 1"),
    ({"poly_basis": "1 + x + z", "dim": 2}, "bkg_removal", "poly_basis"),
    ({"poly_basis": "1 + x", "dim": 4}, "bkg_removal.dim", ""),
    ({"orders": [1, 1], "cross_terms": "yes"}, "bkg_removal.cross_terms", "true or false"),
])
def test_bad_parameters_name_the_key(tmp_path: Path, host: PluginHost, table: dict, key: str, words: str) -> None:
    data = {"channels": ["."], "process_steps": ["bkg_removal"], "bkg_removal": table}
    with pytest.raises(ConfigError) as info:
        parse_config(data, host, project_dir=tmp_path)
    issues = [(i.path, i.message) for i in info.value.issues]
    assert any(path == key and words in message for path, message in issues), issues


def test_pystack3d_tables_are_accepted(tmp_path: Path, host: PluginHost) -> None:
    # assets/params.toml and the repo's example tables (spec §2.3)
    for table in ({"dim": 3, "orders": [1, 2, 1], "cross_terms": True, "skip_factors": [10, 10, 10],
                   "threshold_min": 2, "preserve_avg": True},
                  {"orders": [2, 2, 0], "cross_terms": False, "skip_factors": [10, 10, 10], "threshold_min": 64},
                  {"poly_basis": "", "orders": [1, 1, 1], "cross_terms": True, "skip_factors": [5, 5, 5],
                   "threshold_min": 5, "threshold_max": 10.0, "weight_func": "HuberT"}):
        config = parse_config({"channels": ["."], "process_steps": ["bkg_removal"], "bkg_removal": table},
                              host, project_dir=tmp_path)
        assert config.steps["bkg_removal"].params.dimension == 3


def test_the_3d_fit_samples_a_bounded_number_of_slices_however_long_the_stack() -> None:
    from types import SimpleNamespace

    from stack3d_core.stackio import StackMeta
    from stack3d_steps.bkg_removal import MAX_DESIGN_ENTRIES_3D

    step = BkgRemoval(BkgRemovalParams(dim=3, orders=(1, 2, 1), cross_terms=True, skip_factors=(4, 4, 2)))
    terms = len(step.params.powers)
    assert terms == 12
    per_slice = 64 * 64  # 256 x 256 px at skip 4
    for n, expected in ((100, 50), (2000, MAX_DESIGN_ENTRIES_3D // (per_slice * terms))):
        ctx = SimpleNamespace(meta=StackMeta(n=n, shape=(256, 256), dtype="uint16"))
        picked = list(step.measure_slices(ctx))  # type: ignore[arg-type]
        assert len(picked) == expected, n
        assert all(k % 2 == 0 for k in picked) and picked[0] == 0 and picked[-1] == n - 2
        assert len(picked) * per_slice * terms <= MAX_DESIGN_ENTRIES_3D
    gaps = np.diff(picked)
    assert gaps.max() - gaps.min() <= 2  # evenly spaced along z


def test_a_capped_3d_fit_says_so_in_its_log(tmp_path: Path, host: PluginHost,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_DESIGN_ENTRIES_3D the fit takes evenly spaced slices among the skip_z-th
    ones, writes how many in log.txt, and still finds the background."""
    import stack3d_steps.bkg_removal as bkg

    table = {"orders": [1, 2, 1], "cross_terms": True, "skip_factors": [4, 4, 1]}
    per_slice = 12 * 16  # 48 x 64 px at skip 4
    monkeypatch.setattr(bkg, "MAX_DESIGN_ENTRIES_3D", 4 * per_slice * 12)  # 4 of the 12 slices
    folder, config = project(tmp_path, host, table, n=12)
    run(config, host=host)
    log = (folder / "process/bkg_removal/outputs/log.txt").read_text()
    assert "3D fit: 4 of the 12 slices at skip_z sampled" in log and "3D fit on 768 samples from 4 slices" in log
    monkeypatch.setattr(bkg, "MAX_DESIGN_ENTRIES_3D", 10**9)
    _, whole, _ = run_step_on_arrays(step(**table), np.stack([make_stack(n_slices=12, shape=(48, 64), **dict(
        QUIET, noise_sigma=0.02)).observed(k) for k in range(12)]), workdir=tmp_path / "whole")
    with np.load(folder / "process/bkg_removal/outputs/coefs.npz") as npz:
        coefs = npz["coefs"][0]
    full = whole.coefs
    assert not np.allclose(coefs, full, rtol=1e-9)  # not the same samples...
    np.testing.assert_allclose(coefs[0], full[0], rtol=0.01)  # ...but the same background level
