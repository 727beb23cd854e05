"""registration_calculation with ``algorithm = "phase_correlation"`` against synthetic ground
truth, and against pystackreg on the same stacks.

Stacks and error measure as in ``test_registration.py``: drift (0.2, -0.1) px/slice + 0.5 px
jitter, content constant along z, noise 1 % or 5 % of full scale; the error of slice ``k``
is the RMS distance between a 16 x 16 grid mapped by the found cumulative matrix and by the
truth; RMS and max over the slices.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import fourier_shift, gaussian_filter

from stack3d_core import ConfigError, parse_config
from stack3d_core.testing import run_step_on_arrays
from stack3d_core.testing.synth import SynthSpec, make_stack
from stack3d_steps._registration_matrices import chain, register_pair
from stack3d_steps._registration_phasecorr import phase_correlation, register_pair_phasecorr
from stack3d_steps.registration import RegistrationCalculation, RegistrationCalculationParams

from ..conftest import steps_host
from .test_registration import CALC, TRANS, grid_error, motion_stack, run_project, write_project

PC = "phase_correlation"


def _stats(err: np.ndarray) -> tuple[float, float]:
    return float(np.sqrt((err**2).mean())), float(err.max())


def _shifted_pair(drift: tuple[float, float], shape: tuple[int, int] = (128, 160), noise: float = 0.01):
    """Two slices, the second moved by ``drift`` (px, x = column, y = row) exactly."""
    stack = make_stack(SynthSpec(n_slices=2, shape=shape, seed=2, gains=False, background=False, stripes=False,
                                 noise_sigma=noise, nonuniform_z=False, dz_um=1e-6, jitter_px=0.0,
                                 drift_px_per_slice=drift, name_pattern="slice_{index:04d}_z={z:.8f}um.tif"))
    return stack, stack.volume()


def test_parameters_and_their_validation(tmp_path: Path) -> None:
    p = RegistrationCalculationParams()
    assert p.algorithm == "pystackreg" and p.upsample_factor == 1000  # PyStack3D parity by default
    with pytest.raises(ValueError, match="transformation = 'TRANSLATION'"):
        RegistrationCalculationParams(algorithm=PC, transformation="RIGID_BODY")
    host = steps_host()
    for transformation in ("RIGID_BODY", "SCALED_ROTATION", "AFFINE"):
        with pytest.raises(ConfigError) as info:
            parse_config({"process_steps": [CALC], CALC: {"algorithm": PC, "transformation": transformation}}, host,
                         project_dir=tmp_path)
        text = str(info.value)
        assert f"{CALC}: algorithm = 'phase_correlation'" in text and "transformation" in text
        assert transformation in text
    for table, key in (({"algorithm": "sift"}, "algorithm"), ({"upsample_factor": 0}, "upsample_factor"),
                       ({"upsample_factor": 2.5}, "upsample_factor")):
        with pytest.raises(ConfigError) as info:
            parse_config({"process_steps": [CALC], CALC: table}, host, project_dir=tmp_path)
        assert f"{CALC}.{key}" in str(info.value)
    config = parse_config({"process_steps": [CALC], CALC: {"algorithm": PC, "upsample_factor": 200,
                                                           "method": "global"}}, host, project_dir=tmp_path)
    assert config.steps[CALC].params.algorithm == PC


@pytest.mark.parametrize("shift", [(0.3, -0.7), (2.25, 1.1), (-5.4, 3.33), (17.61, -20.05)])
def test_a_fourier_shift_is_found_to_the_grid_step(shift: tuple[float, float]) -> None:
    """A periodic image moved by the Fourier shift theorem: the answer is exact up to the
    1/upsample_factor grid (here 0.001 px)."""
    img = gaussian_filter(np.random.default_rng(0).random((96, 128)), 2.0) * 1000
    mov = np.fft.ifft2(fourier_shift(np.fft.fft2(img), (shift[1], shift[0]))).real  # content moved by +shift
    dx, dy = phase_correlation(img, mov)
    assert abs(dx - shift[0]) <= 1.5e-3 and abs(dy - shift[1]) <= 1.5e-3, (dx, dy)
    coarse = phase_correlation(img, mov, 10)
    assert max(abs(coarse[0] - shift[0]), abs(coarse[1] - shift[1])) <= 0.06


@pytest.mark.parametrize("drift", [(0.3, -0.7), (5.25, 1.1), (-20.4, 13.3)])
def test_sign_convention_is_pystackregs_and_the_truths(drift: tuple[float, float]) -> None:
    """The pair matrix maps slice-0 coordinates to slice-1 coordinates (the truth's
    ``matrix(1)``), exactly as pystackreg's ``register(ref, mov)``."""
    stack, volume = _shifted_pair(drift)
    block = [(0, 128, 0, 160)]
    ours = register_pair_phasecorr(volume[0], volume[1], block, None)
    theirs = register_pair(volume[0], volume[1], "TRANSLATION", block, None)
    assert ours.shape == (1, 3, 3)
    np.testing.assert_allclose(ours[0, :2, :2], np.eye(2))
    np.testing.assert_allclose(ours[0], stack.matrix(1), atol=0.02)
    np.testing.assert_allclose(ours[0], theirs[0], atol=0.03)


