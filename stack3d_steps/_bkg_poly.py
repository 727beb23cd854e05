"""Polynomial basis of ``bkg_removal``: powers, expressions, separable evaluation, sampling.

Coordinate conventions (PyStack3D's, spec §1.7):

* ``x`` = column index scaled to [0, 1]: ``linspace(0, 1, W)[col]``;
* ``y`` = row index scaled to [0, 1], **top row y = 0**: ``linspace(0, 1, H)[row]``;
* ``z`` = slice index in the processed stack scaled to [0, 1]: ``k / (n - 1)`` (0 when
  ``n == 1``).

A term is a tuple of powers ``(px, py)`` or ``(px, py, pz)``; its basis function is
``x**px * y**py (* z**pz)``. Terms are kept in ``itertools.product`` order (lexicographic
on the power tuples), so the constant term always comes first.

The background of a slice is evaluated separably: ``Y @ (A @ X)`` with ``X[p] = x**p``
(one row per x power), ``Y[:, p] = y**p`` and ``A[py, px]`` the summed coefficients of
the terms with those powers (z already folded in). No ``H * W * q`` basis array is built.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import attrs
import numpy as np

__all__ = [
    "Powers", "Samples", "axis_coords", "design_matrix", "evaluate", "expr_from_powers",
    "powers_from_expr", "powers_from_orders", "sample_slice", "stack_mean", "valid_mask", "z_coord",
]

Powers = tuple[tuple[int, ...], ...]
_VARS = ("x", "y", "z")


def powers_from_orders(orders: Sequence[int], cross_terms: bool) -> Powers:
    """Terms of a polynomial of degree ``orders[i]`` in each variable (x, y[, z]).

    All tuples of ``itertools.product(range(ox + 1), range(oy + 1)[, range(oz + 1)])``;
    without cross terms only those with at most one non-zero power are kept.
    ``[1, 1, 1]`` with cross terms gives ``1, z, y, yz, x, xz, xy, xyz``.
    """
    ranges = [range(int(o) + 1) for o in orders]
    return tuple(p for p in itertools.product(*ranges)
                 if cross_terms or sum(1 for v in p if v) <= 1)


_FACTOR = re.compile(r"^(?:(?P<var>[a-z]+)(?:(?:\*\*|\^)(?P<pow>\d+))?|(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))$")


def powers_from_expr(expr: str, dim: int) -> Powers:
    """Terms of an explicit basis such as ``"1 + x + y + x*y + x**2 + z"``.

    Terms are separated by ``+``; a term is a product (``*``) of factors ``x``, ``y``,
    ``z`` (``z`` only when ``dim == 3``), optionally raised to an integer power with
    ``**`` or ``^``, or of numbers (ignored: the coefficients are fitted). A repeated
    variable adds its powers (``x*x`` is ``x**2``). The constant term is always added.
    Duplicates are removed and the terms sorted.

    :raises ValueError: an unknown symbol, an empty term, or ``z`` with ``dim == 2``.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3 (got {dim})")
    names = _VARS[:dim]
    found = {(0,) * dim}
    for raw in expr.replace(" ", "").split("+"):
        if not raw:
            raise ValueError(f"empty term in {expr!r}")
        powers = [0] * dim
        for factor in re.split(r"(?<!\*)\*(?!\*)", raw):
            match = _FACTOR.match(factor)
            if match is None:
                raise ValueError(f"cannot read the factor {factor!r} of the term {raw!r}")
            var = match.group("var")
            if var is None:
                continue  # a number
            if var not in names:
                hint = " (set dim = 3 to use z)" if var == "z" else ""
                raise ValueError(f"unknown variable {var!r} in the term {raw!r}; "
                                 f"variables are {', '.join(names)}{hint}")
            powers[names.index(var)] += int(match.group("pow") or 1)
        found.add(tuple(powers))
    return tuple(sorted(found))


