"""``resampling``: interpolate the stack onto a regular (or given) grid of z positions.

FIB-SEM slices are milled at slightly irregular depths; the depth of each slice is in its
file name (``policy``, PyStack3D's ``"slice_{slice_nb}_z={z_coord}um.tif"``) or in the
reader's metadata. This step writes one slice per output position ``z_out``:

* ``dz``: the grid ``z_first + k dz`` up to the last input z **included** when it lies on
  the grid (PyStack3D's ``np.arange`` drops it); or ``zpos_out``: explicit positions
  (strictly increasing; those outside the input range are dropped with a warning);
* ``method = "linear"`` (PyStack3D) between the two neighbouring input slices, or
  ``"cubic"``: the Lagrange cubic through the four neighbouring slices (exact for cubic
  variations of the gray level along z; shifted stencil at both ends);
* an output lying on an input z (within 10⁻⁶ of the spacing) is that slice, unchanged.

Slices whose z does not exceed that of every earlier slice are skipped (PyStack3D does the
same for a z going backwards) and listed in a warning. z precedence (``z_source =
"auto"``): the file names when every name matches ``policy``, else the reader's
metadata (``StackMeta.z_positions``), else an error naming the first file that does not
match.

Output names: ``policy.format(slice_nb=f"{j:04d}", z_coord=f"{z:.4f}")`` (more digits
when there are 10 000 outputs or more, so that names keep sorting in z order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
import numpy as np

from stack3d_core import SliceJob, StackMeta, Step, StepContext, StepKind
from stack3d_core.errors import InputError, StepError
from stack3d_core.stepkit import save_array, write_text

from ._resampling_z import (
    RELATIVE_TOLERANCE,
    Plan,
    accepted_slices,
    interpolation_plan,
    output_grid,
    policy_problem,
    resolve_z,
)

__all__ = ["STEPS", "Resampling", "ResamplingParams", "ResamplingState"]

DEFAULT_POLICY = "slice_{slice_nb}_z={z_coord}um.tif"


def _policy_ok(_: Any, attribute: attrs.Attribute, value: str) -> None:
    problem = policy_problem(value)
    if problem:
        raise ValueError(problem)


def _dz_ok(_: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"dz must be a positive number of z units (got {value})")


def _zpos_ok(_: Any, attribute: attrs.Attribute, value: tuple[float, ...] | None) -> None:
    if value is None:
        return
    z = np.asarray(value, dtype=np.float64)
    if z.size == 0:
        raise ValueError("zpos_out is empty")
    if not np.isfinite(z).all():
        raise ValueError("zpos_out holds a value that is not a finite number")
    if np.any(np.diff(z) <= 0):
        k = int(np.argmax(np.diff(z) <= 0))
        raise ValueError(f"zpos_out must be strictly increasing (item {k + 1} = {z[k + 1]} "
                         f"follows {z[k]})")


@attrs.frozen(kw_only=True)
class ResamplingParams:
    """Parameters of ``resampling`` (PyStack3D's keys, plus ``method`` and ``z_source``)."""

    TEMPLATE: ClassVar[dict[str, Any]] = {"dz": 0.01}
    """Values ``stack3d init`` writes (PyStack3D's template): ``dz`` or ``zpos_out`` is needed."""


    policy: str = attrs.field(default=DEFAULT_POLICY, validator=_policy_ok, metadata={
        "doc": "parse pattern of the slice names with the fields {slice_nb} and {z_coord}: "
               "reads z from the input names and names the outputs", "unit": "-"})
    dz: float | None = attrs.field(default=None, validator=_dz_ok, metadata={
        "doc": "output spacing: grid z_first + k dz up to the last input z (included when on "
               "the grid); ignored when zpos_out is given", "unit": "z unit (µm)"})
    zpos_out: tuple[float, ...] | None = attrs.field(default=None, validator=_zpos_ok, metadata={
        "doc": "explicit output positions, strictly increasing (a TOML array; PyStack3D "
               "accepts only a numpy array set from Python); wins over dz", "unit": "z unit (µm)"})
    method: Literal["linear", "cubic"] = attrs.field(default="linear", metadata={
        "doc": "interpolation along z: 'linear' (2 neighbouring slices, PyStack3D) or 'cubic' "
               "(Lagrange cubic through 4 neighbouring slices)", "unit": "-"})
    z_source: Literal["auto", "names", "metadata"] = attrs.field(default="auto", metadata={
        "doc": "where the input z come from: 'names' (policy), 'metadata' (the reader's z "
               "positions) or 'auto' (names if they all match, else metadata)", "unit": "-"})


@attrs.frozen
class ResamplingState:
    """The input positions, the output grid and what each output is computed from."""

    z_in: tuple[float, ...]
    z_source: str
    accepted: tuple[int, ...]
    plans: tuple[Plan, ...]
    digits: int

    @property
    def z_out(self) -> tuple[float, ...]:
        return tuple(p.z for p in self.plans)

    @property
    def skipped(self) -> tuple[int, ...]:
        kept = set(self.accepted)
        return tuple(i for i in range(len(self.z_in)) if i not in kept)


class Resampling(Step):
    """Interpolate along z onto ``dz`` or ``zpos_out``."""

    name = "resampling"
    description = "interpolate slices onto a regular z grid (dz) or given z positions (linear or cubic)"
    Params = ResamplingParams
    kind = StepKind.MAP

    def combine(self, ctx: StepContext, measures: Any) -> ResamplingState:
        p = self.params
        if p.dz is None and p.zpos_out is None:
            raise ValueError("set resampling.dz (a regular grid) or resampling.zpos_out (explicit positions)")
        reader = getattr(ctx, "reader", None)

        def describe(index: int) -> str:
            return reader.describe(ctx.channel, index) if reader is not None else ctx.names[index]

        try:
            z_in, source = resolve_z(ctx.names, p.policy, p.z_source, ctx.meta.z_positions, describe,
                                     ctx.meta.instrument.get("z_source") == "instrument")
        except InputError as exc:
            raise StepError(self.name, exc.message, channel=ctx.channel, file=exc.path) from exc
        accepted = accepted_slices(z_in)
        if len(accepted) < len(z_in):
            skipped = [ctx.names[i] for i in range(len(z_in)) if i not in set(accepted)]
            shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            ctx.warn(f"{len(skipped)} slice(s) skipped: their z does not exceed that of an earlier slice "
                     f"({shown})")
        z_first, z_last = z_in[accepted[0]], z_in[accepted[-1]]
        steps = np.diff([z_in[i] for i in accepted])
        spacing = p.dz if p.zpos_out is None else (float(np.median(steps)) if len(steps) else 1.0)
        tol = RELATIVE_TOLERANCE * float(spacing)
        if p.zpos_out is not None:
            if p.dz is not None:
                ctx.warn("both dz and zpos_out are set: zpos_out is used (as in PyStack3D)")
            wanted = np.asarray(p.zpos_out, dtype=np.float64)
            inside = (wanted >= z_first - tol) & (wanted <= z_last + tol)
            if not inside.all():
                ctx.warn(f"{int((~inside).sum())} of {len(wanted)} zpos_out value(s) lie outside the input "
                         f"range [{z_first}, {z_last}] and are dropped")
            z_out = wanted[inside]
            if z_out.size == 0:
                raise ValueError(f"no zpos_out value lies within the input z range [{z_first}, {z_last}]")
        else:
            z_out = output_grid(z_first, z_last, float(spacing))
        plans = interpolation_plan(z_in, accepted, z_out.tolist(), p.method, tol)
        digits = max(4, len(str(len(plans) - 1)))
        return ResamplingState(tuple(z_in), source, tuple(accepted), tuple(plans), digits)

    def plan(self, ctx: StepContext, state: ResamplingState) -> list[SliceJob]:
        fmt = self.params.policy
        return [SliceJob(j, fmt.format(slice_nb=f"{j:0{state.digits}d}", z_coord=f"{pl.z:.4f}"),
                         pl.sources, pl.extras_from, pl.weights)
                for j, pl in enumerate(state.plans)]

    def apply_job(self, images: Sequence[np.ndarray], job: SliceJob, state: ResamplingState) -> np.ndarray:
        weights = job.data
        out = weights[0] * np.asarray(images[0], dtype=np.float64)  # weight 1.0: an exact copy
        for image, w in zip(images[1:], weights[1:], strict=True):
            out += w * np.asarray(image, dtype=np.float64)
        return out

    def output_meta(self, ctx: StepContext, state: ResamplingState, jobs: Sequence[SliceJob]) -> StackMeta:
        meta = ctx.meta.evolve(n=len(jobs), z_positions=state.z_out)
        if meta.pixel_size is not None and self.params.zpos_out is None and self.params.dz is not None:
            x, y, _ = meta.pixel_size
            meta = meta.evolve(pixel_size=(x, y, float(self.params.dz)))
        return meta

    def finish(self, ctx: StepContext, state: ResamplingState, stats: np.ndarray) -> None:
        out = ctx.outputs_dir
        z_in, z_out = np.asarray(state.z_in), np.asarray(state.z_out)
        save_array(out / "zpos_in.npy", z_in)
        save_array(out / "zpos_out.npy", z_out)
        p = self.params
        grid = f"zpos_out ({len(p.zpos_out or ())} given)" if p.zpos_out is not None else f"dz = {p.dz}"
        skipped = ", ".join(ctx.names[i] for i in state.skipped) or "none"
        write_text(out / "log.txt", (
            f"Original z-shape: {len(z_in)}\nNew z-shape: {len(z_out)}\n"
            f"z source: {state.z_source}\nInput z range: [{z_in[list(state.accepted)].min()}, "
            f"{z_in[list(state.accepted)].max()}]\nOutput z range: [{z_out.min()}, {z_out.max()}]\n"
            f"Grid: {grid}\nMethod: {p.method}\nSkipped input slices (z not increasing): {skipped}\n"))
        plot_z(z_in, z_out, state.skipped, out, ctx.meta.unit)


def plot_z(z_in: np.ndarray, z_out: np.ndarray, skipped: Sequence[int], out: Path, unit: str) -> None:
    """``z_positions.png`` (z against slice index, in and out; skipped inputs marked) and
    ``z_increments.png`` (successive differences)."""
    from ._figures import new_figure, save_figure

    unit = "µm" if unit == "um" else unit
    for name, (y_in, y_out), label in (("z_positions.png", (z_in, z_out), f"z ({unit})"),
                                       ("z_increments.png", (np.diff(z_in), np.diff(z_out)), f"dz ({unit})")):
        fig, ax = new_figure(figsize=(7, 4.5))
        ax.plot(y_in, ".-", label=f"in ({len(z_in)} slices)", lw=0.8)
        ax.plot(y_out, ".-", label=f"out ({len(z_out)} slices)", lw=0.8)
        if name == "z_positions.png" and len(skipped):
            ax.plot(list(skipped), z_in[list(skipped)], "rx", label="skipped (z not increasing)")
        ax.set_xlabel("slice index")
        ax.set_ylabel(label)
        ax.set_title("resampling: " + ("z positions" if name == "z_positions.png" else "z increments"))
        ax.legend()
        save_figure(fig, out / name)


STEPS: list[type[Step]] = [Resampling]
"""The steps this module provides (collected by :mod:`stack3d_steps.plugin`)."""