def test_large_shifts_where_pystackreg_fails() -> None:
    stack, volume = _shifted_pair((40.2, -35.7))
    dx, dy = phase_correlation(volume[0], volume[1])
    np.testing.assert_allclose([dx, dy], stack.matrix(1)[:2, 2], atol=0.03)


def test_blocks_area_and_threshold() -> None:
    """Each block is registered on its own (the same translation here), the area restricts
    the pixels used, the threshold registers binary images; pystackreg agrees."""
    stack, volume = _shifted_pair((1.37, -0.62), shape=(160, 192))
    truth = stack.matrix(1)
    for params, tol in ((dict(nb_blocks=(2, 3)), 0.05), (dict(area=(20, 180, 10, 150)), 0.03),
                        (dict(threshold=float(np.median(volume[0]))), 0.1),
                        (dict(nb_blocks=(2, 2), area=(0, 160, 30, 150), threshold=100.0), 0.15)):
        ours = RegistrationCalculation(RegistrationCalculationParams(algorithm=PC, **params))
        theirs = RegistrationCalculation(RegistrationCalculationParams(**params))
        m = ours.measure_pair(volume[0], volume[1], 1)
        assert m.shape == (theirs.measure_pair(volume[0], volume[1], 1).shape[0], 3, 3)
        np.testing.assert_allclose(m, np.broadcast_to(truth, m.shape), atol=tol, err_msg=str(params))
        np.testing.assert_allclose(m, theirs.measure_pair(volume[0], volume[1], 1), atol=tol, err_msg=str(params))


def test_featureless_blocks_give_the_identity() -> None:
    flat = np.full((40, 48), 7, dtype=np.uint8)
    np.testing.assert_array_equal(register_pair_phasecorr(flat, flat, [(0, 40, 0, 48)], None), np.eye(3)[None])
    rng = np.random.default_rng(1)
    half = np.vstack([flat[:20], rng.integers(0, 255, (20, 48), dtype=np.uint8)])
    out = register_pair_phasecorr(half, half, [(0, 20, 0, 48), (20, 40, 0, 48)], None)
    np.testing.assert_allclose(out, np.tile(np.eye(3), (2, 1, 1)), atol=1e-9)
    tiny = rng.integers(0, 255, (4, 6), dtype=np.uint8)  # 2 x 2 blocks hold no frequency of the band
    out = register_pair_phasecorr(tiny, np.roll(tiny, 1, axis=1), [(0, 2, 0, 2), (2, 4, 2, 4)], None)
    np.testing.assert_array_equal(out, np.tile(np.eye(3), (2, 1, 1)))


