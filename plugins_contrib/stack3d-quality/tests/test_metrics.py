"""Accuracy of the metric functions on analytic cases (stack3d_quality.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from stack3d_quality import metrics as m


def smooth_signal(shape: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    """Periodic Gaussian-filtered white noise, zero mean, unit variance."""
    s = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma, mode="wrap")
    return (s - s.mean()) / s.std()


# -- FRC ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,bins", [((128, 128), None), ((96, 130), None), ((128, 128), 20)])
def test_frc_of_an_image_with_itself_is_one_at_every_frequency(shape: tuple[int, int], bins: int | None) -> None:
    image = np.random.default_rng(0).integers(0, 65535, shape).astype(np.uint16)
    result = m.frc(image, image, bins=bins)
    np.testing.assert_allclose(result.frc, 1.0, atol=1e-12)
    side = min(shape)
    assert len(result.freq) == (side // 2 if bins is None else bins)
    assert result.freq[0] == 0 and result.freq[-1] < 0.5
    assert all(math.isnan(v) for v in m.frc_resolution(result).values())  # never crosses


def test_frc_axis_counts_every_coefficient_of_the_inscribed_disc() -> None:
    result = m.frc(np.ones((64, 64)), np.ones((64, 64)))
    assert result.n_pixels[0] == 1 and result.n_pixels[1] == 8  # (±1, 0), (0, ±1), (±1, ±1)
    np.testing.assert_allclose(result.freq[1:4], [1 / 64, 2 / 64, 3 / 64])


def test_frc_of_two_noisy_copies_follows_the_spectral_snr() -> None:
    """E[FRC(r)] = P_S(r) / (P_S(r) + P_n(r)) for I_k = S + n_k; the 1/7 crossing of the
    measured curve matches that of the expected one within 5 %."""
    rng = np.random.default_rng(4)
    signal = 3.0 * smooth_signal((256, 256), 2.0, 5)
    sigma = 1.0
    a = signal + rng.normal(0, sigma, signal.shape)
    b = signal + rng.normal(0, sigma, signal.shape)
    measured = m.frc(a, b)
    ps = m.frc(signal, signal)  # only for the ring layout; the power is recomputed below
    f = np.fft.fft2(signal)
    k = np.fft.fftfreq(256) * 256
    ring = np.floor(np.hypot(k[:, None], k[None, :]) + 0.5).astype(int)
    keep = ring < 128
    p_signal = np.bincount(ring[keep], weights=np.abs(f[keep]) ** 2, minlength=128)
    p_noise = ps.n_pixels * 256 * 256 * sigma**2
    expected = p_signal / (p_signal + p_noise)
    threshold = m.frc_threshold("1/7", measured.n_pixels)
    f_measured = m.frc_crossing(measured.freq, measured.frc, threshold, smooth=5)
    f_expected = m.frc_crossing(measured.freq, expected, threshold)
    assert f_measured == pytest.approx(f_expected, rel=0.05)
    resolution = m.frc_resolution(measured, smooth=5)
    assert resolution["1/7"] == pytest.approx(1 / f_measured)
    assert resolution["half_bit"] >= resolution["1/7"]  # the half-bit curve lies above 1/7


def test_thresholds() -> None:
    n = np.array([1.0, 100.0, 1e12])
    np.testing.assert_allclose(m.frc_threshold("1/7", n), 1 / 7)
    half = m.frc_threshold("half_bit", n)
    assert half[0] == pytest.approx((0.2071 + 1.9102) / (1.2071 + 0.9102))
    assert half[-1] == pytest.approx(0.2071 / 1.2071, rel=1e-5)
    np.testing.assert_allclose(m.frc_threshold("0.5", n), 0.5)
    assert m.threshold_key("1/7") == "1_7" and m.threshold_key("0.5") == "t0_5"
    with pytest.raises(ValueError, match="unknown FRC threshold"):
        m.frc_threshold("full_bit", n)


# -- NCC, NSAD, NMI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("snr", [0.5, 2.0, 8.0])
def test_two_image_snr_from_ncc_matches_the_known_snr(snr: float) -> None:
    rng = np.random.default_rng(int(snr * 10))
    signal = math.sqrt(snr) * smooth_signal((256, 256), 3.0, 1)
    n1, n2 = rng.normal(size=signal.shape), rng.normal(size=signal.shape)
    known = signal.var() / (0.5 * (n1.var() + n2.var()))
    estimate = m.snr_from_ncc(m.ncc(100 + signal + n1, 100 + signal + n2))
    assert estimate == pytest.approx(known, rel=0.10)


def test_ncc_and_nsad_limits() -> None:
    image = np.random.default_rng(2).normal(size=(64, 64))
    assert m.ncc(image, image) == pytest.approx(1.0)
    assert m.ncc(image, -image) == pytest.approx(-1.0)
    assert m.snr_from_ncc(1.0) == math.inf
    assert m.nsad(image, image) == 0.0
    other = np.random.default_rng(3).normal(size=(64, 64))
    base = m.nsad(image + 10, other + 10)
    assert m.nsad(3 * (image + 10) + 7, 3 * (other + 10) + 7) == pytest.approx(base)  # common gain and offset
    assert math.isnan(m.ncc(np.ones((8, 8)), image[:8, :8]))


def test_nmi_of_identical_images_is_one_and_of_independent_noise_near_zero() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (256, 256)).astype(np.uint8)
    b = rng.integers(0, 256, (256, 256)).astype(np.uint8)
    assert m.nmi(a, a) == pytest.approx(1.0, abs=1e-12)
    assert m.nmi(a, 2.0 * a.astype(float) + 5) == pytest.approx(1.0, abs=1e-12)  # bins follow min..max
    independent = m.nmi(a, b)
    assert 0 <= independent < 0.05          # the bound: 0.05 for 256² uniform 8-bit noise (measured 0.014)
    # Shtengel's fixed 2048 bins: finite-sample bias above the bound (documented in auto_nmi_bins)
    assert 0.05 < m.nmi(a, b, bins=2048) < 0.06
    assert m.auto_nmi_bins(256 * 256) == 128


def test_nmi_grows_with_shared_signal() -> None:
    rng = np.random.default_rng(8)
    signal = smooth_signal((128, 128), 2.0, 9)
    low = m.nmi(signal + 2 * rng.normal(size=signal.shape), signal + 2 * rng.normal(size=signal.shape))
    high = m.nmi(signal + 0.2 * rng.normal(size=signal.shape), signal + 0.2 * rng.normal(size=signal.shape))
    assert 0 < low < high < 1


# -- single-image SNR -------------------------------------------------------------------------------

@pytest.mark.parametrize("snr", [0.5, 2.0, 8.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_single_image_snr_by_autocorrelation_matches_the_known_snr(snr: float, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    signal = math.sqrt(snr) * smooth_signal((257, 255), 3.0, seed)
    noise = rng.normal(size=signal.shape)
    known = signal.var() / noise.var()
    result = m.single_image_snr(50 + signal + noise)
    for value in (result.x, result.y, result.r):
        assert value == pytest.approx(known, rel=0.15)


def test_single_image_snr_limits() -> None:
    assert math.isnan(m.single_image_snr(np.full((32, 32), 7.0)).x)
    smooth = smooth_signal((64, 64), 4.0, 3)
    assert m.single_image_snr(smooth).y > 100  # nearly noise-free
    white = np.random.default_rng(5).normal(size=(128, 128))
    assert abs(m.single_image_snr(white).r) < 0.1


# -- noise statistics -------------------------------------------------------------------------------

@pytest.mark.parametrize("offset,gain", [(100.0, 3.5), (1000.0, 12.0)])
def test_noise_statistics_recover_a_known_offset_and_gain(offset: float, gain: float) -> None:
    """I = offset + gain · Poisson(λ) with λ a smooth blob (5..100 quanta), rounded to integers."""
    yy, xx = np.mgrid[0:256, 0:256]
    lam = 5 + 95 * np.exp(-((xx - 128) ** 2 + (yy - 128) ** 2) / (2 * 70.0**2))
    for seed in range(3):
        image = np.rint(offset + gain * np.random.default_rng(seed).poisson(lam))
        stats = m.noise_statistics(image)
        assert stats.gain == pytest.approx(gain, rel=0.06)
        assert abs(stats.dark_offset - offset) < 0.03 * gain * 95   # 3 % of the intensity span
        assert stats.snr0 > 0 and stats.psnr > 0


def test_noise_statistics_of_additive_noise_report_no_offset() -> None:
    yy, xx = np.mgrid[0:128, 0:128]
    image = 100 + xx + np.random.default_rng(1).normal(0, 4.0, (128, 128))
    stats = m.noise_statistics(image)
    assert math.isnan(stats.dark_offset)
    assert abs(stats.gain) < 0.05
    assert stats.noise_sigma == pytest.approx(4.0, rel=0.05)   # κ-corrected residual
    assert m.noise_kernel().sum() == pytest.approx(1.0)
    assert stats.kernel_factor == pytest.approx(0.8588, abs=1e-4)
