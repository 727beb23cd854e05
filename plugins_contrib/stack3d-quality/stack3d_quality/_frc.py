"""Fourier ring correlation (FRC) between two images, its thresholds and their crossings.

Conventions
-----------
* Images are 2D arrays ``[row, column]``. Both are cropped to the same centred square of
  side ``N = min(rows, columns)`` (as in Shtengel's ``Two_Image_FSC``).
* Spatial frequencies are in **cycles per pixel**: ring ``b`` holds the Fourier
  coefficients whose radius ``rho = sqrt(kx² + ky²)`` (in units of ``1/N``) rounds to
  ``b·w``, ``w = (N/2) / bins`` being the ring width; its frequency is ``b·w / N``. With the
  default ``bins = N // 2``, ``w = 1``: rings one coefficient wide, ``f_b = b / N``, from 0
  to just below Nyquist (0.5 cycles/px). Coefficients beyond the last ring (the corners of
  the square spectrum) are not used.
* ``FRC(b) = |Σ_b F1·conj(F2)| / sqrt(Σ_b |F1|² · Σ_b |F2|²)`` (sums over the ring;
  Shtengel writes ring means, the ratio is the same). For real images the ring sum of
  ``F1·conj(F2)`` is real (Hermitian symmetry), so ``|.|`` is its absolute value.
* A *resolution* is the period at the first crossing of a threshold, ``1 / f`` pixels
  (times the pixel size for a physical length).

Thresholds (``n`` = number of Fourier coefficients in the ring)
--------------------------------------------------------------
* ``"1/7"``: the constant ``1/7 ≈ 0.1429``.
* ``"half_bit"`` (van Heel & Schatz 2005):
  ``T(n) = (0.2071 + 1.9102/√n) / (1.2071 + 0.9102/√n)``, with ``n`` counted exactly.
* a number, e.g. ``"0.5"``: that constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FRCResult", "frc", "frc_crossing", "frc_resolution", "frc_rings", "frc_threshold", "threshold_key"]

ONE_SEVENTH = 1.0 / 7.0


@dataclass(frozen=True, eq=False)
class FRCResult:
    """An FRC curve.

    :param freq: ring frequencies, cycles/pixel, shape ``(bins,)``; ``freq[0] = 0`` (DC).
    :param frc: the correlation per ring, in [0, 1] (NaN where a ring has no power).
    :param n_pixels: number of Fourier coefficients in each ring.
    :param size: side ``N`` of the square the images were cropped to, pixels.
    """

    freq: np.ndarray
    frc: np.ndarray
    n_pixels: np.ndarray
    size: int


def _centre_square(image: np.ndarray, side: int) -> np.ndarray:
    rows, cols = image.shape
    r0, c0 = (rows - side) // 2, (cols - side) // 2
    return np.asarray(image[r0 : r0 + side, c0 : c0 + side], dtype=np.float64)


def _ring_index(n: int, bins: int | None) -> tuple[np.ndarray, int, float]:
    """Ring number of every coefficient of an ``n × n`` FFT (``-1``: unused), ring count, width."""
    k = np.fft.fftfreq(n) * n                      # integer frequencies, FFT order
    rho = np.hypot(k[:, None], k[None, :])
    n_rings = n // 2 if bins is None else int(bins)
    width = 1.0 if bins is None else (n / 2.0) / n_rings
    ring = np.floor(rho / width + 0.5).astype(np.int64)
    ring[ring >= n_rings] = -1
    return ring, n_rings, width


def frc_rings(side: int, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ring frequencies (cycles/px) and coefficient counts of :func:`frc` on ``side``-pixel squares."""
    ring, n_rings, width = _ring_index(side, bins)
    return np.arange(n_rings) * width / side, np.bincount(ring[ring >= 0], minlength=n_rings)