def test_pipeline_chain_then_transformation(tmp_path: Path) -> None:
    """tmats.npy has the pystackreg layout, so registration_transformation is unchanged."""
    stack = motion_stack(12, shape=(96, 112), noise=0.01, seed=4)
    folder = write_project(tmp_path / "p", stack)
    run_project(folder, {"algorithm": PC}, {"mode": "edge"})
    calc = folder / "process" / CALC
    meta = json.loads((calc / "outputs/registration.json").read_text())
    assert meta["algorithm"] == PC and meta["method"] == "chain"
    assert "algorithm: phase_correlation (upsample_factor 1000)" in (calc / "outputs/log.txt").read_text()
    tmats = np.load(calc / "tmats.npy")
    assert tmats.shape == (12, 1, 3, 3)
    np.testing.assert_array_equal(tmats[..., :2, :2], np.broadcast_to(np.eye(2), (12, 1, 2, 2)))
    applied = np.load(folder / "process" / TRANS / "outputs/tmats_cumul.npy")
    np.testing.assert_allclose(applied, chain(tmats))
    assert grid_error(applied[:, 0], stack).max() < 0.05


_RESULTS: dict[float, dict[str, tuple[float, float]]] = {}


def _accuracy(noise: float, tmp: Path) -> dict[str, tuple[float, float]]:
    """``{"<algorithm> <method>": (rms, max)}`` over 200 slices (seed 0); the chain is that
    of the offset-1 pairs of the global run (the same registration calls)."""
    if noise not in _RESULTS:
        stack = motion_stack(200, noise=noise)
        volume = stack.volume()
        out = {}
        for algorithm in ("pystackreg", PC):
            step = RegistrationCalculation(RegistrationCalculationParams(method="global", algorithm=algorithm))
            work = tmp / f"{algorithm}_{noise}"
            _, state, _ = run_step_on_arrays(step, volume, workdir=work)
            pairs = np.load(work / CALC / "outputs/pairs.npz")
            one = pairs["pairs"][:, 1] - pairs["pairs"][:, 0] == 1
            chained = chain(np.concatenate([np.eye(3)[None, None], pairs["matrices"][one]]))
            out[f"{algorithm} global"] = _stats(grid_error(state.cumulative[:, 0], stack))
            out[f"{algorithm} chain"] = _stats(grid_error(chained[:, 0], stack))
        _RESULTS[noise] = out
    return _RESULTS[noise]


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.01, 0.05])
def test_issue_target_200_slices_global(noise: float, tmp_path: Path) -> None:
    """Issue target: RMS <= 0.1 px and max <= 0.3 px over 200 slices with the global method
    (measured: 0.011 / 0.019 px at 1 % noise, 0.037 / 0.072 px at 5 %)."""
    rms, worst = _accuracy(noise, tmp_path)[f"{PC} global"]
    assert rms <= 0.1 and worst <= 0.3, (rms, worst)


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.01, 0.05])
def test_at_least_as_accurate_as_pystackreg(noise: float, tmp_path: Path) -> None:
    """Chain: smaller RMS and max than pystackreg (measured 0.012 vs 0.067 px RMS at 1 %,
    0.083 vs 0.204 at 5 %). Global: smaller max, and RMS at most 10 % above pystackreg's
    (stated margin: at 5 % noise both global solutions reach the floor set by the noise of
    the reference slice, 0.037 vs 0.035 px; at 1 % phase correlation is 2 times better)."""
    res = _accuracy(noise, tmp_path)
    for method in ("chain", "global"):
        ours, theirs = res[f"{PC} {method}"], res[f"pystackreg {method}"]
        assert ours[1] <= theirs[1], (method, ours, theirs)
        assert ours[0] <= theirs[0] * (1.0 if method == "chain" else 1.1), (method, ours, theirs)
    if noise == 0.01:
        assert res[f"{PC} global"][0] <= res["pystackreg global"][0]
