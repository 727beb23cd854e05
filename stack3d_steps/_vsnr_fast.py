"""VSNR (Fehrenbach, Weiss & Lorenzo, IEEE TIP 2012) on the CPU: stack3d's own implementation.

It computes what ``pyvsnr.vsnr2d(img, filters, norm=False)`` computes, following the
description of the algorithm in the PyStack3D/pyvsnr specification (§5.2), in float32 /
complex64 with ``scipy.fft.rfft2`` / ``irfft2``:

* the image is divided by its maximum (``norm=False``), cleaned, and multiplied back;
* the stripe component is ``ψ ⊛ x``; ADMM solves ``min ½‖x‖² + ‖∇(u0 − ψ ⊛ x)‖₂,₁`` with
  ``β = 10``, starting from ``y = λ = 0``;
* it stops after ``maxit`` iterations, or as soon as ``max|X̂ − X̂_prev| / max|X̂|`` (computed
  from the second iteration on) is ``<= cvg_threshold``.

**What is computed once** (per slice shape and filter set, kept in an LRU cache of
:data:`PLAN_CACHE_SIZE` entries): the filter spectra. With ``P_i = |F ψ_i|²``,
``D_k = |F d_k|`` and ``nmax_i = max(max D1·P_i, max D2·P_i)``, the weights are
``α_i = √N·N²·nmax_i / (‖u0‖·η_i)``, so

    Ψ̂ = N·√(Σ P_i/α_i) = √‖u0‖ · Ψ̂₀,   Ψ̂₀ = N·√(Σ η_i P_i / (N^2.5 nmax_i)),

and ``|Φ1|² + |Φ2|² = ‖u0‖·Q₀`` with ``Q₀ = Ψ̂₀²(|F d1|² + |F d2|²)``. The plan holds Ψ̂₀
and Q₀ (real half spectra); a slice only needs its norm ``‖u0‖₂`` to scale them.

**Two FFTs per iteration instead of four.** Ψ̂ is real and ``conj(F d_k)·F w = F(d̃_k ⊛ w)``
(d̃_k: the adjoint, backward difference), so the X̂ update of the description,
``Σ_k conj(Φ_k)·F(βy_k − λ_k) / Φ``, is ``(Ψ̂/Φ)·F(Σ_k d̃_k ⊛ (βy_k − λ_k))``: one forward FFT
of a divergence computed in real space. Likewise ``a_k = F⁻¹(Φ_k·X̂) = d_k ⊛ F⁻¹(Ψ̂·X̂)``:
one inverse FFT, then finite differences. With the variables scaled by β (``t = β·t_spec``,
``ν = −λ``), one iteration is

    w = β·(u0 − F⁻¹(Ψ̂·X̂))
    t = d ⊛ w + ν                          (= β(g − a) − λ)
    s = 1 / max(1, √(t1² + t2²))           (the isotropic shrinkage; y = g − t/β + s·t/β)
    ν ← s·t                                (= −λ after its update)
    X̂ ← (Ψ̂/Φ)·F(d̃ ⊛ (β·g + 2ν − t))      (β·g + 2ν − t = βy − λ)

with ``g = d ⊛ u0``; this is algebraically the description's iteration (a float64 run agrees
with a literal float64 transcription of it to 1e-9 gray levels). The first iteration has
``X̂ = 0`` exactly (``y = λ = 0``), so its FFTs are skipped, and so are the inverse FFT and
the shrinkage of the last one (the output only needs X̂). The output is
``u0 − F⁻¹(Ψ̂·X̂)``.

**Accuracy.** float32 throughout; the results differ from those of pyvsnr (numpy path) by
float32 rounding amplified by the iteration. Over 228 measured cases (docs/steps/destriping.md):
the same iteration count in 226, and there at most 6.8e-6 of the slice maximum apart (0.41
gray level on uint16: at most one once rounded); in 2 a criterion fell within 1e-6 of the
threshold and the count differs by one. Both stay within 5.4e-6 of a float64 evaluation.

**Sizes.** The model is circular on the exact slice size, so the FFT length cannot be
rounded up to a fast length (``scipy.fft.next_fast_len``) nor padded without changing the
result. Sizes with large prime factors (e.g. 947 columns) are markedly slower per pixel.

``numpy.fft`` is never used nor touched (the FFTs are scipy's).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.fft

__all__ = [
    "PLAN_CACHE_SIZE",
    "VsnrPlan",
    "VsnrResult",
    "clear_plan_cache",
    "filters_key",
    "plan_cache_info",
    "release_workspace",
    "vsnr_plan",
    "vsnr_stack3d",
]

BETA = 10.0
"""ADMM penalty β (pyvsnr's default, which PyStack3D uses)."""

PLAN_CACHE_SIZE = 8
"""Plans kept (one per slice shape and filter set): 4 bytes per pixel each."""

FilterKey = tuple[tuple[str, float, float, float, float], ...]


class VsnrPlan(NamedTuple):
    """What depends only on the slice shape and the filters (real half spectra, ``rfft2``
    layout ``(n0, n1//2 + 1)``, float32, read-only)."""

    shape: tuple[int, int]
    psi0: np.ndarray
    """Ψ̂₀: the combined filter spectrum for ``‖u0‖₂ = 1`` (real, zero phase)."""
    q0: np.ndarray
    """Q₀ = Ψ̂₀²·(|F d1|² + |F d2|²), so that ``|Φ1|² + |Φ2|² = ‖u0‖₂·Q₀``."""


class VsnrResult(NamedTuple):
    """The cleaned image and how the iteration ended."""

    image: np.ndarray
    """float32, the input's shape, same scale as the input (not clipped)."""
    iterations: int
    """ADMM iterations run (pyvsnr: ``len(cvg) + 1`` with ``return_cvg=True``)."""
    criteria: list[float]
    """``max|X̂ − X̂_prev| / max|X̂|`` from the second iteration on (empty when not computed,
    i.e. with ``cvg_threshold = 0`` unless ``track_criteria`` is set)."""


# -- filters and plan ------------------------------------------------------------------------
def filters_key(filters: Iterable[Mapping[str, Any]]) -> FilterKey:
    """A hashable, normalised form of pyvsnr filter dicts: ``(name, η, σx, σy, θ)``, with
    ``σ`` and ``θ`` zeroed for a Dirac (ignored, as in pyvsnr)."""
    key = []
    for f in filters:
        name = str(f["name"])
        eta = float(f["noise_level"])
        if name == "Dirac":
            key.append((name, eta, 0.0, 0.0, 0.0))
        elif name == "Gabor":
            sx, sy = (float(v) for v in f["sigma"])
            key.append((name, eta, sx, sy, float(f["theta"])))
        else:
            raise ValueError(f"unknown VSNR filter name {name!r}: expected 'Gabor' or 'Dirac'")
        if not eta > 0:
            raise ValueError(f"noise_level must be > 0 (got {eta})")
    if not key:
        raise ValueError("VSNR needs at least one filter")
    return tuple(key)


def gabor_kernel(shape: tuple[int, int], sigma: tuple[float, float], theta_deg: float) -> np.ndarray:
    """ψ(r, c) = √(σx σy)/π · exp(−½((xθ/σx)² + (yθ/σy)²)) with x = (n1/2 + 1) − c,
    y = (n0/2 + 1) − r (true division), xθ = x cos θ + y sin θ, yθ = y cos θ − x sin θ.
    float64. Only ``|F ψ|²`` is used: the kernel's position does not matter, its sampling does."""
    n0, n1 = shape
    sx, sy = sigma
    theta = np.deg2rad(theta_deg)
    x = (n1 / 2 + 1) - np.arange(n1, dtype=np.float64)[None, :]
    y = (n0 / 2 + 1) - np.arange(n0, dtype=np.float64)[:, None]
    xt = x * np.cos(theta) + y * np.sin(theta)
    yt = y * np.cos(theta) - x * np.sin(theta)
    return np.sqrt(sx * sy) / np.pi * np.exp(-0.5 * ((xt / sx) ** 2 + (yt / sy) ** 2))


def difference_spectra(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``F d1`` (broadcast (1, m)) and ``F d2`` ((n0, 1)) on the rfft2 grid, complex128, for
    d1 = δ[0,0] − δ[0,n1−1] and d2 = δ[0,0] − δ[n0−1,0]: ``1 − exp(2πi k/n)``."""
    n0, n1 = shape
    k1 = np.arange(n1 // 2 + 1, dtype=np.float64)
    k0 = np.arange(n0, dtype=np.float64)
    fd1 = 1.0 - np.exp(2j * np.pi * k1 / n1)
    fd2 = 1.0 - np.exp(2j * np.pi * k0 / n0)
    return fd1[None, :], fd2[:, None]


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _plan(shape: tuple[int, int], key: FilterKey) -> VsnrPlan:
    n0, n1 = shape
    n = float(n0 * n1)
    fd1, fd2 = difference_spectra(shape)
    d1, d2 = np.abs(fd1), np.abs(fd2)
    s0_sq = np.zeros((n0, n1 // 2 + 1), dtype=np.float64)
    for name, eta, sx, sy, theta in key:
        if name == "Dirac":
            p = np.ones_like(s0_sq)
        else:
            spectrum = scipy.fft.rfft2(gabor_kernel(shape, (sx, sy), theta))
            p = spectrum.real ** 2 + spectrum.imag ** 2
        nmax = max(float((d1 * p).max()), float((d2 * p).max()))
        if not nmax > 0:
            raise ValueError(f"VSNR filter {name} (sigma {sx}, {sy}) has an empty spectrum on {n0}x{n1} slices")
        s0_sq += p * (eta / (n ** 2.5 * nmax))
    psi0 = n * np.sqrt(s0_sq)
    q0 = psi0 * psi0 * (np.abs(fd1) ** 2 + np.abs(fd2) ** 2)
    plan = VsnrPlan(shape, psi0.astype(np.float32), q0.astype(np.float32))
    for a in plan[1:]:
        a.flags.writeable = False  # shared by every later call
    return plan


def vsnr_plan(shape: tuple[int, int], filters: Iterable[Mapping[str, Any]]) -> VsnrPlan:
    """The cached plan for a slice shape and a filter set."""
    n0, n1 = (int(v) for v in shape)
    if n0 < 1 or n1 < 1:
        raise ValueError(f"empty slice shape {shape}")
    return _plan((n0, n1), filters_key(filters))


def plan_cache_info() -> Any:
    """``functools`` cache statistics of the plans (hits, misses, currsize)."""
    return _plan.cache_info()


def clear_plan_cache() -> None:
    """Forget every plan."""
    _plan.cache_clear()


# -- the iteration ---------------------------------------------------------------------------
def _irfft2(spectrum: np.ndarray, shape: tuple[int, int], threads: int) -> np.ndarray:
    """``irfft2`` as an in-place complex FFT along the rows followed by a real inverse FFT
    along the columns; ``spectrum`` is overwritten.

    Same result as ``scipy.fft.irfft2(spectrum, s=shape)``, which on power-of-two sizes runs
    2.5-3x slower for some addresses of its input array (measured 0.41 vs 1.1 ms on 512²,
    1.7 vs 4.2 ms on 1024²; likely cache-set conflicts between its input and the out-of-place
    pass along axis 0), so the time per slice varied between runs; this form does not.
    """
    half = scipy.fft.ifft(spectrum, axis=0, overwrite_x=True, workers=threads)
    return scipy.fft.irfft(half, n=shape[1], axis=1, overwrite_x=True, workers=threads)


def _grad(w: np.ndarray, out: np.ndarray) -> None:
    """``out[k] = d_k ⊛ w``: periodic forward differences ``w(r, c) − w(r, c+1)`` (k = 0)
    and ``w(r, c) − w(r+1, c)`` (k = 1). (The column difference runs on the flattened rows,
    3x faster than on 2D slices, and the last column is then corrected.)"""
    flat, out0 = w.reshape(-1), out[0].reshape(-1)
    np.subtract(flat[:-1], flat[1:], out=out0[:-1])
    np.subtract(w[:, -1], w[:, 0], out=out[0, :, -1])
    np.subtract(w[:-1], w[1:], out=out[1, :-1])
    np.subtract(w[-1], w[0], out=out[1, -1])


def _div(e: np.ndarray, out: np.ndarray) -> None:
    """``out = Σ_k d̃_k ⊛ e_k``, the adjoint of :func:`_grad` (``F⁻¹(Σ conj(F d_k)·F e_k)``):
    ``e0(r, c) − e0(r, c−1) + e1(r, c) − e1(r−1, c)``."""
    e0, e1 = e
    flat, out_flat = e0.reshape(-1), out.reshape(-1)
    np.subtract(flat[1:], flat[:-1], out=out_flat[1:])
    np.subtract(e0[:, 0], e0[:, -1], out=out[:, 0])
    out += e1
    out[1:] -= e1[:-1]
    out[0] -= e1[-1]


def _shrink(t: np.ndarray, nu: np.ndarray, g: np.ndarray, scratch: tuple[np.ndarray, np.ndarray, np.ndarray],
            add_nu: bool = True) -> None:
    """The TV proximal step and the dual update (variables scaled by β), in place:
    ``t += ν`` (when ``add_nu``), ``s = 1/max(1, √(t1² + t2²))``, ``ν ← s·t``, then
    ``t ← G + 2ν − t`` (β v, the next input of the forward transform).

    Pointwise, so it runs on blocks of rows whose scratch arrays (``sq``, ``s``, ``ones``: the
    first rows of ``scratch``) stay in cache (a few % faster than whole-image passes on 1024²).
    (``np.maximum`` takes an array of ones: with a scalar it is 3x slower.)"""
    sq_all, s_all, ones_all = scratch
    rows = s_all.shape[0]
    n0 = t.shape[1]
    for r0 in range(0, n0, rows):
        r1 = min(r0 + rows, n0)
        k = r1 - r0
        tb, nb, gb = t[:, r0:r1], nu[:, r0:r1], g[:, r0:r1]
        sq, s, ones = sq_all[:, :k], s_all[:k], ones_all[:k]
        if add_nu:
            tb += nb
        np.multiply(tb, tb, out=sq)
        np.add(sq[0], sq[1], out=s)
        np.maximum(s, ones, out=s)
        np.sqrt(s, out=s)
        np.divide(ones, s, out=s)  # (np.reciprocal is 2x slower)
        np.multiply(tb[0], s, out=nb[0])
        np.multiply(tb[1], s, out=nb[1])
        np.add(nb, nb, out=sq)
        np.subtract(sq, tb, out=tb)
        tb += gb


BLOCK = 1 << 16
"""Pixels per block of :func:`_shrink` (256 KiB per float32 plane; smaller blocks cost more
in Python calls than they save)."""


_BUFFERS = ("u_b", "t", "nu", "dv", "g", "zhat", "x", "x_prev", "mag")
_LOCAL = threading.local()


KEEP_WORKSPACE_BYTES = 64 << 20
"""Work arrays up to this size are kept between slices (up to ~1.4 Mpx: 1024² is kept, 2048²
is not, where the page faults cost 1-2 % of a slice)."""


def _workspace(shape: tuple[int, int]) -> dict[str, Any]:
    """The work arrays for one slice shape (~46 bytes per pixel), kept per thread for the
    next slice of the same shape when at most :data:`KEEP_WORKSPACE_BYTES` (fresh arrays cost
    their page faults: ~4 ms of a 60 ms slice on 512²); :func:`release_workspace` frees them."""
    ws = getattr(_LOCAL, "workspace", None)
    if ws is None or ws["shape"] != shape:
        _LOCAL.workspace = None  # free the old arrays before allocating the new ones
        n0, n1 = shape
        real, real2, half = (n0, n1), (2, n0, n1), (n0, n1 // 2 + 1)
        ws = {"shape": shape}
        for name, size, dtype in (("u_b", real, np.float32), ("t", real2, np.float32),
                                  ("nu", real2, np.float32), ("dv", real, np.float32),
                                  ("g", real2, np.float32), ("zhat", half, np.complex64),
                                  ("x", half, np.complex64), ("x_prev", half, np.complex64),
                                  ("mag", half, np.float32)):
            ws[name] = np.empty(size, dtype=dtype)
        rows = max(1, min(n0, BLOCK // n1))
        ws["scratch"] = (np.empty((2, rows, n1), np.float32), np.empty((rows, n1), np.float32),
                         np.ones((rows, n1), np.float32))
        if sum(a.nbytes for a in ws.values() if isinstance(a, np.ndarray)) <= KEEP_WORKSPACE_BYTES:
            _LOCAL.workspace = ws
    return ws


def release_workspace() -> None:
    """Free this thread's work arrays (they are kept for the next slice of the same shape)."""
    _LOCAL.workspace = None


def vsnr_stack3d(image: np.ndarray, filters: Sequence[Mapping[str, Any]], *, maxit: int,
                 cvg_threshold: float = 0.0, beta: float = BETA, threads: int = 1,
                 track_criteria: bool = False) -> VsnrResult:
    """VSNR of one 2D slice with ``norm=False``: divided by its maximum, cleaned, multiplied
    back. float32 result, not clipped nor cast. An all-zero (or non-finite-max) slice is
    returned unchanged (as a float32 copy).

    :param filters: pyvsnr filter dicts (``name``, ``noise_level``, ``sigma``, ``theta``).
    :param maxit: maximum number of ADMM iterations (≥ 1; 1 returns the input).
    :param cvg_threshold: stop once the criterion is ``<= cvg_threshold`` (0: run ``maxit``).
    :param beta: the ADMM penalty β.
    :param threads: ``workers`` of ``scipy.fft`` (1 inside the engine's worker processes).
    :param track_criteria: compute the criteria even when ``cvg_threshold`` is 0.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"VSNR takes a 2D slice (got shape {image.shape})")
    if maxit < 1:
        raise ValueError(f"maxit must be >= 1 (got {maxit})")
    vmax = float(image.max()) if image.size else 0.0
    if not np.isfinite(vmax) or vmax <= 0.0:
        return VsnrResult(np.array(image, dtype=np.float32), 0, [])
    plan = vsnr_plan(image.shape, filters)
    shape = plan.shape
    threads = int(threads)
    track = cvg_threshold > 0 or track_criteria
    criteria: list[float] = []
    ws = _workspace(shape)
    u_b, t, nu, dv, g, zhat, x, x_prev, mag = (ws[k] for k in _BUFFERS)
    scratch = ws["scratch"]

    # Variables scaled by β: U = β·u0, G = d ⊛ U, T = β·t, ν = −λ (= β·(−λ/β)).
    np.copyto(u_b, image, casting="unsafe")
    u_b *= np.float32(1.0 / vmax)  # u0
    c = float(np.linalg.norm(u_b.ravel())) ** 0.5  # √‖u0‖₂ (float32 sum): Ψ̂ = c·Ψ̂₀
    u_b *= np.float32(beta)
    # X̂ = gain·F(div(β v)),  gain = c Ψ̂₀ / (1 + β c² Q₀);  β·(ψ ⊛ x) = F⁻¹(psi_b·X̂)
    gain = plan.psi0 * np.float32(c) / (np.float32(beta * c * c) * plan.q0 + np.float32(1.0))
    psi_b = plan.psi0 * np.float32(beta * c)
    mix = None if track else psi_b * gain
    _grad(u_b, g)  # G = d ⊛ U

    # iteration 1: X̂ = 0 (y = λ = 0), so t = G
    t[...] = g
    _shrink(t, nu, g, scratch, add_nu=False)
    x[...] = 0
    it = 1
    while it < maxit:
        it += 1
        _div(t, dv)  # t holds β v = G + 2ν − t (summed before the differences: less cancellation)
        spec = scipy.fft.rfft2(dv, workers=threads)
        if track:
            x, x_prev = x_prev, x
            np.multiply(spec, gain, out=x)
            np.subtract(x, x_prev, out=x_prev)  # x_prev is not needed any more
            top = float(np.abs(x, out=mag).max())
            crit = float(np.abs(x_prev, out=mag).max()) / top if top > 0 else 0.0
            criteria.append(crit)
            np.multiply(x, psi_b, out=zhat)
            if cvg_threshold > 0 and crit <= cvg_threshold:
                break
        else:
            np.multiply(spec, mix, out=zhat)
        if it == maxit:  # the output only needs X̂: skip the rest of the last iteration
            break
        z = _irfft2(zhat, shape, threads)  # β·(ψ ⊛ x); zhat is overwritten
        np.subtract(u_b, z, out=z)  # t = d ⊛ (U − β ψ ⊛ x) + ν
        _grad(z, t)
        _shrink(t, nu, g, scratch)
    if it == 1:
        return VsnrResult(u_b * np.float32(vmax / beta), it, criteria)
    out = _irfft2(zhat, shape, threads)
    np.subtract(u_b, out, out=out)  # β·(u0 − ψ ⊛ x)
    out *= np.float32(vmax / beta)
    return VsnrResult(out, it, criteria)
