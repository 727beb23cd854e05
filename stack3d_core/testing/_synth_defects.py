"""Defect models of the synthetic stack: z positions, motion, gains, background, curtains.

All functions are pure numpy. Generators take a :class:`numpy.random.Generator` and
return plain JSON-ready tables (lists of Python floats/ints); renderers take those tables,
so a stack rebuilt from its saved truth renders identically.

Units: intensities are fractions of the full dtype scale; lengths are pixels unless the
name says ``_um``; angles are degrees. Image coordinates: ``x`` = column, ``y`` = row,
origin at the centre of the top-left pixel.
"""

from __future__ import annotations

import re
import string
from typing import Any

import numpy as np

__all__ = [
    "background_image", "gain_tables", "generate_affine", "generate_curtains", "generate_gain_segments",
    "generate_motion", "generate_z", "inverse_motion_matrix", "motion_matrix", "smooth_curve",
    "stripes_image", "z_decimals",
]

GAIN_CHOICES = (0.8, 0.85, 1.1, 1.15)


# -- 1. z positions -----------------------------------------------------------------
def z_decimals(name_pattern: str) -> int | None:
    """Decimals of the ``{z:.Nf}`` field of a file-name pattern (``None``: no such field)."""
    for _, field, spec, _ in string.Formatter().parse(name_pattern):
        if field == "z" and spec:
            m = re.fullmatch(r".*\.(\d+)f", spec)
            if m:
                return int(m.group(1))
    return None


def generate_z(rng: np.random.Generator, n: int, dz_um: float, nonuniform: bool,
               jitter: float, double_prob: float, decimals: int | None) -> list[float]:
    """True slice positions in µm: ``z_0 = 0``, steps ``dz * (1 + U(-jitter, jitter))``,
    a step doubled with probability ``double_prob`` (a missing slice); uniform steps when
    ``nonuniform`` is false. Rounded to ``decimals`` so file names hold the exact value."""
    steps = np.full(max(n - 1, 0), dz_um)
    if nonuniform and n > 1:
        steps = steps * (1.0 + rng.uniform(-jitter, jitter, n - 1))
        doubled = rng.uniform(0.0, 1.0, n - 1) < double_prob
        if n > 4 and not doubled.any():
            doubled[int(rng.integers(1, n - 2))] = True    # at least one thick slice
        steps = np.where(doubled, 2.0 * steps, steps)
    z = np.concatenate([[0.0], np.cumsum(steps)])
    if decimals is not None:
        z = np.array([float(f"{v:.{decimals}f}") for v in z])
    if np.any(np.diff(z) <= 0):
        raise ValueError("slice positions are not strictly increasing after rounding to the "
                         "file-name precision: increase dz_um or the {z:.Nf} decimals")
    return z.tolist()


# -- 2. motion --------------------------------------------------------------------
def generate_motion(rng: np.random.Generator, n: int, drift: tuple[float, float],
                    jitter_px: float, rotation_deg_max: float) -> dict[str, list[float]]:
    """Per-slice translation (px) and rotation (deg); slice 0 is the reference (0, 0, 0).

    ``d_k = k * drift + N(0, jitter_px)`` per axis; ``theta_k`` is a smooth random curve
    (three low-frequency sinusoids) scaled so ``max |theta| = rotation_deg_max``.
    """
    k = np.arange(n, dtype=np.float64)
    jit = rng.standard_normal((2, n)) * jitter_px
    jit[:, 0] = 0.0
    dx = k * drift[0] + jit[0]
    dy = k * drift[1] + jit[1]
    theta = np.zeros(n)
    if rotation_deg_max > 0 and n > 1:
        t = k / (n - 1)
        freq = rng.uniform(0.3, 2.5, 3)
        ph = rng.uniform(0.0, 2.0 * np.pi, 3)
        w = rng.uniform(0.5, 1.0, 3)
        u = sum(w[j] * (np.sin(2 * np.pi * freq[j] * t + ph[j]) - np.sin(ph[j])) for j in range(3))
        peak = np.max(np.abs(u))
        if peak > 0:
            theta = rotation_deg_max * u / peak
    return {"dx_px": dx.tolist(), "dy_px": dy.tolist(), "theta_deg": theta.tolist()}


