"""The two destriping algorithms of the ``destriping`` step, and the choice of backend.

* :func:`vsnr_destripe`: VSNR (Fehrenbach, Weiss & Lorenzo 2012), either stack3d's own CPU
  implementation (:mod:`stack3d_steps._vsnr_fast`, float32, ``scipy.fft``, filters cached
  per slice shape: about 3x faster than pyvsnr on the CPU, the default there) or ``pyvsnr``
  on numpy (FFTs by pyFFTW when installed, else numpy's own) or on CuPy.
* :func:`wavelet_destripe`: wavelet–Fourier filtering of vertical stripes (Münch et al.,
  Opt. Express 17, 8567, 2009).

Images are 2D arrays indexed ``[row, column]``; "vertical" stripes are constant along a
column (they run from the top row downward), which is what both methods remove.

**numpy.fft stays numpy's own.** ``pyvsnr.vsnr2d(..., algo='numpy')`` assigns
``numpy.fft = pyfftw.interfaces.numpy_fft`` for the whole process, and never undoes it.
:func:`vsnr_destripe` does not call that entry point: it hands pyvsnr's array code
(``pyvsnr.vsnr2d.vsnr2d_py``) a private namespace whose ``fft`` is pyFFTW's, so the global
``numpy.fft`` is never touched and no lock is needed. Should a later pyvsnr drop
``vsnr2d_py``, :func:`patched_vsnr2d` calls the public function under a process-wide lock
and restores ``numpy.fft`` afterwards (also on error); a guard restores it after every call
either way.

**Kernels and FFT plans** are recomputed by pyvsnr for every slice (the Gabor kernels and
the operators Φ only depend on the image shape and the filters); the stack3d backend
computes them once per shape and filter set (:func:`stack3d_steps._vsnr_fast.vsnr_plan`).

**Which implementation** (:func:`resolve_implementation`): the step's ``backend``
(``"auto"``, ``"stack3d"``, ``"pyvsnr"``) and the requested device. ``"auto"`` takes pyvsnr
on CuPy where :func:`resolve_backend` finds a usable GPU, stack3d's implementation
otherwise; ``"stack3d"`` always runs on the CPU; ``"pyvsnr"`` is the previous behaviour.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "DEVICE_ENV",
    "numpy_fft_is_pristine",
    "patched_vsnr2d",
    "resolve_backend",
    "resolve_implementation",
    "vsnr_destripe",
    "wavelet_destripe",
]

DEVICE_ENV = "STACK3D_DEVICE"
"""Environment variable read when the step's ``device`` is ``"auto"``: ``cpu``, ``gpu`` or
``auto`` (consulted before ``[engine] device``)."""

BACKENDS = ("auto", "stack3d", "pyvsnr")
"""Values of the step's ``backend``: see :func:`resolve_implementation`."""

_FFT_LOCK = threading.Lock()


def _numpy_fft_module() -> types.ModuleType:
    """numpy's own ``numpy.fft`` module (what ``import numpy.fft`` registered)."""
    return importlib.import_module("numpy.fft")


def numpy_fft_is_pristine() -> bool:
    """Whether the attribute ``numpy.fft`` is numpy's own FFT module."""
    return np.fft is _numpy_fft_module() and np.fft.__name__ == "numpy.fft"


def _restore_numpy_fft() -> None:
    own = _numpy_fft_module()
    if np.fft is not own:
        np.fft = own  # type: ignore[misc]


# -- backend ---------------------------------------------------------------------------
def cupy_usable() -> bool:
    """CuPy importable and a CUDA device present (never raises)."""
    try:
        import cupy
    except Exception:  # noqa: BLE001 - ImportError, or a broken CUDA install
        return False
    try:
        return bool(cupy.is_available())
    except Exception:  # noqa: BLE001
        return False


def requested_device(param: str, environ: Mapping[str, str] | None = None) -> str:
    """``"cpu"``, ``"gpu"`` or ``"auto"``: the step parameter wins unless it is ``"auto"``,
    then ``STACK3D_DEVICE`` (ignored when empty; any other value is an error)."""
    if param != "auto":
        return param
    env = (environ if environ is not None else os.environ).get(DEVICE_ENV, "").strip().lower()
    if env in ("", "auto"):
        return "auto"
    if env not in ("cpu", "gpu"):
        raise ValueError(f"{DEVICE_ENV}={env!r}: expected cpu, gpu or auto")
    return env


