"""destriping: accuracy on synthetic stripes (VSNR and wavelet–Fourier), numpy.fft left
alone, explicit backend choice, strict filter tables, shapes, a run on local processes.

VSNR runs stack3d's implementation by default on the CPU (``backend = "auto"``); the
accuracy and numpy.fft tests also run ``backend = "pyvsnr"``, with the same thresholds
(the two agree within one gray level: tests/steps/test_vsnr_fast.py).

Stripe energy (the accuracy criterion): with ``r = output - clean`` and ``s`` the exact
stripe image the generator added (``stack.stripes(k)``), the stripe energy left in a slice
is ``<r, s>² / <s, s>`` (the energy of ``r`` projected on ``s``); the reduction is
``1 - Σ_k E(output) / Σ_k E(input)`` over the slices.
"""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import ConfigError, StepError, parse_config, run
from stack3d_core.testing import check_step, run_step_on_arrays
from stack3d_core.testing.synth import SynthSpec, make_stack
from stack3d_steps import _destriping_algos as algos
from stack3d_steps.destriping import Destriping, DestripingParams, VsnrFilter, WaveletDecomposition

from ..conftest import steps_host

GABOR = VsnrFilter(name="Gabor", noise_level=20, sigma=(0.5, 200), theta=0)


def striped_stack(seed: int = 2, n: int = 3, shape: tuple[int, int] = (256, 256)):  # noqa: ANN201
    """Clean content plus full-height vertical stripes; every other defect off."""
    return make_stack(SynthSpec(n_slices=n, shape=shape, dtype="uint8", seed=seed, gains=False, background=False,
                                stripes=True, noise_sigma=0.0, nonuniform_z=False, drift_px_per_slice=(0.0, 0.0),
                                jitter_px=0.0, stripe_full_height_fraction=1.0, stripe_tilt_deg_max=0.0))


def stripe_metrics(stack, volume_in: np.ndarray, volume_out: np.ndarray) -> tuple[float, float, float]:  # noqa: ANN001
    """(stripe-energy reduction, mean correlation to the clean slices before, after)."""
    e_in = e_out = 0.0
    corr_in, corr_out = [], []
    for k in range(len(stack)):
        clean, s = stack.clean(k).astype(np.float64), stack.stripes(k).astype(np.float64)
        a, b = volume_in[k].astype(np.float64), volume_out[k].astype(np.float64)
        ss = float((s * s).sum())
        e_in += float(((a - clean) * s).sum()) ** 2 / ss
        e_out += float(((b - clean) * s).sum()) ** 2 / ss
        corr_in.append(np.corrcoef(a.ravel(), clean.ravel())[0, 1])
        corr_out.append(np.corrcoef(b.ravel(), clean.ravel())[0, 1])
    return 1.0 - e_out / e_in, float(np.mean(corr_in)), float(np.mean(corr_out))


def test_contract() -> None:
    check_step(Destriping)


@pytest.mark.parametrize("params", [
    DestripingParams(filters=(GABOR,), maxit=50),
    DestripingParams(filters=(GABOR,), maxit=50, backend="pyvsnr"),
    DestripingParams(wavelet_decomposition=WaveletDecomposition(wavelet="coif3", level=4, sigma=1.0)),
], ids=["vsnr", "vsnr-pyvsnr", "wavelet"])
def test_stripes_removed_without_losing_correlation(tmp_path: Path, params: DestripingParams) -> None:
    stack = striped_stack()
    volume = stack.volume()
    assert all(stack.stripes(k).std() > 1 for k in range(len(stack)))
    out, _, stats = run_step_on_arrays(Destriping(params), volume, workdir=tmp_path)
    assert out.shape == volume.shape and out.dtype == volume.dtype
    reduction, corr_in, corr_out = stripe_metrics(stack, volume, out)
    assert reduction >= 0.80, reduction
    assert corr_out >= corr_in, (corr_in, corr_out)
    assert stats.shape == (len(stack), 3, 3)


@pytest.mark.parametrize("backend", ["auto", "pyvsnr"])
def test_numpy_fft_is_numpys_own_after_vsnr(tmp_path: Path, backend: str) -> None:
    own = sys.modules["numpy.fft"]
    run_step_on_arrays(Destriping(DestripingParams(filters=(GABOR,), maxit=3, backend=backend)),
                       striped_stack(n=1, shape=(32, 48)).volume(), workdir=tmp_path)
    assert np.fft is own and np.fft.__name__ == "numpy.fft"
    assert algos.numpy_fft_is_pristine()


