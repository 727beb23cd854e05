"""Registration and image quality metrics on numpy arrays (numpy + scipy only).

Formulas follow fibsem-formats-and-metrics.md §3 (Shtengel's FIB-SEM package) so that the
numbers compare with published Janelia values; every deviation is stated in the function's
docstring. Images are 2D arrays ``[row, column]`` of gray levels (any dtype, computed in
float64); ``x`` is the column direction and ``y`` the row direction. Pairwise metrics take
``image1`` = the previous slice and ``image2`` = the current one.

Pairwise
--------
* :func:`nsad` — normalised sum of absolute differences (lower is better).
* :func:`ncc` — zero-mean normalised cross-correlation; :func:`snr_from_ncc` — the
  two-image SNR ``NCC / (1 − NCC)`` (Frank & Al-Ali 1975).
* :func:`nmi` — normalised mutual information ``(H(A) + H(B)) / H(A, B) − 1``
  (Studholme 1998): 1 for identical images, ≈ 0 for independent ones.
* :func:`frc` — Fourier ring correlation; :func:`frc_resolution` — the period (pixels) at
  the crossing of the ``"1/7"`` / ``"half_bit"`` thresholds.

Single image
------------
* :func:`single_image_snr` — SNR from the autocorrelation (Thong et al. 2001).
* :func:`noise_statistics` — dark offset and gain from the mean–variance relation.
"""

from __future__ import annotations

import math

import numpy as np

from ._frc import FRCResult, frc, frc_crossing, frc_resolution, frc_rings, frc_threshold, threshold_key
from ._single import NoiseStats, SNRResult, noise_kernel, noise_statistics, single_image_snr

__all__ = [
    "FRCResult", "NoiseStats", "SNRResult", "auto_nmi_bins", "frc", "frc_crossing", "frc_resolution", "frc_rings",
    "frc_threshold", "ncc", "nmi", "noise_kernel", "noise_statistics", "nsad", "single_image_snr",
    "snr_from_ncc", "threshold_key",
]


def _pair(image1: np.ndarray, image2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(image1, dtype=np.float64)
    b = np.asarray(image2, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two images differ in shape: {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("empty images")
    return a, b


def nsad(image1: np.ndarray, image2: np.ndarray) -> float:
    """Normalised sum of absolute differences (dimensionless, ≥ 0; 0 for identical images)::

        M = |I1/2 + I2/2|
        NSAD = mean(|I2 − I1|) / (mean(M) − min(M))

    The denominator makes it independent of a common gain and offset. NaN when ``M`` is
    constant.
    """
    a, b = _pair(image1, image2)
    m = np.abs(0.5 * a + 0.5 * b)
    denominator = float(m.mean() - m.min())
    if denominator <= 0:
        return math.nan
    return float(np.mean(np.abs(b - a))) / denominator


def ncc(image1: np.ndarray, image2: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation, in [−1, 1]::

        x = I1 − mean(I1),  y = I2 − mean(I2)
        NCC = Σ x·y / sqrt(Σ x² · Σ y²)

    NaN when either image is constant.
    """
    a, b = _pair(image1, image2)
    x, y = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    if denominator == 0:
        return math.nan
    return float(np.sum(x * y)) / denominator


def snr_from_ncc(value: float) -> float:
    """Two-image SNR ``NCC / (1 − NCC)`` (Frank & Al-Ali 1975).

    For ``I_k = S + n_k`` with independent noises of equal variance it estimates
    ``var(S) / var(n)``. ``inf`` at NCC = 1.
    """
    if not math.isfinite(value):
        return math.nan
    if value >= 1.0:
        return math.inf
    return value / (1.0 - value)


def auto_nmi_bins(n_pixels: int) -> int:
    """Default NMI histogram bins per axis: ``round(sqrt(n_pixels / 4))`` clipped to [16, 2048].

    The plug-in entropy estimate is biased: with ``B`` occupied bins per axis and ``N``
    pixels, independent images get ``MI ≈ (B − 1)² / (2N)`` nats instead of 0. Shtengel's
    fixed 2048 bins give NMI = 0.054 for two independent uniform 8-bit 256² images; this
    rule (≈ 4 pixels per joint bin) gives 0.014 there, and 2048 bins only from 4096² pixels.
    """
    return int(min(2048, max(16, round(math.sqrt(n_pixels / 4.0)))))


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.int64)
    index = np.floor((values - lo) / (hi - lo) * bins).astype(np.int64)
    return np.clip(index, 0, bins - 1)


def _entropy(counts: np.ndarray, total: int) -> float:
    p = counts[counts > 0] / total
    return float(-np.sum(p * np.log(p)))


def nmi(image1: np.ndarray, image2: np.ndarray, *, bins: int | None = None) -> float:
    """Normalised mutual information (Studholme 1998), dimensionless::

        NMI = (H(A) + H(B)) / H(A, B) − 1

    with plug-in entropies (natural log; the base cancels) of the joint histogram of ``bins
    × bins`` equal-width bins spanning each image's min..max, and its marginals. It is 1
    for identical images (``H(A, B) = H(A)``; also for any one-to-one gray-level mapping
    that keeps the bins apart) and ≈ 0 for independent images (``H(A, B) = H(A) + H(B)``),
    up to the finite-sample bias discussed in :func:`auto_nmi_bins`.

    :param bins: bins per axis; default :func:`auto_nmi_bins` of the pixel count. ``2048``
        reproduces Shtengel's setting.

    Deviation (stated): Shtengel adds machine epsilon to every joint bin before normalising;
    that changes NMI by < 1e-7 and is omitted here. NaN when both images are constant.
    """
    a, b = _pair(image1, image2)
    n = a.size
    nb = auto_nmi_bins(n) if bins is None else int(bins)
    if nb < 2:
        raise ValueError(f"nmi needs at least 2 bins, got {nb}")
    ia, ib = _bin_index(a.ravel(), nb), _bin_index(b.ravel(), nb)
    joint = np.bincount(ia * nb + ib)
    h_a = _entropy(np.bincount(ia), n)
    h_b = _entropy(np.bincount(ib), n)
    h_ab = _entropy(joint, n)
    if h_ab <= 0:
        return math.nan
    return (h_a + h_b) / h_ab - 1.0
