"""stack3d's VSNR (:mod:`stack3d_steps._vsnr_fast`, the destriping step's default on the CPU):
same results as pyvsnr, cached plans, stateless work arrays, numpy.fft untouched, and the
step's backend choice.

Tolerances (docs/steps/destriping.md, "Equivalence with pyvsnr"): both implementations run
the same algorithm in float32 and differ by rounding amplified by the iteration. Measured
over 228 cases (6 filter sets, 7 sizes from 64x80 to 512², 3 maxit/cvg_threshold pairs,
uint8 and uint16 stripes + noise): the same iteration count in 226, and there at most
6.8e-6 of the slice maximum (0.41 gray level on uint16), so at most 1 gray level once
rounded. In the other 2 a criterion fell within 1e-6 of the threshold and the counts
differ by one; against pyvsnr run for the same number of iterations they agree within
5.2e-6 of the maximum. The tests assert iteration counts within one and
``|ours − pyvsnr| <= 1e-5 · max(slice)`` for the same number of iterations.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from stack3d_core.testing import run_step_on_arrays
from stack3d_core.testing.synth import SynthSpec, make_stack
from stack3d_steps import _destriping_algos as algos
from stack3d_steps import _vsnr_fast as fast
from stack3d_steps.destriping import Destriping, DestripingParams, VsnrFilter

RTOL_OF_MAX = 1e-5
"""|ours − pyvsnr| bound, as a fraction of the slice maximum (measured worst case: 7.3e-6)."""

FILTERS = {
    "gabor": [{"name": "Gabor", "noise_level": 20, "sigma": (0.5, 200), "theta": 0}],
    "two-gabors": [{"name": "Gabor", "noise_level": 30, "sigma": (0.5, 80), "theta": 0},
                   {"name": "Gabor", "noise_level": 80, "sigma": (0.5, 200), "theta": 0}],
    "gabor+dirac": [{"name": "Gabor", "noise_level": 20, "sigma": (1.5, 60), "theta": 5},
                    {"name": "Dirac", "noise_level": 10}],
    "tilted-gabor": [{"name": "Gabor", "noise_level": 5, "sigma": (2, 20), "theta": 45}],
}


def striped(shape: tuple[int, int], dtype: str = "uint16", seed: int = 3, n: int = 1) -> np.ndarray:
    """Stripes (half of them full height) and a little noise, every other defect off."""
    stack = make_stack(SynthSpec(n_slices=n, shape=shape, dtype=dtype, seed=seed, gains=False, background=False,
                                 stripes=True, noise_sigma=2.0, nonuniform_z=False, drift_px_per_slice=(0.0, 0.0),
                                 jitter_px=0.0, stripe_full_height_fraction=0.5))
    return stack.volume()


def pyvsnr_reference(image: np.ndarray, filters: list[dict], maxit: int, cvg_threshold: float) -> tuple[np.ndarray, int]:
    """pyvsnr's numpy path (pyFFTW FFTs, norm=False) on the float32 slice, as the pyvsnr backend
    calls it, and its iteration count (``len(cvg) + 1``)."""
    module = sys.modules.get("pyvsnr.vsnr2d") or importlib.import_module("pyvsnr.vsnr2d")
    impl = getattr(module, "vsnr2d_py", None)
    if impl is None:
        pytest.skip("this pyvsnr has no vsnr2d_py")
    out, cvg = impl(np.asarray(image, dtype=np.float32), filters, maxit=maxit, xp=algos._numpy_namespace(),
                    norm=False, cvg_threshold=cvg_threshold, return_cvg=True)
    return np.asarray(out, dtype=np.float32), len(cvg) + 1


@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("shape", [(64, 80), (63, 81), (97, 60)], ids=["even", "odd", "non-square"])
@pytest.mark.parametrize(("maxit", "cvg_threshold"), [(30, 0.0), (50, 1e-2), (60, 1e-3)])
def test_matches_pyvsnr(name: str, shape: tuple[int, int], maxit: int, cvg_threshold: float) -> None:
    image = striped(shape)[0]
    filters = FILTERS[name]
    ref, ref_iterations = pyvsnr_reference(image, filters, maxit, cvg_threshold)
    ours = fast.vsnr_stack3d(image, filters, maxit=maxit, cvg_threshold=cvg_threshold)
    assert ours.image.dtype == np.float32 and ours.image.shape == image.shape
    assert abs(ours.iterations - ref_iterations) <= 1, (ours.iterations, ref_iterations)
    if cvg_threshold == 0:
        assert ours.iterations == ref_iterations == maxit
    elif ours.iterations != ref_iterations:  # a criterion at the threshold within rounding
        ref, _ = pyvsnr_reference(image, filters, ours.iterations, 0.0)
    np.testing.assert_allclose(ours.image, ref, rtol=0, atol=RTOL_OF_MAX * float(image.max()))
    rounded = np.abs(np.rint(ours.image).astype(np.int64) - np.rint(ref).astype(np.int64))
    assert rounded.max() <= 1
    assert np.abs(ours.image - image).max() > 100 * RTOL_OF_MAX * float(image.max())  # something was removed


def test_iterations_and_criteria_as_pyvsnr() -> None:
    image = striped((48, 64))[0]
    filters = FILTERS["gabor"]
    one = fast.vsnr_stack3d(image, filters, maxit=1)
    assert one.iterations == 1 and one.criteria == []
    np.testing.assert_allclose(one.image, image, rtol=1e-6)  # X̂ = 0 after one iteration
    # the criterion is 1 at the 2nd iteration (X̂ was 0): a threshold of 1 stops there
    two = fast.vsnr_stack3d(image, filters, maxit=10, cvg_threshold=1.0)
    assert two.iterations == pyvsnr_reference(image, filters, 10, 1.0)[1] == 2 and two.criteria == [1.0]
    # criteria are only computed when needed, unless asked for; they match pyvsnr's list
    assert fast.vsnr_stack3d(image, filters, maxit=12).criteria == []
    tracked = fast.vsnr_stack3d(image, filters, maxit=12, track_criteria=True)
    module = importlib.import_module("pyvsnr.vsnr2d")
    _, cvg = module.vsnr2d_py(image.astype(np.float32), filters, maxit=12, xp=algos._numpy_namespace(), norm=False,
                              cvg_threshold=0.0, return_cvg=True)
    assert tracked.iterations == 12 and len(tracked.criteria) == len(cvg) == 11
    np.testing.assert_allclose(tracked.criteria, cvg, rtol=1e-3, atol=1e-5)


def test_plan_is_computed_once_per_shape_and_filter_set() -> None:
    fast.clear_plan_cache()
    a, b = striped((40, 56), n=2)
    gabor_dirac = [{"name": "Gabor", "noise_level": 20, "sigma": [0.5, 200], "theta": 0},
                   {"name": "Dirac", "noise_level": 10}]
    fast.vsnr_stack3d(a, gabor_dirac, maxit=5)
    fast.vsnr_stack3d(b, gabor_dirac, maxit=5)  # another slice (another norm): same plan
    info = fast.plan_cache_info()
    assert (info.misses, info.hits) == (1, 1)
    # the same filters written differently (tuple sigma, int levels, a Dirac with sigma/theta)
    same = [{"name": "Gabor", "noise_level": 20.0, "sigma": (0.5, 200.0), "theta": 0.0},
            {"name": "Dirac", "noise_level": 10, "sigma": [1, 1], "theta": 5}]
    assert fast.filters_key(same) == fast.filters_key(gabor_dirac)
    fast.vsnr_stack3d(a, same, maxit=5)
    assert fast.plan_cache_info().hits == 2
    fast.vsnr_stack3d(a[:, :-1], same, maxit=5)  # another shape: a new plan
    assert fast.plan_cache_info().misses == 2
    plan = fast.vsnr_plan((40, 56), same)
    assert plan.psi0.shape == plan.q0.shape == (40, 29) and plan.psi0.dtype == np.float32
    assert not plan.psi0.flags.writeable and not plan.q0.flags.writeable  # shared by every slice


def test_scaling_and_special_slices() -> None:
    image = striped((40, 56))[0].astype(np.float32)
    filters = FILTERS["gabor"]
    base = fast.vsnr_stack3d(image, filters, maxit=20).image
    # norm=False: divided by the maximum, multiplied back, so the result scales with the slice
    np.testing.assert_allclose(fast.vsnr_stack3d(image * 3.5, filters, maxit=20).image, base * 3.5,
                               rtol=0, atol=1e-5 * 3.5 * float(image.max()))
    zeros = fast.vsnr_stack3d(np.zeros((8, 9), np.uint16), filters, maxit=5)
    assert zeros.iterations == 0 and zeros.image.dtype == np.float32 and not zeros.image.any()
    flat = fast.vsnr_stack3d(np.full((8, 9), 7, np.uint8), filters, maxit=5)
    np.testing.assert_allclose(flat.image, 7.0, atol=1e-5)  # no gradient: nothing to remove
    with pytest.raises(ValueError, match="2D"):
        fast.vsnr_stack3d(np.ones((2, 8, 9)), filters, maxit=5)
    with pytest.raises(ValueError, match="maxit"):
        fast.vsnr_stack3d(image, filters, maxit=0)
    with pytest.raises(ValueError, match="filter name"):
        fast.vsnr_stack3d(image, [{"name": "gabor", "noise_level": 1, "sigma": (1, 1), "theta": 0}], maxit=5)


def test_work_arrays_carry_no_state_between_slices_or_threads() -> None:
    a, b = striped((48, 64), n=2)
    filters = FILTERS["two-gabors"]
    first = fast.vsnr_stack3d(a, filters, maxit=15).image
    fast.vsnr_stack3d(b, filters, maxit=15, cvg_threshold=1e-2)
    np.testing.assert_array_equal(fast.vsnr_stack3d(a, filters, maxit=15).image, first)
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, fast.vsnr_stack3d(
        (a, b)[k % 2], filters, maxit=15).image)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(4):
        np.testing.assert_array_equal(results[k], first if k % 2 == 0 else fast.vsnr_stack3d(b, filters, maxit=15).image)
    # FFT threads: the same result up to rounding
    np.testing.assert_allclose(fast.vsnr_stack3d(a, filters, maxit=15, threads=2).image, first,
                               rtol=0, atol=RTOL_OF_MAX * float(a.max()))
    fast.release_workspace()
    np.testing.assert_array_equal(fast.vsnr_stack3d(a, filters, maxit=15).image, first)


def test_needs_neither_pyvsnr_nor_pyfftw_and_leaves_numpy_fft_alone() -> None:
    code = (
        "import sys, numpy as np\n"
        "from stack3d_steps._vsnr_fast import vsnr_stack3d\n"
        "from stack3d_steps._destriping_algos import vsnr_destripe, numpy_fft_is_pristine\n"
        "img = np.add.outer(np.arange(32.0), np.tile([0.0, 9.0], 20))\n"
        "vsnr_stack3d(img, [{'name': 'Gabor', 'noise_level': 20, 'sigma': (0.5, 200), 'theta': 0}], maxit=5)\n"
        "vsnr_destripe(img, [{'name': 'Dirac', 'noise_level': 2}], maxit=5, cvg_threshold=0.0, backend='stack3d')\n"
        "assert 'pyvsnr' not in sys.modules and 'pyfftw' not in sys.modules, sorted(sys.modules)\n"
        "assert numpy_fft_is_pristine() and np.fft is sys.modules['numpy.fft']\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_backend_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("cupy")
    fake.is_available = lambda: False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", fake)
    resolve = algos.resolve_implementation
    assert [resolve(b, "auto") for b in ("auto", "stack3d", "pyvsnr")] == ["stack3d", "stack3d", "numpy"]
    assert [resolve(b, "cpu") for b in ("auto", "stack3d", "pyvsnr")] == ["stack3d", "stack3d", "numpy"]
    with pytest.raises(RuntimeError, match="CuPy"):
        resolve("auto", "gpu")
    assert resolve("stack3d", "gpu") == "stack3d"  # the step warns (or refuses an explicit device = 'gpu')
    fake.is_available = lambda: True  # type: ignore[attr-defined]
    assert [resolve(b, "auto") for b in ("auto", "stack3d", "pyvsnr")] == ["cupy", "stack3d", "cupy"]
    assert [resolve(b, "gpu") for b in ("auto", "stack3d", "pyvsnr")] == ["cupy", "stack3d", "cupy"]
    assert [resolve(b, "cpu") for b in ("auto", "stack3d", "pyvsnr")] == ["stack3d", "stack3d", "numpy"]
    with pytest.raises(ValueError, match="backend"):
        resolve("fast", "cpu")
    with pytest.raises(ValueError, match="backend"):
        algos.vsnr_destripe(np.ones((4, 4)), FILTERS["gabor"], maxit=2, cvg_threshold=0.0, backend="fast")


def test_step_backends_agree_and_remove_the_stripes(tmp_path: Path) -> None:
    stack = make_stack(SynthSpec(n_slices=2, shape=(96, 128), dtype="uint16", seed=2, gains=False, background=False,
                                 stripes=True, noise_sigma=0.0, nonuniform_z=False, drift_px_per_slice=(0.0, 0.0),
                                 jitter_px=0.0, stripe_full_height_fraction=1.0, stripe_tilt_deg_max=0.0))
    volume = stack.volume()
    gabor = (VsnrFilter(name="Gabor", noise_level=20, sigma=(0.5, 200), theta=0),)
    outs = {}
    for backend in ("auto", "stack3d", "pyvsnr"):
        params = DestripingParams(filters=gabor, maxit=50, cvg_threshold=1e-2, device="cpu", backend=backend)
        outs[backend], _, _ = run_step_on_arrays(Destriping(params), volume, workdir=tmp_path / backend)
        log = (tmp_path / backend / "destriping/outputs/log.txt").read_text()
        assert ("VSNR (pyvsnr, numpy" if backend == "pyvsnr" else "VSNR (stack3d") in log, log
    np.testing.assert_array_equal(outs["auto"], outs["stack3d"])  # the CPU default
    diff = np.abs(outs["stack3d"].astype(np.int64) - outs["pyvsnr"].astype(np.int64))
    assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())
    energy = {"in": 0.0, "out": 0.0}  # stripe energy <residual, s>² / <s, s> (test_destriping.py)
    for k in range(len(stack)):
        s, clean = stack.stripes(k).astype(np.float64), stack.clean(k).astype(np.float64)
        for key, image in (("in", volume[k]), ("out", outs["stack3d"][k])):
            energy[key] += float(((image - clean) * s).sum()) ** 2 / float((s * s).sum())
    assert 1.0 - energy["out"] / energy["in"] >= 0.9, energy


def test_stack3d_backend_with_a_gpu_from_the_environment_warns_and_runs_on_the_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(algos.DEVICE_ENV, "gpu")
    volume = striped((32, 40), dtype="uint8")
    params = DestripingParams(filters=(VsnrFilter(name="Gabor", noise_level=20, sigma=(0.5, 200)),), maxit=5,
                              backend="stack3d")
    with caplog.at_level("WARNING"):
        out, _, _ = run_step_on_arrays(Destriping(params), volume, workdir=tmp_path)
    assert "runs on the CPU" in caplog.text
    assert out.shape == volume.shape