def expr_from_powers(powers: Powers) -> str:
    """``"1 + y + x + x*y**2"``-style text of the terms (in their order)."""
    terms = []
    for p in powers:
        factors = [v if e == 1 else f"{v}**{e}" for v, e in zip(_VARS, p) if e]
        terms.append("*".join(factors) or "1")
    return " + ".join(terms)


def axis_coords(n: int) -> np.ndarray:
    """``linspace(0, 1, n)``: the scaled coordinates of ``n`` pixels along an axis."""
    return np.linspace(0.0, 1.0, int(n))


def z_coord(index: int, n: int) -> float:
    """Scaled z of slice ``index`` among ``n`` (0 when ``n == 1``)."""
    return float(index) / float(n - 1) if n > 1 else 0.0


def _power_table(values: np.ndarray, max_power: int) -> np.ndarray:
    """``(max_power + 1, len(values))``: row ``p`` is ``values ** p`` (``0 ** 0 = 1``)."""
    out = np.empty((max_power + 1, values.size), dtype=np.float64)
    out[0] = 1.0
    for p in range(1, max_power + 1):
        out[p] = out[p - 1] * values
    return out


def design_matrix(powers: Powers, x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    """``(N, q)`` basis values at ``N`` scattered points (scaled coordinates)."""
    arr = np.asarray(powers, dtype=np.int64).reshape(len(powers), -1)
    coords = [np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)]
    if arr.shape[1] == 3:
        coords.append(np.asarray(z, dtype=np.float64))
    tables = [_power_table(c, int(arr[:, i].max())) for i, c in enumerate(coords)]
    out = np.empty((coords[0].size, len(powers)), dtype=np.float64)
    for j, p in enumerate(arr):
        col = tables[0][p[0]].copy()
        for i in range(1, arr.shape[1]):
            if p[i]:
                col *= tables[i][p[i]]
        out[:, j] = col
    return out


def coefficient_table(powers: Powers, coefs: np.ndarray, z: float = 0.0) -> np.ndarray:
    """``A[py, px]``: coefficients summed per (x, y) powers, z terms evaluated at ``z``."""
    arr = np.asarray(powers, dtype=np.int64).reshape(len(powers), -1)
    table = np.zeros((int(arr[:, 1].max()) + 1, int(arr[:, 0].max()) + 1))
    for p, c in zip(arr, np.asarray(coefs, dtype=np.float64)):
        factor = z ** int(p[2]) if arr.shape[1] == 3 else 1.0
        table[p[1], p[0]] += c * factor
    return table


def evaluate(powers: Powers, coefs: np.ndarray, shape: tuple[int, int], z: float = 0.0,
             step: int = 1) -> np.ndarray:
    """The polynomial on the pixel grid of a ``shape`` slice (float64, ``(H, W)``), or on
    every ``step``-th row and column of it (thumbnails)."""
    rows, cols = shape
    table = coefficient_table(powers, coefs, z)
    x_pow = _power_table(axis_coords(cols)[::step], table.shape[1] - 1)     # (px, W)
    y_pow = _power_table(axis_coords(rows)[::step], table.shape[0] - 1).T   # (H, py)
    return y_pow @ (table @ x_pow)


def stack_mean(powers: Powers, coefs: np.ndarray, shape: tuple[int, int], n: int) -> float:
    """Mean of the polynomial over every pixel of ``n`` slices of ``shape`` (exact,
    separable: ``sum_j c_j <x**px> <y**py> <z**pz>``)."""
    rows, cols = shape
    xs, ys = axis_coords(cols), axis_coords(rows)
    zs = np.array([z_coord(k, n) for k in range(n)])
    total = 0.0
    for p, c in zip(powers, np.asarray(coefs, dtype=np.float64)):
        term = c * np.mean(xs ** p[0]) * np.mean(ys ** p[1])
        total += term * (np.mean(zs ** p[2]) if len(p) == 3 else 1.0)
    return float(total)