def test_the_public_pyvsnr_entry_point_is_undone_even_on_error() -> None:
    # the fallback for a pyvsnr without vsnr2d_py: vsnr2d(algo='numpy') patches numpy.fft
    own = sys.modules["numpy.fft"]
    image = striped_stack(n=1, shape=(32, 48)).observed(0).astype(np.float32)
    filters = [GABOR.as_pyvsnr()]
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(algos.patched_vsnr2d(image, filters, 3, 0.0)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and np.fft is own
    with pytest.raises(Exception):  # noqa: B017 - whatever pyvsnr raises on a bad filter
        algos.patched_vsnr2d(image, [{"name": "Gabor", "noise_level": 1}], 3, 0.0)
    assert np.fft is own
    # both paths compute the same thing (same pyFFTW transforms)
    ours = algos.vsnr_destripe(image, filters, maxit=3, cvg_threshold=0.0)
    np.testing.assert_allclose(ours, results[0], rtol=0, atol=1e-3)


def test_backend_is_chosen_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    assert algos.requested_device("cpu", {"STACK3D_DEVICE": "gpu"}) == "cpu"
    assert algos.requested_device("auto", {"STACK3D_DEVICE": "gpu"}) == "gpu"
    assert algos.requested_device("auto", {"STACK3D_DEVICE": ""}) == "auto"
    with pytest.raises(ValueError, match="STACK3D_DEVICE"):
        algos.requested_device("auto", {"STACK3D_DEVICE": "tpu"})
    fake = types.ModuleType("cupy")
    fake.is_available = lambda: False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert algos.resolve_backend("auto") == "numpy"  # importable is not enough (pyvsnr's 'auto' would crash)
    assert algos.resolve_backend("cpu") == "numpy"
    with pytest.raises(RuntimeError, match="CuPy"):
        algos.resolve_backend("gpu")
    fake.is_available = lambda: True  # type: ignore[attr-defined]
    assert algos.resolve_backend("auto") == "cupy"
    assert algos.resolve_backend("cpu") == "numpy"


def test_wavelet_keeps_the_shape_and_a_stripe_free_image() -> None:
    rng = np.random.default_rng(0)
    for shape in [(37, 53), (64, 64), (65, 80)]:
        flat = np.full(shape, 100.0)
        out = algos.wavelet_destripe(flat, wavelet="coif3", level=2, sigma=4)
        assert out.shape == shape  # PyStack3D grows odd sizes by one pixel
        np.testing.assert_allclose(out, flat, atol=1e-9)
        # a purely vertical stripe pattern (constant along columns) is removed from the details
        stripes = np.tile(rng.normal(0, 10, shape[1]), (shape[0], 1))
        assert algos.wavelet_destripe(flat + stripes, wavelet="haar", level=1, sigma=1).std() < stripes.std()
    assert algos.stripe_damping(8, 4.0)[0] == 0.0


def config_issues(table: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"process_steps": ["destriping"], "destriping": table}, steps_host(),
                     project_dir=Path("/tmp"))
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize(("table", "expected"), [
    ({"filters": [{"name": "Gabor", "sigma": [0.5, 200], "theta": 0}]}, "destriping.filters[0].noise_level"),
    ({"filters": [{"name": "gabor", "noise_level": 2, "sigma": [1, 2]}]}, "destriping.filters[0].name"),
    ({"filters": [{"name": "Gabor", "noise_level": 2}]}, "sigma"),
    ({"filters": [{"name": "Gabor", "noise_level": 2, "sigma": [1]}]}, "destriping.filters[0].sigma"),
    ({"filters": [{"name": "Gabor", "noise_level": -2, "sigma": [1, 2]}]}, "noise_level"),
    ({"filters": [{"name": "Dirac", "noise_level": 2, "alpha": 1}]}, "alpha"),
    ({"filters": []}, "destriping.filters"),
    ({"maxit": 0}, "destriping.maxit"),
    ({"cvg_threshold": -1.0}, "destriping.cvg_threshold"),
    ({"device": "tpu"}, "destriping.device"),
    ({"backend": "fast"}, "destriping.backend"),
    ({"backend": "stack3d", "device": "gpu"}, "backend = 'stack3d' runs on the CPU"),
    ({"wavelet_decomposition": {"wavelet": "coif99"}}, "wavelet_decomposition.wavelet"),
    ({"wavelet_decomposition": {"level": 0}}, "destriping.wavelet_decomposition"),
    ({"wavelet_decomposition": {"sigma": 0}}, "destriping.wavelet_decomposition"),
])
def test_bad_parameters_are_refused_with_the_key_named(table: dict, expected: str) -> None:
    issues = config_issues(table)
    assert any(expected in issue for issue in issues), issues


