"""z positions, output grid and interpolation weights of the ``resampling`` step.

All positions are in the stack's length unit (µm by PyStack3D's naming convention), along
the milling direction. Input slices are identified by their index in stack order (the sort
order of the file names); only *accepted* slices, whose z is strictly greater than the z
of every slice accepted before them, take part (a slice going backwards is skipped, as in
PyStack3D).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from stack3d_core.errors import InputError

__all__ = [
    "Plan", "RELATIVE_TOLERANCE", "accepted_slices", "interpolation_plan", "output_grid",
    "policy_problem", "resolve_z", "z_from_names",
]

RELATIVE_TOLERANCE = 1e-6
"""Positions closer than this fraction of the z spacing are the same position (grid end
point, output z equal to an input z)."""


def policy_problem(policy: str) -> str | None:
    """Why ``policy`` cannot serve both to parse z and to name outputs, or None."""
    import parse

    try:
        fields = set(parse.compile(policy).named_fields)
    except Exception as exc:  # noqa: BLE001 - any parse-pattern error
        return f"not a valid parse pattern: {exc}"
    missing = [f for f in ("slice_nb", "z_coord") if f not in fields]
    if missing:
        return f"{policy!r} lacks the field(s) {', '.join('{' + f + '}' for f in missing)}"
    try:
        policy.format(slice_nb="0000", z_coord="0.0000")
    except (KeyError, IndexError, ValueError) as exc:
        return f"{policy!r} cannot format output names: {exc}"
    return None


def z_from_names(names: Sequence[str], policy: str) -> tuple[list[float] | None, int | None]:
    """z of every name, parsed with ``policy``'s ``{z_coord}`` (``float()``).

    :returns: ``(z, None)``, or ``(None, index of the first bad name)`` if a name does not
        match or its ``z_coord`` is not a finite number.
    """
    import parse

    pattern = parse.compile(policy)
    out: list[float] = []
    for index, name in enumerate(names):
        found = pattern.parse(name)
        try:
            z = float(found.named["z_coord"]) if found is not None else math.nan
        except (TypeError, ValueError):
            z = math.nan
        if not math.isfinite(z):
            return None, index
        out.append(z)
    return out, None


def accepted_slices(z: Sequence[float]) -> list[int]:
    """Indices of the slices whose z exceeds the z of every earlier accepted slice."""
    kept: list[int] = []
    for i, value in enumerate(z):
        if not kept or value > z[kept[-1]]:
            kept.append(i)
    return kept


def output_grid(z_first: float, z_last: float, dz: float) -> np.ndarray:
    """``z_first + k dz`` for ``k = 0 .. m-1``, ``m`` the largest count whose last point is at
    most ``z_last`` (within ``RELATIVE_TOLERANCE · dz``: the end point is kept when it lies on
    the grid, unlike PyStack3D's ``np.arange``)."""
    m = math.floor((z_last - z_first) / dz + RELATIVE_TOLERANCE) + 1
    return z_first + dz * np.arange(max(m, 1), dtype=np.float64)


@attrs.frozen
class Plan:
    """One output slice: its z, the input indices it is computed from, their weights, and
    the input whose TIFF tags it carries (the upper neighbour, as PyStack3D)."""

    z: float
    sources: tuple[int, ...]
    weights: tuple[float, ...]
    extras_from: int


def _lagrange(nodes: np.ndarray, z: float) -> np.ndarray:
    """Weights of the Lagrange polynomial through ``nodes`` evaluated at ``z``."""
    w = np.ones(len(nodes))
    for j in range(len(nodes)):
        for k in range(len(nodes)):
            if k != j:
                w[j] *= (z - nodes[k]) / (nodes[j] - nodes[k])
    return w


def interpolation_plan(z_in: Sequence[float], accepted: Sequence[int], z_out: Sequence[float],
                       method: str, tol: float) -> list[Plan]:
    """Sources and weights of every output z (all within the accepted range, up to ``tol``).

    * an output within ``tol`` of an accepted input z copies that slice (weight 1);
    * ``linear``: the two accepted neighbours ``z_a <= z <= z_b``, weights ``(1-t, t)``;
    * ``cubic``: Lagrange cubic through four accepted slices ``a-1, a, b, b+1`` (the stencil
      is shifted inward at the ends; with fewer than four accepted slices, all of them).
    """
    za = np.asarray([z_in[i] for i in accepted], dtype=np.float64)
    idx = np.asarray(accepted)
    n = len(za)
    plans = []
    for z in z_out:
        if n == 1:
            plans.append(Plan(float(z), (int(idx[0]),), (1.0,), int(idx[0])))
            continue
        i = int(np.clip(np.searchsorted(za, z, side="right") - 1, 0, n - 2))
        near = i if abs(z - za[i]) <= abs(z - za[i + 1]) else i + 1
        if abs(z - za[near]) <= tol:
            plans.append(Plan(float(z), (int(idx[near]),), (1.0,), int(idx[near])))
            continue
        zc = min(max(float(z), za[0]), za[-1])
        if method == "linear":
            t = (zc - za[i]) / (za[i + 1] - za[i])
            plans.append(Plan(float(z), (int(idx[i]), int(idx[i + 1])), (1.0 - t, t), int(idx[i + 1])))
            continue
        lo = min(max(i - 1, 0), max(n - 4, 0))
        stencil = np.arange(lo, min(lo + 4, n))
        w = _lagrange(za[stencil], zc)
        plans.append(Plan(float(z), tuple(int(k) for k in idx[stencil]), tuple(float(v) for v in w), int(idx[i + 1])))
    return plans


def resolve_z(names: Sequence[str], policy: str, source: str, meta_z: Sequence[float] | None,
              describe: Callable[[int], str], meta_z_from_instrument: bool = False) -> tuple[list[float], str]:
    """Input z positions and where they came from (``"names"`` or ``"metadata"``).

    ``auto``: the instrument's per-slice z positions when the reader measured them
    (``meta_z_from_instrument``: e.g. Fibics ZPos, full precision), else the names parsed
    with ``policy`` when every name matches, else the reader's metadata when it has z
    positions, else an error naming the first file that does not match. ``names`` /
    ``metadata``: only that source (``names`` reproduces PyStack3D).

    :param describe: slice index -> file path shown in messages.
    :raises InputError: naming the first file whose name does not match ``policy``.
    :raises ValueError: ``metadata`` asked for and the reader gives no z positions.
    """
    if source == "auto" and meta_z_from_instrument and meta_z is not None:
        source = "metadata"
    if source in ("auto", "names"):
        z, bad = z_from_names(names, policy)
        if z is not None:
            return z, "names"
        if source == "names" or meta_z is None:
            assert bad is not None
            raise InputError(describe(bad), f"the file name does not match resampling.policy = {policy!r} "
                                  "(or its z_coord is not a number)")
    if meta_z is None:
        raise ValueError("resampling.z_source = 'metadata' but the reader gives no z positions")
    if len(meta_z) != len(names):
        raise ValueError(f"the reader gives {len(meta_z)} z positions for {len(names)} slices")
    z = [float(v) for v in meta_z]
    if not all(math.isfinite(v) for v in z):
        raise ValueError("the reader's z positions are not all finite numbers")
    return z, "metadata"