def frc(image1: np.ndarray, image2: np.ndarray, *, bins: int | None = None,
        window: str = "none") -> FRCResult:
    """Fourier ring correlation of two images (see the module docstring for the formula).

    :param image1, image2: 2D arrays of the same shape (any dtype; gray levels).
    :param bins: number of rings between 0 and Nyquist (default ``N // 2``: one
        coefficient wide).
    :param window: ``"none"`` (Shtengel's choice: no apodisation) or ``"hann"`` (a 2D Hann
        window after subtracting each image's mean, which removes the cross-shaped edge
        artefact of non-periodic images).
    :returns: :class:`FRCResult`.
    """
    a, b = np.asarray(image1), np.asarray(image2)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"frc needs two 2D images of one shape, got {a.shape} and {b.shape}")
    side = min(a.shape)
    if side < 8:
        raise ValueError(f"frc needs images of at least 8×8 pixels, got {a.shape}")
    if bins is not None and not 2 <= bins <= side // 2:
        raise ValueError(f"bins must lie in [2, {side // 2}] for a {side}-pixel square, got {bins}")
    a, b = _centre_square(a, side), _centre_square(b, side)
    if window == "hann":
        w1 = np.hanning(side)
        w2 = np.outer(w1, w1)
        a, b = (a - a.mean()) * w2, (b - b.mean()) * w2
    elif window != "none":
        raise ValueError(f"window must be 'none' or 'hann', got {window!r}")
    f1, f2 = np.fft.fft2(a), np.fft.fft2(b)
    ring, n_rings, width = _ring_index(side, bins)
    keep = ring >= 0
    idx = ring[keep]
    cross = f1[keep] * np.conj(f2[keep])
    re = np.bincount(idx, weights=cross.real, minlength=n_rings)
    im = np.bincount(idx, weights=cross.imag, minlength=n_rings)
    p1 = np.bincount(idx, weights=(np.abs(f1[keep]) ** 2), minlength=n_rings)
    p2 = np.bincount(idx, weights=(np.abs(f2[keep]) ** 2), minlength=n_rings)
    count = np.bincount(idx, minlength=n_rings)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.hypot(re, im) / np.sqrt(p1 * p2)
    freq = np.arange(n_rings) * width / side
    return FRCResult(freq=freq, frc=np.clip(curve, 0.0, 1.0), n_pixels=count, size=side)


def threshold_key(spec: str) -> str:
    """A column-name-safe key for a threshold: ``"1/7" → "1_7"``, ``"0.5" → "t0_5"``."""
    if spec in ("1/7", "half_bit"):
        return spec.replace("/", "_")
    return "t" + str(float(spec)).replace(".", "_").replace("-", "m")


def frc_threshold(spec: str, n_pixels: np.ndarray) -> np.ndarray:
    """Threshold curve per ring: ``"1/7"``, ``"half_bit"`` or a number (see the module docstring).

    :param n_pixels: Fourier coefficients per ring (:attr:`FRCResult.n_pixels`).
    """
    n = np.asarray(n_pixels, dtype=np.float64)
    if spec == "1/7":
        return np.full(n.shape, ONE_SEVENTH)
    if spec == "half_bit":
        with np.errstate(divide="ignore"):
            s = 1.0 / np.sqrt(n)
        return (0.2071 + 1.9102 * s) / (1.2071 + 0.9102 * s)
    try:
        value = float(spec)
    except ValueError:
        raise ValueError(f"unknown FRC threshold {spec!r}: use '1/7', 'half_bit' or a number") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"a numeric FRC threshold lies in (0, 1), got {spec!r}")
    return np.full(n.shape, value)


def _smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` rings (shorter windows at the ends)."""
    if window <= 1:
        return curve
    kernel = np.ones(window)
    valid = np.isfinite(curve)
    total = np.convolve(np.where(valid, curve, 0.0), kernel, mode="same")
    count = np.convolve(valid.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def frc_crossing(freq: np.ndarray, curve: np.ndarray, threshold: np.ndarray, *, smooth: int = 1,
                 search_fraction: float = 0.9) -> float:
    """First frequency (cycles/px) where the FRC falls below the threshold.

    The DC ring is skipped. The curve is smoothed by a centred moving average of ``smooth``
    rings, then searched over the first ``search_fraction`` of its rings (Shtengel: 90 %);
    the crossing is linearly interpolated between the two bracketing rings (on
    ``FRC − T``). Returns ``freq[1]`` when the first ring is already below, NaN when the
    curve never crosses (the resolution is then finer than the searched band).
    """
    f = np.asarray(freq, dtype=np.float64)[1:]
    d = _smooth(np.asarray(curve, dtype=np.float64)[1:], smooth) - np.asarray(threshold, dtype=np.float64)[1:]
    stop = max(1, int(math.floor(search_fraction * len(np.asarray(freq)))) - 1)
    below = np.flatnonzero(d[:stop] < 0)
    if below.size == 0:
        return math.nan
    k = int(below[0])
    if k == 0 or not np.isfinite(d[k - 1]):
        return float(f[k])
    t = d[k - 1] / (d[k - 1] - d[k])
    return float(f[k - 1] + t * (f[k] - f[k - 1]))


def frc_resolution(result: FRCResult, thresholds: Sequence[str] = ("1/7", "half_bit"), *,
                   smooth: int = 1, search_fraction: float = 0.9) -> dict[str, float]:
    """Resolution (period at the crossing, **pixels**) for each threshold.

    :returns: ``{threshold spec: 1 / f_crossing}``; NaN when the curve never crosses.
    """
    out: dict[str, float] = {}
    for spec in thresholds:
        f = frc_crossing(result.freq, result.frc, frc_threshold(spec, result.n_pixels),
                         smooth=smooth, search_fraction=search_fraction)
        out[spec] = 1.0 / f if f > 0 else math.nan
    return out