def resolve_backend(device: str) -> str:
    """The pyvsnr backend for a requested device: ``"numpy"`` or ``"cupy"``.

    Never pyvsnr's ``algo='auto'``, which picks CuPy as soon as it imports (and crashes
    without a GPU). ``"auto"`` takes CuPy only when ``cupy.is_available()``.

    :raises RuntimeError: ``device == "gpu"`` and CuPy or a CUDA device is missing.
    """
    if device == "cpu":
        return "numpy"
    usable = cupy_usable()
    if device == "gpu" and not usable:
        raise RuntimeError("destriping.device = 'gpu' (or STACK3D_DEVICE=gpu) but CuPy with a CUDA "
                           "device is not available in this process; install stack3d[gpu] or use 'cpu'")
    return "cupy" if usable else "numpy"


def resolve_implementation(backend: str, device: str) -> str:
    """The VSNR implementation for the step's ``backend`` and a requested device (``"cpu"``,
    ``"gpu"`` or ``"auto"``, as :func:`resolve_backend` takes it):

    * ``"stack3d"``: stack3d's CPU implementation, whatever the device;
    * ``"pyvsnr"``: :func:`resolve_backend` (``"numpy"`` or ``"cupy"``);
    * ``"auto"``: ``"cupy"`` where :func:`resolve_backend` picks CuPy, else ``"stack3d"``.

    Returns ``"stack3d"``, ``"numpy"`` (pyvsnr on numpy + pyFFTW) or ``"cupy"`` (pyvsnr on CuPy),
    the ``backend`` argument of :func:`vsnr_destripe`.

    :raises RuntimeError: as :func:`resolve_backend`, when a GPU is required but missing.
    :raises ValueError: an unknown ``backend``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"destriping.backend = {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "stack3d":
        return "stack3d"
    if backend == "auto" and device == "cpu":
        return "stack3d"
    chosen = resolve_backend(device)
    if backend == "auto" and chosen == "numpy":
        return "stack3d"
    return chosen


# -- VSNR ------------------------------------------------------------------------------
class _NumpyWithFFTW(types.ModuleType):
    """numpy, except that ``fft`` is pyFFTW's numpy-compatible interface (private to the
    VSNR call: the real ``numpy.fft`` is untouched)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


_XP: dict[str, Any] = {}


def _numpy_namespace() -> Any:
    """The array namespace for pyvsnr on the CPU: numpy with pyFFTW FFTs (as pyvsnr's
    ``algo='numpy'``), or plain numpy when pyFFTW is missing."""
    if "numpy" not in _XP:
        try:
            import pyfftw
            import pyfftw.interfaces.numpy_fft as fftw
        except ImportError:
            _XP["numpy"] = np
        else:
            pyfftw.interfaces.cache.enable()  # pyfftw's own plan cache, as pyvsnr does
            xp = _NumpyWithFFTW("numpy_with_fftw")
            xp.fft = fftw  # type: ignore[attr-defined]
            _XP["numpy"] = xp
    return _XP["numpy"]


def patched_vsnr2d(image: np.ndarray, filters: Sequence[Mapping[str, Any]], maxit: int,
                   cvg_threshold: float) -> np.ndarray:
    """``pyvsnr.vsnr2d(..., algo='numpy', norm=False)`` with ``numpy.fft`` saved before and
    restored after the call (also on error), under a process-wide lock so concurrent
    callers cannot restore each other's state mid-call."""
    from pyvsnr import vsnr2d

    with _FFT_LOCK:
        saved = np.fft
        try:
            return vsnr2d(image, list(filters), maxit=maxit, algo="numpy", norm=False,
                          cvg_threshold=cvg_threshold)
        finally:
            np.fft = saved  # type: ignore[misc]