def valid_mask(values: np.ndarray, threshold_min: float | None, threshold_max: float | None) -> np.ndarray:
    """Pixels used by the fit: finite and within ``[threshold_min, threshold_max]``."""
    mask = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    if threshold_min is not None:
        mask &= values >= threshold_min
    if threshold_max is not None:
        mask &= values <= threshold_max
    return mask


@attrs.frozen(eq=False)
class Samples:
    """Fit samples of one slice: values and scaled coordinates (float64, same length)."""

    values: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @property
    def size(self) -> int:
        return int(self.values.size)


def sample_slice(image: np.ndarray, skip_x: int, skip_y: int, averaging: bool,
                 threshold_min: float | None, threshold_max: float | None) -> Samples:
    """Subsample a slice for the fit.

    Strided (default): pixels ``[::skip_y, ::skip_x]`` (rows by the y factor, columns by
    the x factor) at their own coordinates; pixels outside the thresholds are dropped.

    Averaging: the slice is cut into blocks of ``skip_y`` rows by ``skip_x`` columns (the
    last blocks may be smaller when the size is not a multiple of the skip); each block
    gives the mean of its valid pixels, placed at the mean coordinates of those pixels.
    Blocks without a valid pixel are dropped.
    """
    rows, cols = image.shape
    xs, ys = axis_coords(cols), axis_coords(rows)
    if not averaging:
        values = np.asarray(image[::skip_y, ::skip_x], dtype=np.float64)
        mask = valid_mask(values, threshold_min, threshold_max)
        xx = np.broadcast_to(xs[::skip_x][None, :], values.shape)
        yy = np.broadcast_to(ys[::skip_y][:, None], values.shape)
        return Samples(values[mask], xx[mask], yy[mask])
    data = np.asarray(image, dtype=np.float64)
    mask = valid_mask(data, threshold_min, threshold_max)
    weights = mask.astype(np.float64)
    data = np.where(mask, data, 0.0)
    r0, c0 = np.arange(0, rows, skip_y), np.arange(0, cols, skip_x)

    def blocks(a: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(a, r0, axis=0), c0, axis=1)

    count = blocks(weights)
    total = blocks(data)
    col_counts = np.add.reduceat(weights, r0, axis=0)                       # (H', W)
    row_counts = np.add.reduceat(weights, c0, axis=1)                       # (H, W')
    sum_x = np.add.reduceat(col_counts * xs[None, :], c0, axis=1)
    sum_y = np.add.reduceat(row_counts * ys[:, None], r0, axis=0)
    keep = count > 0
    n = count[keep]
    return Samples(total[keep] / n, sum_x[keep] / n, sum_y[keep] / n)


def profiles(image: np.ndarray, skip_x: int, skip_y: int) -> dict[str, np.ndarray]:
    """Min / max / sum of the strided grid ``[::skip_y, ::skip_x]`` along x (per column,
    over rows) and along y (per row, over columns), for the X / Y statistics plots."""
    grid = np.asarray(image[::skip_y, ::skip_x], dtype=np.float64)
    return {"x": np.stack([grid.min(axis=0), grid.max(axis=0), grid.sum(axis=0)]),
            "y": np.stack([grid.min(axis=1), grid.max(axis=1), grid.sum(axis=1)]),
            "count_x": np.full(grid.shape[1], grid.shape[0], dtype=np.float64),
            "count_y": np.full(grid.shape[0], grid.shape[1], dtype=np.float64)}


def merge_profiles(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """Combine per-slice :func:`profiles` (min of mins, max of maxes, summed sums)."""
    if not parts:
        return None
    out = {k: v.copy() for k, v in parts[0].items()}
    for part in parts[1:]:
        for axis in ("x", "y"):
            out[axis][0] = np.minimum(out[axis][0], part[axis][0])
            out[axis][1] = np.maximum(out[axis][1], part[axis][1])
            out[axis][2] += part[axis][2]
            out[f"count_{axis}"] += part[f"count_{axis}"]
    return out