def smooth_curve(rng: np.random.Generator, n: int, peak: float) -> np.ndarray:
    """A smooth random curve over the slices, 0 at slice 0, ``max |curve| = peak``: three
    low-frequency sinusoids (0.3 to 2.5 periods over the stack), as the rotation of
    :func:`generate_motion`. Zeros when ``peak == 0`` or ``n < 2`` (no draw is made)."""
    curve = np.zeros(n)
    if peak > 0 and n > 1:
        t = np.arange(n, dtype=np.float64) / (n - 1)
        freq = rng.uniform(0.3, 2.5, 3)
        ph = rng.uniform(0.0, 2.0 * np.pi, 3)
        w = rng.uniform(0.5, 1.0, 3)
        u = sum(w[j] * (np.sin(2 * np.pi * freq[j] * t + ph[j]) - np.sin(ph[j])) for j in range(3))
        top = np.max(np.abs(u))
        if top > 0:
            curve = peak * u / top
    return curve


def generate_affine(rng_scale: np.random.Generator, rng_shear: np.random.Generator, n: int,
                    scale_max: float, shear_max: float) -> dict[str, list[float]]:
    """Per-slice scale factors and shear (optional affine part of the motion).

    ``scale_x_k = 1 + sx_k`` and ``scale_y_k = 1 + sy_k`` with ``sx``, ``sy`` two
    independent :func:`smooth_curve` of peak ``scale_max`` (a fraction: 0.01 = 1 %);
    ``shear_k`` (x += shear * y, dimensionless) a smooth curve of peak ``shear_max``.
    Slice 0 has scale 1 and shear 0. Drawn from their own streams, so switching them on
    leaves every other table unchanged.
    """
    sx = smooth_curve(rng_scale, n, scale_max)
    sy = smooth_curve(rng_scale, n, scale_max)
    sh = smooth_curve(rng_shear, n, shear_max)
    return {"scale_x": (1.0 + sx).tolist(), "scale_y": (1.0 + sy).tolist(), "shear": sh.tolist()}


def motion_matrix(dx: float, dy: float, theta_deg: float, shape: tuple[int, int],
                  scale_x: float = 1.0, scale_y: float = 1.0, shear: float = 0.0) -> np.ndarray:
    """3x3 map from reference (slice-0) coordinates ``(x=col, y=row, 1)`` to the coordinates
    of the same material point in the observed slice: ``q = R(theta) K (p - ctr) + ctr + d``
    with ``ctr = ((W-1)/2, (H-1)/2)``, ``R = [[cos, -sin], [sin, cos]]`` and
    ``K = [[scale_x, shear * scale_y], [0, scale_y]]`` (scale per axis, then shear
    ``x += shear * y``; ``K = I`` by default)."""
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    if scale_x != 1.0 or scale_y != 1.0 or shear != 0.0:
        th = np.deg2rad(theta_deg)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        lin = rot @ np.array([[scale_x, shear * scale_y], [0.0, scale_y]])
        ctr = np.array([cx, cy])
        out = np.eye(3)
        out[:2, :2] = lin
        out[:2, 2] = ctr + np.array([dx, dy]) - lin @ ctr
        return out
    th = np.deg2rad(theta_deg)
    c, s = np.cos(th), np.sin(th)
    if theta_deg == 0:
        return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
    return np.array([[c, -s, cx + dx - (c * cx - s * cy)],
                     [s, c, cy + dy - (s * cx + c * cy)],
                     [0.0, 0.0, 1.0]])