def vsnr_destripe(image: np.ndarray, filters: Sequence[Mapping[str, Any]], *, maxit: int,
                  cvg_threshold: float, backend: str = "numpy", threads: int = 1) -> np.ndarray:
    """VSNR with ``norm=False`` (as PyStack3D): the image is divided by its maximum, cleaned,
    and multiplied back. Returns float32 (not clipped nor cast: the engine rounds).

    :param filters: pyvsnr filter dicts (``name``, ``noise_level``, ``sigma``, ``theta``).
    :param backend: ``"stack3d"`` (:func:`stack3d_steps._vsnr_fast.vsnr_stack3d`), or pyvsnr on
        ``"numpy"`` or ``"cupy"`` (see :func:`resolve_implementation`).
    :param threads: FFT threads of the ``"stack3d"`` backend (``scipy.fft`` workers).
    """
    work = np.asarray(image, dtype=np.float32)
    vmax = float(work.max()) if work.size else 0.0
    if not np.isfinite(vmax) or vmax <= 0.0:
        return work  # all-zero (or non-finite) slice: pyvsnr would divide by 0
    if backend == "stack3d":
        from ._vsnr_fast import vsnr_stack3d

        return vsnr_stack3d(work, filters, maxit=maxit, cvg_threshold=cvg_threshold, threads=threads).image
    if backend not in ("numpy", "cupy"):
        raise ValueError(f"unknown VSNR backend {backend!r}: expected 'stack3d', 'numpy' or 'cupy'")
    module = sys.modules.get("pyvsnr.vsnr2d") or importlib.import_module("pyvsnr.vsnr2d")
    impl = getattr(module, "vsnr2d_py", None)
    try:
        if backend == "cupy":
            import cupy

            if impl is None:
                from pyvsnr import vsnr2d

                out = vsnr2d(work, list(filters), maxit=maxit, algo="cupy", norm=False,
                             cvg_threshold=cvg_threshold)
            else:
                out = impl(work, list(filters), maxit=maxit, xp=cupy, norm=False,
                           cvg_threshold=cvg_threshold)
            return np.asarray(out.get() if hasattr(out, "get") else out, dtype=np.float32)
        if impl is None:  # a pyvsnr without the array-level function
            return np.asarray(patched_vsnr2d(work, filters, maxit, cvg_threshold), dtype=np.float32)
        return np.asarray(impl(work, list(filters), maxit=maxit, xp=_numpy_namespace(), norm=False,
                               cvg_threshold=cvg_threshold), dtype=np.float32)
    finally:
        if not numpy_fft_is_pristine():  # guard: whatever pyvsnr does, numpy.fft is restored
            with _FFT_LOCK:
                _restore_numpy_fft()


# -- wavelet–Fourier ---------------------------------------------------------------------
def stripe_damping(n: int, sigma: float) -> np.ndarray:
    """``1 - exp(-m² / (2 σ²))`` for the rfft frequencies ``m = 0 .. n // 2`` of a length-``n``
    axis (``m`` in cycles per length): 0 at ``m = 0``, close to 1 for ``|m| >> σ``."""
    m = np.arange(n // 2 + 1, dtype=np.float64)
    return -np.expm1(-(m * m) / (2.0 * sigma * sigma))


def wavelet_destripe(image: np.ndarray, *, wavelet: str, level: int, sigma: float) -> np.ndarray:
    """Remove vertical stripes: ``pywt.wavedec2``; for every detail level, the vertical
    coefficients ``cV`` are filtered along axis 0 (rows) in Fourier by
    :func:`stripe_damping`; ``pywt.waverec2``. Returns float64 of ``image.shape``
    (``waverec2`` gives one more row / column for odd sizes: it is cropped off).
    """
    import warnings

    import pywt

    rows, cols = image.shape
    with warnings.catch_warnings():  # "level too high" is reported once, on the driver
        warnings.simplefilter("ignore", UserWarning)
        coeffs = pywt.wavedec2(np.asarray(image, dtype=np.float64), wavelet, level=level)
    filtered: list[Any] = [coeffs[0]]
    for c_h, c_v, c_d in coeffs[1:]:
        n = c_v.shape[0]
        spectrum = np.fft.rfft(c_v, axis=0) * stripe_damping(n, sigma)[:, None]
        filtered.append((c_h, np.fft.irfft(spectrum, n=n, axis=0), c_d))
    out = pywt.waverec2(filtered, wavelet)
    return np.ascontiguousarray(out[:rows, :cols])
