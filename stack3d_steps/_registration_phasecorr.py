"""Translation registration by phase correlation with subpixel refinement.

Used by ``registration_calculation`` with ``algorithm = "phase_correlation"``
(TRANSLATION only). For one pair ``(ref, mov)`` of blocks:

1. **Apodisation.** Each image is converted to float32, its window-weighted mean is
   subtracted and it is multiplied by a separable Tukey window (cosine tapers over
   :data:`TUKEY_ALPHA` / 2 of each side, flat inside) whose support stops
   :func:`margin` px inside the block.
2. **Phase correlation** (the coarse peak). ``X = F(mov) · conj(F(ref))`` with
   ``scipy.fft.rfft2`` (half spectrum of a real image), kept on the disc of radial
   frequencies ``<=`` :data:`CUTOFF` cycles/px and normalised to ``X / |X|``: its inverse
   DFT is the phase correlation surface. A surface band-limited to that disc is known from
   its samples every ``1 / (2 CUTOFF)`` px, so a small ``irfft2`` on that grid (the
   integer grid when the whole spectrum is used) gives the coarse peak.
3. **Subpixel refinement** by the matrix-multiply DFT of Guizar-Sicairos, Thurman &
   Fienup (2008, *Opt. Lett.* 33, 156): the cross-correlation is evaluated only on a small
   grid around the current peak, ``Re(K_rows @ (w X) @ K_cols)``, ``w`` = 2 for the
   columns of the half spectrum that stand for a conjugate pair and 1 for column 0. As in
   the paper one zoom covers 1.5 steps of the previous grid; zooms of at most :data:`ZOOM`
   are repeated until the grid step is ``1 / upsample_factor`` px (three or four
   evaluations of at most 15 x 15 points for 1000 instead of one of 1500 x 1500). Only the
   disc's rows and columns enter the products, in complex128 (near its top the peak is
   flat: float32 sums blur it by ~0.002 px, a bias that adds up along a chain).
4. **Moving window** (the refinement loop). The window of ``mov`` is moved by the current
   estimate (the window of ``ref`` stays), so that both windows cover the same material;
   the spectrum of ``mov`` is recomputed and the peak refined again from the current
   estimate, until it moves by less than :data:`TOLERANCE` px (at most
   :data:`ITERATIONS` times; each round divides the error by about 10: three in practice).

**Measured choices** (``docs/steps/registration_calculation.md``, per-pair errors against
the synthetic truth): with a window fixed on the image and every frequency normalised
(the textbook method), the subpixel peak is biased by up to 0.15 px on 128² slices, 8
times pystackreg's error, even without noise. Two causes, two fixes: (a) the frequencies
near Nyquist of sampled, slightly aliased content do not shift as the Fourier shift
theorem says and the normalisation gives them the same weight as the rest: the
refinement uses only the disc ``|f| <=`` :data:`CUTOFF` and keeps the amplitude of the
cross-power spectrum (``X``, not ``X / |X|``: the cross-correlation, which weights each
frequency by its power, hence its signal-to-noise ratio); (b) a window fixed on the image
weights the material of the two slices differently when it moved: the moving window. The
normalised spectrum is kept for the coarse peak (sharp, insensitive to contrast).

**Sign convention.** The peak is at ``t = (dx, dy)`` (x = column, y = row) when
``mov(x) = ref(x − t)``, i.e. the content moved by ``+t``. The pair matrix is then the
translation by ``+t``: it maps reference coordinates to the coordinates of the same
material in the moving slice, as pystackreg's ``register(ref, mov)`` (see
:mod:`._registration_matrices`).

Shifts must be smaller than half the block in each direction (the correlation is circular).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import attrs
import numpy as np

__all__ = ["CUTOFF", "ITERATIONS", "TOLERANCE", "TUKEY_ALPHA", "ZOOM", "margin", "phase_correlation",
           "register_pair_phasecorr", "tukey"]

TUKEY_ALPHA = 0.1
"""Fraction of the window support covered by its two cosine tapers."""
CUTOFF = 0.2
"""Radial frequency (cycles/px) above which the spectrum is not used."""
ZOOM = 10
"""Largest refinement factor of one matrix-multiply DFT zoom."""
ITERATIONS = 4
"""Largest number of moving-window refinements."""
TOLERANCE = 0.002
"""The moving-window loop stops when the estimate moves by less than this (px)."""


def margin(n: int) -> int:
    """Distance (px) between the block edge and the support of the reference window:
    ``max(2, n // 32)``. The moving window of ``mov`` must stay inside the block, so a
    shift larger than ``margin - 1`` px recomputes the reference spectrum with a wider one."""
    return max(2, n // 32)


def tukey(n: int, a: float, b: float, alpha: float = TUKEY_ALPHA) -> np.ndarray:
    """Tukey window on the continuous support ``[a, b]`` sampled at ``0 .. n-1`` (float64;
    0 outside the support; the full window when ``b - a`` is less than 2)."""
    u = np.arange(n, dtype=np.float64)
    if b - a < 2:
        return np.ones(n)
    w = ((u >= a) & (u <= b)).astype(np.float64)
    edge = alpha * (b - a) / 2
    if edge > 0:
        lo = (u >= a) & (u < a + edge)
        hi = (u > b - edge) & (u <= b)
        w[lo] = 0.5 * (1 - np.cos(np.pi * (u[lo] - a) / edge))
        w[hi] = 0.5 * (1 - np.cos(np.pi * (b - u[hi]) / edge))
    return w


@attrs.frozen(eq=False)
class _Band:
    """The part of the half spectrum that is used: rows ``rows`` (frequencies ``fy``),
    columns ``0 .. ncols-1`` (frequencies ``fx``), and inside that box the disc ``mask``
    (``|f| <= cutoff`` cycles/px, without the mean; Nyquist row and column left out: their
    sign is ambiguous for a real image). ``coarse`` is the size of the inverse DFT that samples the
    correlation of such a band-limited spectrum without loss (spacing ``shape / coarse``)."""

    shape: tuple[int, int]
    rows: np.ndarray
    ncols: int
    fy: np.ndarray
    fx: np.ndarray
    mask: np.ndarray
    coarse: tuple[int, int]


@functools.lru_cache(maxsize=8)
def _band(shape: tuple[int, int], cutoff: float) -> _Band:
    import scipy.fft

    h, w = shape
    ky = min(int(math.floor(cutoff * h)), (h - 1) // 2)
    kx = min(int(math.floor(cutoff * w)), (w - 1) // 2)
    fy = np.concatenate([np.arange(ky + 1), np.arange(-ky, 0)]).astype(np.float64)
    fx = np.arange(kx + 1, dtype=np.float64)
    rows = np.where(fy < 0, fy + h, fy).astype(np.intp)
    mask = np.hypot(fy[:, None] / h, fx[None, :] / w) <= cutoff
    mask[0, 0] = False  # the mean: no information on the shift
    coarse = (min(h, scipy.fft.next_fast_len(2 * ky + 1, real=True)),
              min(w, scipy.fft.next_fast_len(2 * kx + 1, real=True)))
    for a in (fy, fx, rows, mask):
        a.setflags(write=False)
    return _Band(shape, rows, kx + 1, fy, fx, mask, coarse)


def _spectrum(image: np.ndarray, wy: np.ndarray, wx: np.ndarray, band: _Band) -> np.ndarray:
    """The band (rows ``band.rows``, columns ``< band.ncols``) of the ``rfft2`` of the
    window-weighted-mean-subtracted image times the window ``wy ⊗ wx`` (complex64)."""
    import scipy.fft

    wy32, wx32 = wy.astype(np.float32), wx.astype(np.float32)
    total = float(wy.sum() * wx.sum())
    mean = float(wy32 @ image @ wx32) / total if total > 0 else 0.0
    a = image - np.float32(mean)
    a *= wy32[:, None]
    a *= wx32[None, :]
    spec = scipy.fft.rfft2(a)
    return spec[band.rows, :band.ncols]


def _cross(fm: np.ndarray, fr: np.ndarray, band: _Band, normalised: bool) -> np.ndarray:
    """Cross-power spectrum ``F(mov) conj(F(ref))`` on the band disc (0 elsewhere),
    optionally normalised to unit modulus."""
    x = fm * np.conj(fr)
    x[~band.mask] = 0
    if normalised:
        mag = np.abs(x)
        x /= np.maximum(mag, np.float32(max(float(mag.max()), 1e-30) * 1e-6))
    return x


def _coarse_peak(x: np.ndarray, band: _Band) -> tuple[float, float, float]:
    """Peak ``(dy, dx)`` of the correlation sampled by an inverse DFT of size
    ``band.coarse`` (the integer peak when the band is the whole spectrum), and the
    sample spacing (px)."""
    import scipy.fft

    h, w = band.shape
    hs, ws = band.coarse
    full = np.zeros((hs, ws // 2 + 1), dtype=x.dtype)
    rows = np.where(band.fy < 0, band.fy + hs, band.fy).astype(np.intp)
    full[rows, :band.ncols] = x
    corr = scipy.fft.irfft2(full, s=(hs, ws))
    i, j = (int(v) for v in np.unravel_index(int(np.argmax(corr)), corr.shape))
    i, j = (i - hs if i > hs // 2 else i), (j - ws if j > ws // 2 else j)
    return i * h / hs, j * w / ws, max(h / hs, w / ws)


def _dft_grid(xw: np.ndarray, band: _Band, centre: tuple[float, float], step: float, n: int) -> np.ndarray:
    """Cross-correlation on the ``n x n`` grid of spacing ``step`` px centred on ``centre =
    (dy, dx)``: ``Re(K_r @ xw @ K_c)`` (Guizar-Sicairos), ``xw`` the band of the cross-power
    spectrum with its columns weighted (see :func:`_refine`)."""
    h, w = band.shape
    offs = (np.arange(n) - n // 2) * step
    kr = np.exp(2j * np.pi * np.outer(centre[0] + offs, band.fy) / h)
    kc = np.exp(2j * np.pi * np.outer(band.fx, centre[1] + offs) / w)
    return ((kr @ xw) @ kc).real


def _refine(x: np.ndarray, band: _Band, dy: float, dx: float, target: float, step: float = 1.0) -> tuple[float, float]:
    """Zoom on the peak, from a grid of ``step`` px around ``(dy, dx)`` down to ``target``.

    The correlation of a real pair is ``Re Σ w X e^{2πi(fy dy / H + fx dx / W)}`` over the
    half spectrum, with ``w = 2`` for the columns that stand for a conjugate pair and 1 for
    column 0."""
    xw = x.astype(np.complex128)  # near the top the peak is flat: float32 sums blur it by ~0.002 px
    xw[:, 1:] *= 2
    while step > target * (1 + 1e-9):
        new = max(step / ZOOM, target)
        n = int(math.ceil(1.5 * step / new)) | 1
        grid = _dft_grid(xw, band, (dy, dx), new, n)
        i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
        dy += (int(i) - n // 2) * new
        dx += (int(j) - n // 2) * new
        step = new
    return dy, dx


def phase_correlation(ref: np.ndarray, mov: np.ndarray, upsample_factor: int = 1000, *,
                      moving_window: bool = True, refine_normalised: bool = False,
                      cutoff: float | None = CUTOFF) -> tuple[float, float]:
    """Shift ``(dx, dy)`` in px (x = column, y = row) such that ``mov(x) ≈ ref(x − t)``.

    :param upsample_factor: the result lies on a grid of ``1 / upsample_factor`` px.
    :param moving_window: the refinement loop (step 4 of the module notes); False: one
        refinement with the window fixed on the image.
    :param refine_normalised: refine on ``X / |X|`` (textbook phase correlation) instead of
        ``X``.
    :param cutoff: radial frequency limit (cycles/px); None: every frequency.
    The last three exist to measure the textbook method; the defaults are the step's.
    """
    if ref.shape != mov.shape or ref.ndim != 2:
        raise ValueError(f"expected two 2-D images of the same shape, got {ref.shape} and {mov.shape}")
    shape = (int(ref.shape[0]), int(ref.shape[1]))
    h, w = shape
    r = np.asarray(ref, dtype=np.float32)
    m = np.asarray(mov, dtype=np.float32)
    band = _band(shape, 1.0 if cutoff is None else float(cutoff))  # 1 > sqrt(2) / 2: everything
    my, mx = (margin(h), margin(w)) if moving_window else (0, 0)
    ref_y, ref_x = tukey(h, my, h - 1 - my), tukey(w, mx, w - 1 - mx)
    fr = _spectrum(r, ref_y, ref_x, band)
    fm = _spectrum(m, ref_y, ref_x, band)
    normalised = _cross(fm, fr, band, normalised=True)
    if not np.any(normalised):  # featureless: a constant block, or one too small for the band
        return 0.0, 0.0
    dy, dx, spacing = _coarse_peak(normalised, band)
    target = 1.0 / max(int(upsample_factor), 1)
    dy, dx = _refine(normalised if refine_normalised else _cross(fm, fr, band, False), band, dy, dx, target,
                     max(spacing, target))
    if not moving_window:
        return dx, dy
    need_y, need_x = math.ceil(abs(dy)) + 1, math.ceil(abs(dx)) + 1
    if need_y > my or need_x > mx:  # a wider margin, so that the moved window stays inside
        my, mx = max(my, need_y), max(mx, need_x)
        if h - 1 - 2 * my < 2 or w - 1 - 2 * mx < 2:
            return dx, dy  # the shift leaves too little overlap for the moving window
        fr = _spectrum(r, tukey(h, my, h - 1 - my), tukey(w, mx, w - 1 - mx), band)
    for _ in range(ITERATIONS):
        fm = _spectrum(m, tukey(h, my + dy, h - 1 - my + dy), tukey(w, mx + dx, w - 1 - mx + dx), band)
        ny, nx = _refine(_cross(fm, fr, band, refine_normalised), band, dy, dx, target)
        moved = max(abs(ny - dy), abs(nx - dx))
        dy, dx = ny, nx
        if moved < TOLERANCE:
            break
    return dx, dy


def register_pair_phasecorr(ref: np.ndarray, mov: np.ndarray, blocks: Sequence[tuple[int, int, int, int]],
                            threshold: float | None, upsample_factor: int = 1000) -> np.ndarray:
    """Translation matrices ``(nb, 3, 3)`` of the pair (``ref``, ``mov``) for every block, in
    the convention of :func:`._registration_matrices.register_pair` (a translation is the
    same in block and full-image coordinates).

    :param threshold: if set, register the binary images ``image <= threshold`` (dark = 1).
    """
    out = np.tile(np.eye(3), (len(blocks), 1, 1))
    for b, (imin, imax, jmin, jmax) in enumerate(blocks):
        r = np.asarray(ref[imin:imax, jmin:jmax])
        m = np.asarray(mov[imin:imax, jmin:jmax])
        if threshold is not None:
            r, m = (r <= threshold).astype(np.float32), (m <= threshold).astype(np.float32)
        out[b, 0, 2], out[b, 1, 2] = phase_correlation(r, m, upsample_factor)
    return out