def inverse_motion_matrix(dx: float, dy: float, theta_deg: float,
                          shape: tuple[int, int], scale_x: float = 1.0, scale_y: float = 1.0,
                          shear: float = 0.0) -> np.ndarray:
    """Inverse of :func:`motion_matrix` in closed form: observed ``(col, row, 1)`` to
    reference coordinates, ``p = K^-1 R(-theta) (q - ctr - d) + ctr`` (exact for theta = 0
    and ``K = I``)."""
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    if scale_x != 1.0 or scale_y != 1.0 or shear != 0.0:
        th = np.deg2rad(theta_deg)
        rot_t = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
        k_inv = np.array([[1.0 / scale_x, -shear / scale_x], [0.0, 1.0 / scale_y]])
        lin = k_inv @ rot_t
        ctr = np.array([cx, cy])
        out = np.eye(3)
        out[:2, :2] = lin
        out[:2, 2] = ctr - lin @ (ctr + np.array([dx, dy]))
        return out
    th = np.deg2rad(theta_deg)
    c, s = np.cos(th), np.sin(th)
    if theta_deg == 0:
        return np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy], [0.0, 0.0, 1.0]])
    tx, ty = cx + dx, cy + dy
    return np.array([[c, s, cx - (c * tx + s * ty)],
                     [-s, c, cy - (-s * tx + c * ty)],
                     [0.0, 0.0, 1.0]])