def test_pystack3d_tables_are_accepted() -> None:
    host = steps_host()
    table = {"maxit": 50, "cvg_threshold": 1e-2, "filters": [
        {"name": "Gabor", "noise_level": 30, "sigma": [0.5, 80], "theta": 0},
        {"name": "Gabor", "noise_level": 80, "sigma": [0.5, 200], "theta": 0},
        {"name": "Dirac", "noise_level": 10, "sigma": [1, 1], "theta": 5}]}  # Dirac: sigma, theta ignored
    config = parse_config({"process_steps": ["destriping"], "destriping": table}, host, project_dir=Path("/tmp"))
    params = config.steps["destriping"].params
    assert len(params.filters) == 3 and params.maxit == 50 and params.cvg_threshold == 1e-2
    assert params.filters[2].as_pyvsnr() == {"name": "Dirac", "noise_level": 10.0}


def write_project(folder: Path, volume: np.ndarray, names: tuple[str, ...]) -> None:
    folder.mkdir(parents=True)
    for name, image in zip(names, volume):
        tifffile.imwrite(folder / name, image, photometric="minisblack")


def test_no_method_fails_before_reading_slices(tmp_path: Path) -> None:
    stack = striped_stack(n=2, shape=(32, 32))
    write_project(tmp_path / "p", stack.volume(), stack.names)
    host = steps_host()
    config = parse_config({"process_steps": ["destriping"], "destriping": {}}, host, project_dir=tmp_path / "p")
    with pytest.raises(StepError, match="filters.*wavelet_decomposition"):
        run(config, host=host)


@pytest.mark.slow
def test_project_on_local_processes(tmp_path: Path) -> None:
    stack = striped_stack(n=4, shape=(64, 64))
    folder = tmp_path / "p"
    write_project(folder, stack.volume(), stack.names)
    host = steps_host()
    config = parse_config({"process_steps": ["destriping"], "engine": {"executor": "processes", "workers": 2},
                           "destriping": {"maxit": 20, "filters": [{"name": "Gabor", "noise_level": 20,
                                                                    "sigma": [0.5, 200], "theta": 0}]}},
                          host, project_dir=folder)
    run(config, host=host)
    out_dir = folder / "process/destriping"
    assert sorted(p.name for p in out_dir.glob("*.tif")) == sorted(stack.names)
    serial, _, _ = run_step_on_arrays(Destriping(DestripingParams(filters=(GABOR,), maxit=20)), stack.volume(),
                                      workdir=tmp_path / "serial")
    for k, name in enumerate(stack.names):
        np.testing.assert_array_equal(tifffile.imread(out_dir / name), serial[k])
    outputs = out_dir / "outputs"
    assert (outputs / "stats.npy").is_file() and "VSNR" in (outputs / "log.txt").read_text()
    assert (outputs / "destriping.png").stat().st_size > 1000


class _DeviceArray(np.ndarray):
    """A numpy array that must be brought back with ``.get()``, as CuPy's."""

    def get(self) -> np.ndarray:
        return np.asarray(self)


def test_the_gpu_code_path_runs_on_a_numpy_stand_in_for_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CuPy branch of ``vsnr_destripe`` (pyvsnr with ``xp=cupy``, ``.get()`` back to the
    host) with a CuPy stand-in that is numpy: same result as the CPU path. This checks the
    GPU path's code on a machine without a GPU; the speed on a GPU is measured by
    ``benchmarks/vsnr_speed.py`` where one is available."""
    fake = types.ModuleType("cupy")
    fake.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    calls = {"asarray": 0}

    def asarray(a, dtype=None):
        calls["asarray"] += 1
        return np.asarray(a, dtype=dtype).view(_DeviceArray)

    fake.asarray = asarray  # type: ignore[attr-defined]
    fake.is_available = lambda: True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    rng = np.random.default_rng(3)
    image = (1000 + 200 * rng.random((48, 64)) + np.tile(80 * rng.random(64), (48, 1))).astype(np.float32)
    filters = [{"name": "Gabor", "noise_level": 20, "sigma": (0.5, 30), "theta": 0}]
    assert algos.resolve_implementation("auto", "auto") == "cupy"
    on_gpu_path = algos.vsnr_destripe(image, filters, maxit=8, cvg_threshold=0.0, backend="cupy")
    on_cpu = algos.vsnr_destripe(image, filters, maxit=8, cvg_threshold=0.0, backend="numpy")
    assert on_gpu_path.dtype == np.float32 and type(on_gpu_path) is np.ndarray
    np.testing.assert_allclose(on_gpu_path, on_cpu, rtol=0, atol=1e-3 * float(image.max()))
    assert np.abs(on_gpu_path - image).max() > 1  # it did remove something
    assert calls["asarray"] > 0  # pyvsnr did go through the stand-in namespace
