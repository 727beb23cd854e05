"""intensity_rescaling (histogram matching) and intensity_rescaling_area (ROI-mean factors).

Ground truth from the synthetic generator with gains only (``_intensity_metrics``): the
per-slice gain ``ĝ_k`` (slope of output against the clean slice) must jump much less at the
true gain boundaries after correction than before.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import ConfigError, StepError, parse_config, run
from stack3d_core.testing import check_step, run_step_on_arrays
from stack3d_steps import _intensity_core as core
from stack3d_steps._intensity_metrics import gain_jumps, gain_test_stack, slice_gains
from stack3d_steps.intensity import (
    STEPS,
    IntensityRescaling,
    IntensityRescalingArea,
    IntensityRescalingAreaParams,
    IntensityRescalingParams,
)

from ..conftest import make_stack, steps_host, write_slices


def _rescale(stack: np.ndarray, tmp_path: Path, **params: object) -> tuple[np.ndarray, object, Path]:
    step = IntensityRescaling(IntensityRescalingParams(**params))
    out, state, _ = run_step_on_arrays(step, stack, workdir=tmp_path)
    return out, state, tmp_path / "intensity_rescaling" / "outputs"


def _area(stack: np.ndarray, tmp_path: Path, **params: object) -> tuple[np.ndarray, np.ndarray, Path]:
    step = IntensityRescalingArea(IntensityRescalingAreaParams(**params))
    out, state, _ = run_step_on_arrays(step, stack, workdir=tmp_path)
    return out, state, tmp_path / "intensity_rescaling_area" / "outputs"


def pystack3d_2026_matching(stack: np.ndarray, nbins: int) -> np.ndarray:
    """Oracle: spec §2.2 with filter_size = -1, written with numpy.histogram as PyStack3D
    2026.2 does (float result, before any cast)."""
    vmin, vmax = float(stack.min()), float(stack.max())
    hists = np.stack([np.histogram(img, nbins, range=(vmin, vmax))[0] for img in stack])
    edges = np.histogram(stack[0], nbins, range=(vmin, vmax))[1]
    x = (edges[1:] + edges[:-1]) / 2
    cdf_t = np.cumsum(hists.mean(axis=0))
    cdf_t /= cdf_t.max()
    out = np.empty(stack.shape)
    for k, img in enumerate(stack):
        h = hists[k].copy()
        h[h == 0] = 1
        cdf_i = h.cumsum() / h.sum()
        idx = np.clip(np.floor((img - vmin) / (vmax - vmin) * nbins).astype(int), 0, nbins - 1)
        out[k] = np.interp(cdf_i, cdf_t, x)[idx]
    return out


# -- contract and parameters ------------------------------------------------------------
@pytest.mark.parametrize("step", STEPS)
def test_contract(step: type) -> None:
    check_step(step)


def test_defaults_are_pystack3d_s() -> None:
    p = IntensityRescalingParams()
    assert (p.nbins, p.filter_size, p.range_bins) == (256, 10, None)
    a = IntensityRescalingAreaParams()
    assert (a.area, a.threshold_min, a.threshold_max, a.factors_range) == (None, None, None, (0.8, 1.2))


@pytest.mark.parametrize(("step", "table", "key"), [
    ("intensity_rescaling", {"nbins": 0}, "nbins"),
    ("intensity_rescaling", {"filter_size": 0}, "filter_size"),
    ("intensity_rescaling", {"filter_size": -3}, "filter_size"),
    ("intensity_rescaling", {"range_bins": [10.0, 5.0]}, "range_bins"),
    ("intensity_rescaling", {"nbins": 25.5}, "nbins"),
    ("intensity_rescaling_area", {"threshold_min": 200, "threshold_max": 100}, "threshold_min"),
    ("intensity_rescaling_area", {"factors_range": [1.2, 0.8]}, "factors_range"),
    ("intensity_rescaling_area", {"factors_range": [0.0, 1.2]}, "factors_range"),
    ("intensity_rescaling_area", {"factors_range": [0.8, 1.0, 1.2]}, "factors_range"),
    ("intensity_rescaling_area", {"area": [10, 5, 0, 20]}, "area"),
    ("intensity_rescaling_area", {"area": [0, 10, -1, 20]}, "area"),
])
def test_bad_parameters_are_refused_naming_the_key(tmp_path: Path, step: str, table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"process_steps": [step], step: table}, steps_host(autoload=False), project_dir=tmp_path)
    assert key in str(info.value)


def test_pystack3d_tables_are_accepted_unchanged(tmp_path: Path) -> None:
    # PyStack3D 2025.2's range_bins and the shipped params.toml's tables
    config = parse_config({"process_steps": ["intensity_rescaling", "intensity_rescaling_area"],
                           "intensity_rescaling": {"nbins": 256, "filter_size": -1, "range_bins": [0, 255]},
                           "intensity_rescaling_area": {"area": [0, 99999, 0, 99999], "threshold_min": 0,
                                                        "factors_range": [0.8, 1.2]}},
                          steps_host(autoload=False), project_dir=tmp_path)
    assert config is not None


# -- intensity_rescaling ------------------------------------------------------------------
def test_matches_the_specified_algorithm(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stack = (rng.normal(100, 20, (6, 40, 48)) * np.linspace(0.8, 1.2, 6)[:, None, None])
    stack = np.clip(stack, 0, 255).astype(np.uint8)
    out, state, outputs = _rescale(stack, tmp_path, nbins=64, filter_size=-1)
    expected = np.clip(np.rint(pystack3d_2026_matching(stack, 64)), 0, 255)
    np.testing.assert_array_equal(out, expected)
    assert (state.vmin, state.vmax) == (float(stack.min()), float(stack.max()))


def test_histogram_outputs(tmp_path: Path) -> None:
    data = gain_test_stack(16, (48, 48), seed=2, segments=2)
    stack = data["observed"]
    out, state, outputs = _rescale(stack, tmp_path, nbins=128, filter_size=5)
    orig, ref, final = (np.load(outputs / f) for f in ("histo_orig.npy", "histos_ref.npy", "histos_final.npy"))
    assert orig.shape == ref.shape == final.shape == (16, 128)
    rng = (state.vmin, state.vmax)
    for k in range(16):
        np.testing.assert_array_equal(orig[k], np.histogram(stack[k], 128, range=rng)[0])
        # analytic histogram of the written slice, equal to the one counted on it
        np.testing.assert_array_equal(final[k], np.histogram(out[k], 128, range=rng)[0])
    # the running mean is kept in float (PyStack3D truncates it to integers)
    from scipy.ndimage import uniform_filter1d

    np.testing.assert_allclose(ref, uniform_filter1d(orig.astype(float), 5, axis=0))
    assert np.any(ref != np.floor(ref))
    for name in ("intensity_rescaling_maps.png", "intensity_rescaling_profiles.png"):
        assert (outputs / name).stat().st_size > 10_000


def test_reduces_gain_jumps_against_the_truth(tmp_path: Path) -> None:
    data = gain_test_stack(48, (64, 64), seed=3, segments=4)
    before = gain_jumps(slice_gains(data["observed"], data["clean"]), data["boundaries"])
    for filter_size, factor in ((-1, 4.0), (10, 3.0)):
        out, _, _ = _rescale(data["observed"], tmp_path / str(filter_size), filter_size=filter_size)
        after = gain_jumps(slice_gains(out, data["clean"]), data["boundaries"])
        assert after.mean * factor < before.mean, (filter_size, before, after)


def test_a_stack_without_defect_is_left_within_one_gray_level(tmp_path: Path) -> None:
    image = make_stack(n=1, rows=40, cols=48)[0]
    image[0, 0], image[0, 1] = 0, 255  # range [0, 255]: 256 bins of width 255/256
    out, _, _ = _rescale(np.stack([image] * 5), tmp_path, filter_size=3)
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1


def test_constant_stack_and_ignored_range_bins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stack = np.full((4, 16, 16), 77, dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="stack3d"):
        out, state, _ = _rescale(stack, tmp_path / "a", range_bins=(0.0, 100.0))
    np.testing.assert_array_equal(out, stack)
    assert (state.vmin, state.vmax) == (76.5, 77.5)
    assert "constant" in caplog.text and "range_bins" in caplog.text
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 200, (4, 16, 16)).astype(np.uint8)
    with_range, _, _ = _rescale(stack, tmp_path / "b", range_bins=(50.0, 60.0))
    without, _, _ = _rescale(stack, tmp_path / "c")
    np.testing.assert_array_equal(with_range, without)


def test_uint16_and_float_stacks(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(20000, 3000, (5, 64, 64)) * np.array([1, 1, 0.7, 1, 1])[:, None, None]
    out16, _, _ = _rescale(base.astype(np.uint16), tmp_path / "u16", filter_size=-1, nbins=64)
    assert out16.dtype == np.uint16
    assert abs(out16[2].mean() - out16[1].mean()) < 0.02 * out16[1].mean()
    floats = base.astype(np.float32)
    floats[0, 0, 0] = np.nan
    out32, _, outputs = _rescale(floats, tmp_path / "f32", filter_size=-1, nbins=64)
    assert out32.dtype == np.float32
    assert np.isnan(out32[0, 0, 0]) and np.isfinite(out32[0, 1:]).all()
    assert np.load(outputs / "histo_orig.npy")[0].sum() == 64 * 64 - 1


# -- intensity_rescaling_area -------------------------------------------------------------
def test_area_factors_follow_the_spec(tmp_path: Path) -> None:
    levels = np.array([100, 80, 100, 125, 90, 100, 200], dtype=float)
    stack = np.repeat(levels[:, None, None], 20 * 30, axis=1).reshape(7, 20, 30).astype(np.uint8)
    out, factors, outputs = _area(stack, tmp_path)
    expected = np.clip(100 / levels, 0.8, 1.2)
    np.testing.assert_allclose(factors, expected)
    np.testing.assert_array_equal(out, np.rint(expected[:, None, None] * stack))
    np.testing.assert_allclose(np.load(outputs / "means.npy"), levels)
    np.testing.assert_allclose(np.load(outputs / "factors.npy"), expected)
    log = (outputs / "log.txt").read_text()
    assert "Reference mean (median of the slice means): 100" in log
    assert "Slices clipped at min / max: 1 / 1" in log
    for name in ("means.png", "factors.png"):
        assert (outputs / name).stat().st_size > 5_000


def test_area_is_bottom_left_and_thresholds_are_absolute(tmp_path: Path) -> None:
    stack = np.full((3, 20, 30), 100, dtype=np.uint8)
    stack[:, 15:, :10] = [[[50]], [[60]], [[50]]]  # bottom-left 5 rows x 10 columns
    stack[1, 15, 0] = 250  # excluded by threshold_max
    _, factors, outputs = _area(stack, tmp_path, area=(0, 10, 0, 5), threshold_max=200)
    np.testing.assert_allclose(np.load(outputs / "means.npy"), [50, 60, 50])
    np.testing.assert_allclose(factors, [1.0, 50 / 60, 1.0])


def test_area_reduces_pure_gain_jumps_against_the_truth(tmp_path: Path) -> None:
    data = gain_test_stack(48, (64, 64), seed=3, segments=4, multiplicative=True)
    before = gain_jumps(slice_gains(data["observed"], data["clean"]), data["boundaries"])
    out, _, _ = _area(data["observed"], tmp_path, factors_range=(0.5, 2.0))
    after = gain_jumps(slice_gains(out, data["clean"]), data["boundaries"])
    assert after.mean * 4 < before.mean, (before, after)


def test_area_without_valid_pixels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stack = np.full((3, 10, 10), 100, dtype=np.uint8)
    stack[1] = 10
    with caplog.at_level(logging.WARNING, logger="stack3d"):
        _, factors, _ = _area(stack, tmp_path / "a", threshold_min=50)
    np.testing.assert_allclose(factors, [1, 1, 1])
    assert "no pixel" in caplog.text
    with pytest.raises(StepError, match="threshold_min"):
        _area(stack, tmp_path / "b", threshold_min=150)


def test_area_outside_the_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stack = np.full((2, 10, 12), 100, dtype=np.uint8)
    with pytest.raises(StepError, match="outside the image"):
        _area(stack, tmp_path / "a", area=(20, 30, 0, 5))
    with caplog.at_level(logging.WARNING, logger="stack3d"):
        _area(stack, tmp_path / "b", area=(0, 99999, 0, 99999))
    assert "clamped" in caplog.text


# -- projects and executors ----------------------------------------------------------------
@pytest.mark.slow
def test_processes_executor_gives_the_serial_result(tmp_path: Path) -> None:
    data = gain_test_stack(12, (40, 40), seed=5, segments=2)
    table = {"process_steps": ["intensity_rescaling", "intensity_rescaling_area"],
             "intensity_rescaling": {"filter_size": 4, "nbins": 200},
             "intensity_rescaling_area": {"area": [5, 30, 5, 30], "threshold_min": 20}}
    results = {}
    for executor in ("serial", "processes"):
        folder = tmp_path / executor
        write_slices(folder, data["observed"])
        host = steps_host(autoload=False)
        run(parse_config(table, host, project_dir=folder), host=host, executor=executor, workers=2)
        results[executor] = {p.relative_to(folder).as_posix(): (tifffile.imread(p) if p.suffix == ".tif" else np.load(p))
                             for p in sorted((folder / "process").rglob("*")) if p.suffix in (".tif", ".npy")}
    assert results["serial"].keys() == results["processes"].keys()
    assert any(k.endswith("histos_final.npy") for k in results["serial"])
    for key, value in results["serial"].items():
        np.testing.assert_array_equal(value, results["processes"][key], err_msg=key)


def test_core_helpers_edge_cases() -> None:
    assert core.global_range([(3.0, 3.0), (np.nan, np.nan)]) == (2.5, 3.5, True)
    with pytest.raises(ValueError):
        core.global_range([(np.nan, np.nan)])
    idx = core.bin_index(np.array([0.0, 127.5, 255.0, 300.0, -1.0]), 0.0, 255.0, 4)
    np.testing.assert_array_equal(idx, [0, 2, 3, 3, 0])
    ref, f = core.factors_from_means(np.array([0.0, 10.0, np.nan]), (0.5, 2.0))
    assert ref == 5.0 and f.tolist() == [2.0, 0.5, 1.0]