# -- 3. gains ---------------------------------------------------------------------
def generate_gain_segments(rng: np.random.Generator, n: int,
                           n_segments: int | None) -> list[list[Any]]:
    """Gain/offset jumps ``[start, stop, gain, offset]`` (slices ``start <= k < stop``).

    Gains come from :data:`GAIN_CHOICES`; ``offset = (1 - gain) / 2 + U(-0.01, 0.01)``
    (so the mid-grey stays near 0.5). Slice 0 keeps gain 1, offset 0. ``None``: one
    segment per 32 slices (at least one when ``n >= 3``).
    """
    if n_segments is None:
        n_segments = max(1, n // 32) if n >= 3 else 0
    if n < 2:
        return []
    segs: list[list[Any]] = []
    max_len = max(2, min(12, n // 4))
    for _ in range(n_segments):
        length = int(rng.integers(2, max_len + 1)) if max_len > 2 else 2
        length = min(length, n - 1)
        start = int(rng.integers(1, n - length + 1))
        gain = float(GAIN_CHOICES[int(rng.integers(len(GAIN_CHOICES)))])
        offset = round((1.0 - gain) * 0.5 + float(rng.uniform(-0.01, 0.01)), 4)
        segs.append([start, start + length, gain, offset])
    return segs


def gain_tables(n: int, segments: list[list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice gain and offset arrays (later segments override earlier ones)."""
    gain, offset = np.ones(n), np.zeros(n)
    for start, stop, g, o in segments:
        gain[int(start):int(stop)] = g
        offset[int(start):int(stop)] = o
    return gain, offset


# -- 4. background ----------------------------------------------------------------
def background_image(terms: list[list[float]] | tuple, k: int, n: int,
                     shape: tuple[int, int]) -> np.ndarray:
    """``sum c * xh**px * yh**py * zh**pz`` with ``xh = linspace(0, 1, W)`` (columns),
    ``yh = linspace(0, 1, H)`` (rows, top row 0), ``zh = k / (n - 1)`` (0 if n == 1)."""
    h, w = shape
    xh = np.linspace(0.0, 1.0, w)
    yh = np.linspace(0.0, 1.0, h)
    zh = k / (n - 1) if n > 1 else 0.0
    out = np.zeros((h, w))
    for px, py, pz, coef in terms:
        fz = float(coef) * zh ** int(pz)
        if fz != 0.0:
            out += fz * np.outer(yh ** int(py), xh ** int(px))
    return out


# -- 5. curtains ------------------------------------------------------------------
CURTAIN_KEYS = ("k_start", "k_stop", "x0", "sigma", "length", "tilt_deg", "amplitude",
                "variation", "period", "phase")


def generate_curtains(rng: np.random.Generator, n: int, width: int, density: float,
                      sigma_px: tuple[float, float], length_px: tuple[float, float],
                      full_height_fraction: float, amplitude: tuple[float, float],
                      tilt_deg_max: float, run_slices: tuple[int, int]) -> dict[str, list[Any]]:
    """Curtain table. Each curtain is active on slices ``k_start <= k < k_stop`` (a run of
    ``run_slices`` slices); on average ``density * width`` are active per slice.

    Columns: ``x0`` (column of the stripe at row 0, px), ``sigma`` (Gaussian width in x,
    px), ``length`` (rows over which it decays from the top edge; 0 = whole height),
    ``tilt_deg``, ``amplitude`` (signed fraction), ``variation``, ``period`` (slices) and
    ``phase`` (rad) of the slow amplitude modulation. Values are rounded (short JSON).
    """
    r0, r1 = int(run_slices[0]), max(int(run_slices[1]), int(run_slices[0]))
    mean_run = min(0.5 * (r0 + r1), n)
    count = int(round(density * width * (n + mean_run - 1) / max(mean_run, 1.0)))
    run = rng.integers(r0, r1 + 1, count)
    start = rng.integers(-run + 1, n)
    k_start = np.maximum(start, 0)
    k_stop = np.minimum(start + run, n)
    tilt = rng.uniform(-tilt_deg_max, tilt_deg_max, count)
    x0 = rng.uniform(0.0, width - 1.0, count)
    sig = rng.uniform(sigma_px[0], sigma_px[1], count)
    length = rng.uniform(length_px[0], length_px[1], count)
    length = np.where(rng.uniform(0.0, 1.0, count) < full_height_fraction, 0.0, length)
    amp = rng.uniform(amplitude[0], amplitude[1], count) * rng.choice([-1.0, 1.0], count)
    var = rng.uniform(0.0, 0.3, count)
    period = rng.uniform(8.0, 40.0, count)
    phase = rng.uniform(0.0, 2.0 * np.pi, count)
    order = np.argsort(k_start, kind="stable")
    cols = {"k_start": k_start, "k_stop": k_stop, "x0": np.round(x0, 3),
            "sigma": np.round(sig, 3), "length": np.round(length, 2),
            "tilt_deg": np.round(tilt, 3), "amplitude": np.round(amp, 4),
            "variation": np.round(var, 3), "period": np.round(period, 2),
            "phase": np.round(phase, 4)}
    return {key: cols[key][order].tolist() for key in CURTAIN_KEYS}


def stripes_image(curtains: dict[str, np.ndarray], k: int, shape: tuple[int, int]) -> np.ndarray:
    """The curtain image of slice ``k`` (float64, signed fraction), observed frame.

    A curtain adds ``A_k * exp(-(col - xc(row))**2 / (2 sigma**2)) * p(row)`` with
    ``xc(row) = x0 + tan(tilt) * row``, ``p = (1 - row/length)**2`` for ``row < length``
    (0 beyond) or 1 when ``length == 0``, and
    ``A_k = amplitude * (1 + variation * sin(2 pi (k - k_start) / period + phase))``.
    The Gaussian is evaluated within ``ceil(5 sigma) + 1`` columns of ``xc``.
    """
    h, w = shape
    out = np.zeros((h, w))
    ks, ke = curtains["k_start"], curtains["k_stop"]
    for i in np.nonzero((ks <= k) & (k < ke))[0]:
        amp = curtains["amplitude"][i] * (1.0 + curtains["variation"][i] * np.sin(
            2.0 * np.pi * (k - ks[i]) / curtains["period"][i] + curtains["phase"][i]))
        length = curtains["length"][i]
        n_rows = h if length <= 0 else min(h, int(np.ceil(length)))
        rows = np.arange(n_rows, dtype=np.float64)
        prof = np.ones(n_rows) if length <= 0 else (1.0 - rows / length) ** 2
        xc = curtains["x0"][i] + np.tan(np.deg2rad(curtains["tilt_deg"][i])) * rows
        sig = curtains["sigma"][i]
        half = int(np.ceil(5.0 * sig)) + 1
        cols = np.floor(xc).astype(np.int64)[:, None] + np.arange(-half, half + 1)
        vals = (amp * prof)[:, None] * np.exp(-((cols - xc[:, None]) ** 2) / (2.0 * sig * sig))
        ok = (cols >= 0) & (cols < w)
        rr = np.broadcast_to(np.arange(n_rows)[:, None], cols.shape)
        out[rr[ok], cols[ok]] += vals[ok]
    return out
