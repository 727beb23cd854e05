"""Registration matrices: measurement with pystackreg, composition, drift handling, decomposition.

**Convention** (PyStack3D's and pystackreg's). A matrix is a 3x3 homogeneous array acting
on ``(x, y, 1)`` with ``x`` = column and ``y`` = row in pixels, origin at the centre of
the top-left pixel of the *full* image. The pair matrix ``M`` of slices ``(j, i)``
(``j < i``) maps coordinates in slice ``j`` (the reference) to the coordinates of the same
material in slice ``i`` (the moving slice), as returned by
``StackReg(...).register(ref=slice_j, mov=slice_i)``: it is the *inverse map* that warps
slice ``i`` onto slice ``j``. The cumulative matrix ``T_k`` maps slice-0 coordinates to
slice ``k``; it is built by the chain ``T_k = M_(k-1,k) @ T_(k-1)``, ``T_0 = I``.

Arrays of matrices have shape ``(n, nb, 3, 3)``: ``n`` slices, ``nb = p * q`` blocks in
row-major order (``tmats.npy``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "TRANSFORMATIONS", "block_bounds", "chain", "constant_drift_removal", "decompose",
    "project", "register_pair", "relative_from_cumulative", "running_average_removal",
    "subpixel_deadband",
]

TRANSFORMATIONS = ("TRANSLATION", "RIGID_BODY", "SCALED_ROTATION", "AFFINE")
"""pystackreg transformation names accepted by ``registration_calculation``."""


def block_bounds(bounds: tuple[int, int, int, int], nb_blocks: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Array bounds ``(imin, imax, jmin, jmax)`` of the ``p x q`` blocks of the region
    ``bounds``, row-major. Blocks have ``(rows // p, cols // q)`` pixels; the remainder at
    the bottom and right is not used (as PyStack3D's ``view_as_blocks``)."""
    imin, imax, jmin, jmax = bounds
    p, q = nb_blocks
    h, w = (imax - imin) // p, (jmax - jmin) // q
    return [(imin + a * h, imin + (a + 1) * h, jmin + b * w, jmin + (b + 1) * w) for a in range(p) for b in range(q)]


def _shift(c0: float, r0: float) -> np.ndarray:
    return np.array([[1.0, 0.0, c0], [0.0, 1.0, r0], [0.0, 0.0, 1.0]])


def register_pair(ref: np.ndarray, mov: np.ndarray, transformation: str,
                  blocks: Sequence[tuple[int, int, int, int]], threshold: float | None) -> np.ndarray:
    """pystackreg matrices of the pair (``ref``, ``mov``) for every block, ``(nb, 3, 3)``.

    Each block is registered on its own sub-image; its matrix, expressed by pystackreg in
    the block's local coordinates (origin at the block's top-left pixel), is converted to
    full-image coordinates ``S @ M @ S^-1`` with ``S`` the translation to the block's
    origin. Translations are unchanged by this; PyStack3D skips it, so its rotations
    registered on an ``area`` or on blocks turn about the wrong point.

    :param threshold: if set, register the binary images ``image <= threshold`` (dark = 1).
    """
    from pystackreg import StackReg

    sr = StackReg(getattr(StackReg, transformation))
    out = np.empty((len(blocks), 3, 3))
    for b, (imin, imax, jmin, jmax) in enumerate(blocks):
        r = np.asarray(ref[imin:imax, jmin:jmax])
        m = np.asarray(mov[imin:imax, jmin:jmax])
        if threshold is not None:
            r, m = (r <= threshold).astype(np.float64), (m <= threshold).astype(np.float64)
        local = sr.register(r, m)
        s = _shift(jmin, imin)
        out[b] = s @ local @ np.linalg.inv(s) if (imin or jmin) else local
    return out


def chain(pairwise: np.ndarray) -> np.ndarray:
    """Cumulative matrices ``T_k = M_k @ T_(k-1)`` of ``(n, nb, 3, 3)`` pair matrices
    (``M_k`` for the pair ``(k-1, k)``; ``M_0`` is taken as it is, normally the identity).

    This is the order in which inverse maps compose (pystackreg's ``register_stack``).
    PyStack3D's ``cumdot`` computes ``T_(k-1) @ M_k``, which agrees only when the
    matrices commute (pure translations).
    """
    out = np.empty_like(pairwise, dtype=np.float64)
    out[0] = pairwise[0]
    for k in range(1, len(pairwise)):
        out[k] = pairwise[k] @ out[k - 1]
    return out


def relative_from_cumulative(cumulative: np.ndarray) -> np.ndarray:
    """Pair matrices ``M_k = T_k @ T_(k-1)^-1`` (``M_0 = T_0``) whose :func:`chain` gives
    back ``cumulative``."""
    out = np.empty_like(cumulative)
    out[0] = cumulative[0]
    out[1:] = cumulative[1:] @ np.linalg.inv(cumulative[:-1])
    return out


def subpixel_deadband(pairwise: np.ndarray) -> np.ndarray:
    """PyStack3D's ``subpixel = false``: pair translations with ``|t| < 1`` px are set to 0
    (a dead band, not rounding; larger shifts keep their fraction)."""
    out = np.array(pairwise, dtype=np.float64)
    t = out[..., :2, 2]
    t[np.abs(t) < 1] = 0.0
    return out


def constant_drift_removal(cumulative: np.ndarray, drift: tuple[float, float]) -> np.ndarray:
    """Subtract ``k * drift`` (``(dx, dy)`` px per slice, x = column, y = row downward) from
    the translation of cumulative matrix ``k``."""
    out = np.array(cumulative, dtype=np.float64)
    k = np.arange(len(out), dtype=np.float64)[:, None]
    out[..., 0, 2] -= k * drift[0]
    out[..., 1, 2] -= k * drift[1]
    return out


def running_average_removal(cumulative: np.ndarray, box_size: int) -> np.ndarray:
    """``T + I - uniform_filter1d(T, box_size, axis=0)`` (scipy's default ``reflect`` ends):
    keeps the slice-to-slice part, removes the slow one. ``box_size`` 0 or 1: unchanged."""
    if box_size <= 1:
        return np.array(cumulative, dtype=np.float64)
    from scipy.ndimage import uniform_filter1d

    return cumulative + np.eye(3) - uniform_filter1d(np.asarray(cumulative, dtype=np.float64), box_size, axis=0)


def project(matrix: np.ndarray, transformation: str, centre: tuple[float, float]) -> np.ndarray:
    """The closest matrix of the class ``transformation`` to the affine ``matrix``, keeping
    the image of ``centre`` (x, y) fixed: TRANSLATION drops the linear part, RIGID_BODY
    keeps the rotation of its polar decomposition, SCALED_ROTATION the nearest similarity;
    AFFINE is unchanged."""
    m = np.array(matrix, dtype=np.float64)
    if transformation == "AFFINE":
        return m
    a = m[:2, :2]
    if transformation == "TRANSLATION":
        lin = np.eye(2)
    elif transformation == "RIGID_BODY":
        u, _, vt = np.linalg.svd(a)
        d = np.sign(np.linalg.det(u @ vt)) or 1.0
        lin = u @ np.diag([1.0, d]) @ vt
    else:
        c, s = (a[0, 0] + a[1, 1]) / 2, (a[1, 0] - a[0, 1]) / 2
        lin = np.array([[c, -s], [s, c]])
    ctr = np.asarray(centre, dtype=np.float64)
    image = a @ ctr + m[:2, 2]
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = image - lin @ ctr
    return out


def decompose(matrix: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """``(tx, ty, rotation, scale_x, scale_y, shear)`` of an affine matrix with
    scikit-image's ``AffineTransform`` definitions (rotation and shear in radians, in the
    image frame: y downward, positive rotation clockwise on screen)."""
    m = np.asarray(matrix, dtype=np.float64)
    rotation = math.atan2(m[1, 0], m[0, 0])
    shear = math.atan2(-m[0, 1], m[1, 1]) - rotation
    sx = math.hypot(m[0, 0], m[1, 0])
    sy = math.sqrt((m[0, 1] ** 2 + m[1, 1] ** 2) / (math.tan(shear) ** 2 + 1))
    return float(m[0, 2]), float(m[1, 2]), rotation, sx, sy, shear
