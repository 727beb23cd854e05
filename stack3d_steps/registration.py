"""``registration_calculation`` and ``registration_transformation``: align the slices.

``registration_calculation`` (PAIRWISE, first channel only, writes no image) registers
slices with pystackreg (or, for translations, by phase correlation: ``algorithm``,
:mod:`._registration_phasecorr`) and writes ``process/registration_calculation/tmats.npy``,
``(n, p*q, 3, 3)`` pair matrices in PyStack3D's convention: inverse maps acting on
``(x = column, y = row, 1)``, origin at the centre of the top-left pixel of the full
image, ``tmats[k]`` mapping slice ``k-1`` coordinates to slice ``k`` coordinates
(``tmats[0] = I``). ``registration_transformation`` (MAP, every channel) composes them
into cumulative matrices ``T_k = tmats[k] @ T_(k-1)`` (slice-0 coordinates -> slice
``k``), optionally removes a drift, and warps each slice onto slice 0.

Two ways to get the matrices (``method``):

* ``"chain"`` (default, PyStack3D's): each slice registered to its predecessor;
* ``"global"``: pairs at several distances (``pair_offsets``) and a robust weighted least
  squares over all of them (:mod:`._registration_global`); ``tmats.npy`` then holds the
  pair matrices whose chain gives that solution, so the transformation step is the same.

Details and measured accuracy: ``docs/steps/registration_calculation.md`` and
``docs/steps/registration_transformation.md``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from stack3d_core import SliceJob, StackMeta, Step, StepContext, StepKind
from stack3d_core.stepkit import save_array, write_text

from ._registration_matrices import (
    TRANSFORMATIONS,
    block_bounds,
    chain,
    constant_drift_removal,
    register_pair,
    relative_from_cumulative,
    running_average_removal,
    subpixel_deadband,
)
from .cropping import check_area, crop_indices

__all__ = ["STEPS", "RegistrationCalculation", "RegistrationCalculationParams", "RegistrationTransformation",
           "RegistrationTransformationParams", "TransformState"]

CALCULATION = "registration_calculation"
ALGORITHMS = ("pystackreg", "phase_correlation")
META_FILE = "registration.json"


def _blocks_ok(_: Any, attribute: attrs.Attribute, value: tuple[int, int] | None) -> None:
    if value is not None and min(value) < 1:
        raise ValueError(f"{attribute.name} must be two integers >= 1 (got {list(value)})")


def _offsets_ok(_: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value or min(value) < 1 or 1 not in value or len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} must be distinct integers >= 1 including 1 (got {list(value)})")


@attrs.frozen(kw_only=True)
class RegistrationCalculationParams:
    """Parameters of ``registration_calculation`` (PyStack3D's keys, plus ``method``,
    ``pair_offsets``, ``algorithm`` and ``upsample_factor``)."""

    area: tuple[int, int, int, int] | None = attrs.field(default=None, validator=check_area, metadata={
        "doc": "[xmin, xmax, ymin, ymax] sub-image used to compute the matrices (bottom-left origin, "
               "as cropping); clamped to the image with a warning; None: the whole slice", "unit": "px"})
    threshold: float | None = attrs.field(default=None, metadata={
        "doc": "if set, register the binary images 'pixel <= threshold' (dark = 1) instead of the "
               "gray levels", "unit": "gray level"})
    nb_blocks: tuple[int, int] | None = attrs.field(default=None, validator=_blocks_ok, metadata={
        "doc": "[p, q]: register p x q equal blocks (rows x columns) of the area separately, for a "
               "piecewise-affine correction; None means [1, 1]", "unit": "blocks"})
    transformation: Literal["TRANSLATION", "RIGID_BODY", "SCALED_ROTATION", "AFFINE"] = attrs.field(
        default="TRANSLATION", validator=attrs.validators.in_(TRANSFORMATIONS), metadata={
            "doc": "pystackreg transformation: TRANSLATION, RIGID_BODY, SCALED_ROTATION or AFFINE", "unit": "-"})
    method: Literal["chain", "global"] = attrs.field(default="chain", validator=attrs.validators.in_(("chain", "global")),
                                                     metadata={
        "doc": "'chain': each slice registered to the previous one (PyStack3D); 'global': pairs at every "
               "distance of pair_offsets, solved by robust weighted least squares (stack3d extension)",
        "unit": "-"})
    pair_offsets: tuple[int, ...] = attrs.field(default=(1, 2, 4), validator=_offsets_ok, metadata={
        "doc": "slice distances of the pairs registered by method = 'global' (must include 1); "
               "ignored by 'chain'", "unit": "slices"})
    algorithm: Literal["pystackreg", "phase_correlation"] = attrs.field(
        default="pystackreg", validator=attrs.validators.in_(ALGORITHMS), metadata={
            "doc": "how a pair is registered: 'pystackreg' (TurboReg, PyStack3D's) or 'phase_correlation' "
                   "(FFT, subpixel refinement; TRANSLATION only; stack3d extension)", "unit": "-"})
    upsample_factor: int = attrs.field(default=1000, validator=[attrs.validators.ge(1), attrs.validators.le(100000)],
                                       metadata={
        "doc": "algorithm = 'phase_correlation': the shifts are found on a grid of 1/upsample_factor px; "
               "ignored by pystackreg", "unit": "1/px"})

    def validate(self) -> list[str]:
        """Cross-field check: phase correlation measures translations only."""
        if self.algorithm == "phase_correlation" and self.transformation != "TRANSLATION":
            return [f"algorithm = 'phase_correlation' registers translations only: it needs transformation = "
                    f"'TRANSLATION' (got {self.transformation!r}); use algorithm = 'pystackreg' for "
                    f"{self.transformation}"]
        return []

    def __attrs_post_init__(self) -> None:
        problems = self.validate()
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def blocks(self) -> tuple[int, int]:
        """``nb_blocks`` with ``None`` read as ``(1, 1)``."""
        return tuple(self.nb_blocks) if self.nb_blocks is not None else (1, 1)  # type: ignore[return-value]


@attrs.frozen(eq=False)
class CalculationResult:
    """What ``registration_calculation`` found (the driver's state, used by ``finish``)."""

    pairwise: np.ndarray
    cumulative: np.ndarray
    blocks: tuple[tuple[int, int, int, int], ...]
    pairs: np.ndarray | None = None
    residuals: np.ndarray | None = None
    weights: np.ndarray | None = None
    sigmas: dict[int, np.ndarray] | None = None


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` written atomically (temporary file, then rename)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


class RegistrationCalculation(Step):
    """Registration matrices of the first channel (pystackreg or phase correlation), saved as
    ``tmats.npy``."""

    name = CALCULATION
    description = "registration matrices with pystackreg or phase correlation (chain or global solve) -> tmats.npy"
    Params = RegistrationCalculationParams
    kind = StepKind.PAIRWISE
    channels = "first"
    writes_images = False

    @property  # type: ignore[override]
    def pair_offsets(self) -> tuple[int, ...]:
        """``(1,)`` for the chain; the sorted ``params.pair_offsets`` for the global solve."""
        return (1,) if self.params.method == "chain" else tuple(sorted(self.params.pair_offsets))

    def _blocks(self, shape: tuple[int, int]) -> tuple[list[tuple[int, int, int, int]], list[str]]:
        bounds, warnings = crop_indices(self.params.area, shape)
        blocks = block_bounds(bounds, self.params.blocks)
        h, w = blocks[0][1] - blocks[0][0], blocks[0][3] - blocks[0][2]
        if h < 2 or w < 2:
            raise ValueError(f"nb_blocks {list(self.params.blocks)} gives blocks of {h} x {w} px on the "
                             f"{bounds[1] - bounds[0]} x {bounds[3] - bounds[2]} px area: use fewer blocks")
        return blocks, warnings

    def measure_pair(self, previous: np.ndarray, current: np.ndarray, index: int) -> np.ndarray:
        p = self.params
        blocks, _ = self._blocks(previous.shape)
        if p.algorithm == "phase_correlation":
            from ._registration_phasecorr import register_pair_phasecorr

            return register_pair_phasecorr(previous, current, blocks, p.threshold, p.upsample_factor)
        return register_pair(previous, current, p.transformation, blocks, p.threshold)

    def combine(self, ctx: StepContext, measures: Sequence[Any] | Mapping[tuple[int, int], Any]) -> CalculationResult:
        p = self.params
        n = ctx.meta.n
        blocks, warnings = self._blocks(ctx.meta.shape)
        for message in warnings:
            ctx.warn(f"area: {message}")
        nb = len(blocks)
        pairs = dict(measures) if isinstance(measures, Mapping) else {(i - 1, i): m for i, m in enumerate(measures, 1)}
        bad = sorted(ji for ji, m in pairs.items() if not np.all(np.isfinite(m)))
        for j, i in bad:
            ctx.warn(f"registration of slices ({j}, {i}) gave a non-finite matrix: pair ignored")
            del pairs[(j, i)]
        result: CalculationResult
        if p.method == "chain":
            pairwise = np.tile(np.eye(3), (n, nb, 1, 1))
            for i in range(1, n):
                if (i - 1, i) in pairs:
                    pairwise[i] = pairs[(i - 1, i)]
            result = CalculationResult(pairwise, chain(pairwise), tuple(blocks))
        else:
            from ._registration_global import solve_global

            sol = solve_global(pairs, n, p.transformation, blocks)
            reached = np.zeros(n, bool)
            reached[0] = True
            reached[sol.pairs.ravel()] = True
            for k in np.flatnonzero(~reached):
                ctx.warn(f"slice {k} is in no usable pair: left unregistered (identity)")
            result = CalculationResult(relative_from_cumulative(sol.cumulative), sol.cumulative, tuple(blocks),
                                       sol.pairs, sol.residuals, sol.weights, sol.sigmas)
            measured = np.stack([pairs[(j, i)] for j, i in sol.pairs.tolist()]) if len(sol.pairs) else \
                np.zeros((0, nb, 3, 3))
            _save_npz(ctx.outputs_dir / "pairs.npz", pairs=sol.pairs, matrices=measured,
                      residuals=sol.residuals, weights=sol.weights)
        save_array(ctx.image_dir / "tmats.npy", result.pairwise)
        write_text(ctx.outputs_dir / META_FILE, json.dumps({
            "shape": list(ctx.meta.shape), "n": n, "nb_blocks": list(p.blocks), "transformation": p.transformation,
            "algorithm": p.algorithm, "method": p.method, "pair_offsets": list(self.pair_offsets),
            "blocks": [list(b) for b in blocks], "convention": "inverse maps on (x=col, y=row, 1), origin top-left "
            "pixel; tmats[k] maps slice k-1 to slice k; cumulative T_k = tmats[k] @ T_(k-1)"}, indent=1))
        write_text(ctx.outputs_dir / "log.txt", self._log(ctx, result))
        return result

    def _log(self, ctx: StepContext, result: CalculationResult) -> str:
        p = self.params
        lines = [f"Shape (slices, rows, columns): ({ctx.meta.n}, {ctx.meta.shape[0]}, {ctx.meta.shape[1]})",
                 f"Area [xmin, xmax, ymin, ymax] (bottom-left origin): {list(p.area) if p.area else None}",
                 f"Blocks {list(p.blocks)}, array regions [imin, imax, jmin, jmax]: {[list(b) for b in result.blocks]}",
                 f"Transformation: {p.transformation}; algorithm: {self._algorithm_text()}; method: {p.method}; "
                 f"pair offsets: {list(self.pair_offsets)}"]
        if result.sigmas is not None and result.weights is not None:
            for d, s in sorted(result.sigmas.items()):
                lines.append(f"offset {d}: estimated pair noise {np.round(s, 4).tolist()} px")
            lines.append(f"pairs down-weighted below 0.5: {int((result.weights.min(axis=1) < 0.5).sum())}")
        return "\n".join(lines) + "\n"

    def _algorithm_text(self) -> str:
        p = self.params
        return f"phase_correlation (upsample_factor {p.upsample_factor})" if p.algorithm == "phase_correlation" \
            else p.algorithm

    def finish(self, ctx: StepContext, state: CalculationResult, stats: np.ndarray) -> None:
        from ._registration_plots import plot_residuals, plot_transforms

        t = self.params.transformation
        plot_transforms(state.pairwise, t, "registration_calculation: pair matrices (slice k-1 -> k)",
                        ctx.outputs_dir / "tmats_evol.png")
        plot_transforms(state.cumulative, t, "registration_calculation: cumulative matrices (slice 0 -> k)",
                        ctx.outputs_dir / "tmats_cumul_evol.png")
        if state.pairs is not None and state.residuals is not None and state.weights is not None:
            plot_residuals(state.pairs, state.residuals, state.weights, state.sigmas or {},
                           ctx.outputs_dir / "pairs_misfit.png")



def _drift_ok(_: Any, attribute: attrs.Attribute, value: tuple[float, float] | None) -> None:
    if value is not None and not all(np.isfinite(value)):
        raise ValueError(f"{attribute.name} must be two finite numbers (got {list(value)})")


MODE_NAMES = ("constant", "edge", "symmetric", "reflect", "wrap")


@attrs.frozen(kw_only=True)
class RegistrationTransformationParams:
    """Parameters of ``registration_transformation`` (PyStack3D's keys, plus ``order``)."""

    nb_blocks: tuple[int, int] | None = attrs.field(default=None, validator=_blocks_ok, metadata={
        "doc": "[p, q] blocks used by registration_calculation; None: read from its outputs "
               "(PyStack3D needs it repeated); [1, 1]: affine warp", "unit": "blocks"})
    constant_drift: tuple[float, float] | None = attrs.field(default=None, validator=_drift_ok, metadata={
        "doc": "[dx, dy] removed k times from the cumulative translation of slice k (x = column, "
               "y = row downward)", "unit": "px/slice"})
    box_size_averaging: int | None = attrs.field(default=None, validator=attrs.validators.optional(
        attrs.validators.ge(0)), metadata={
        "doc": "remove the running mean of the cumulative matrices over this many slices (keeps the "
               "slice-to-slice jitter, removes slow drift); 0, 1 or None: off", "unit": "slices"})
    subpixel: bool = attrs.field(default=True, metadata={
        "doc": "false: pair translations smaller than 1 px are set to 0 before composing (PyStack3D's "
               "dead band, not rounding)", "unit": "-"})
    mode: Literal["constant", "edge", "symmetric", "reflect", "wrap"] = attrs.field(
        default="constant", validator=attrs.validators.in_(MODE_NAMES), metadata={
            "doc": "outside the moved slice: 'constant' (NaN, written as 0), 'edge', 'symmetric', "
                   "'reflect' or 'wrap' (numpy.pad names)", "unit": "-"})
    cropping: bool = attrs.field(default=False, metadata={
        "doc": "crop every slice to the largest rectangle valid on all slices", "unit": "-"})
    order: int = attrs.field(default=1, validator=[attrs.validators.ge(0), attrs.validators.le(5)], metadata={
        "doc": "interpolation order: 1 bilinear (PyStack3D), 0 nearest, 3 cubic B-spline (stack3d "
               "extension)", "unit": "-"})


@attrs.frozen(eq=False)
class TransformState:
    """What the workers need: cumulative matrices ``(n, nb, 3, 3)``, the block grid, the
    output region ``(imin, imax, jmin, jmax)`` and the warp options."""

    cumulative: np.ndarray
    nb_blocks: tuple[int, int]
    region: tuple[int, int, int, int]
    mode: str
    order: int
    cropped: bool


class RegistrationTransformation(Step):
    """Warp every slice of every channel onto slice 0 with the composed matrices."""

    name = "registration_transformation"
    description = "apply tmats.npy: compose, remove drift, warp every slice onto slice 0 (optional crop)"
    Params = RegistrationTransformationParams
    kind = StepKind.MAP

    def _load(self, ctx: StepContext) -> tuple[np.ndarray, tuple[int, int]]:
        folder = ctx.step_dir(CALCULATION)
        path = folder / "tmats.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run registration_calculation first")
        tmats = np.load(path)
        if tmats.ndim != 4 or tmats.shape[2:] != (3, 3):
            raise ValueError(f"{path}: expected an (n, p*q, 3, 3) array, got shape {tmats.shape}")
        meta: dict[str, Any] = {}
        if (folder / "outputs" / META_FILE).is_file():
            meta = json.loads((folder / "outputs" / META_FILE).read_text())
        nb = tmats.shape[1]
        if self.params.nb_blocks is not None:
            blocks = tuple(self.params.nb_blocks)
            if blocks[0] * blocks[1] != nb:
                known = f" (nb_blocks {meta['nb_blocks']} in the calculation)" if "nb_blocks" in meta else ""
                raise ValueError(f"nb_blocks {list(blocks)} does not match tmats.npy, which holds {nb} block(s) "
                                 f"per slice{known}")
        elif "nb_blocks" in meta:
            blocks = tuple(meta["nb_blocks"])
        elif nb == 1:
            blocks = (1, 1)
        else:
            raise ValueError(f"tmats.npy holds {nb} blocks per slice: set nb_blocks = [p, q] as in the calculation")
        if len(tmats) != ctx.meta.n:
            raise ValueError(f"tmats.npy has {len(tmats)} slices but the input of {self.name} has {ctx.meta.n}: "
                             f"run registration_calculation again on the same slices")
        if meta.get("shape") and tuple(meta["shape"]) != tuple(ctx.meta.shape):
            ctx.warn(f"the matrices were computed on {tuple(meta['shape'])} px slices, these are "
                     f"{tuple(ctx.meta.shape)}: the origin (top-left pixel) is assumed to be the same")
        return tmats.astype(np.float64), blocks  # type: ignore[return-value]

    def combine(self, ctx: StepContext, measures: Any) -> TransformState:
        from ._registration_warp import largest_rectangle, valid_mask

        p = self.params
        tmats, blocks = self._load(ctx)
        if not p.subpixel:
            tmats = subpixel_deadband(tmats)
        cumulative = chain(tmats)
        if p.constant_drift is not None:
            cumulative = constant_drift_removal(cumulative, p.constant_drift)
        if p.box_size_averaging is not None:
            cumulative = running_average_removal(cumulative, p.box_size_averaging)
        save_array(ctx.outputs_dir / "tmats_cumul.npy", cumulative)
        h, w = ctx.meta.shape
        region = (0, h, 0, w)
        if p.cropping:
            mask = valid_mask(cumulative, (h, w), blocks)
            region = largest_rectangle(mask)
            if region[1] <= region[0] or region[3] <= region[2]:
                raise ValueError("cropping: no pixel is valid on every slice (the slices do not overlap)")
            save_array(ctx.outputs_dir / "img_crop.npy", mask.astype(np.uint8))
            buffer = io.StringIO()
            np.savetxt(buffer, np.array(region, dtype=np.float64))
            write_text(ctx.outputs_dir / "inds_crop.txt", buffer.getvalue())
        return TransformState(cumulative, blocks, region, p.mode, p.order, p.cropping)

    def apply(self, image: np.ndarray, index: int, state: TransformState) -> np.ndarray:
        from ._registration_warp import warp

        return warp(image, state.cumulative[index], state.nb_blocks, mode=state.mode, order=state.order,
                    region=state.region)

    def output_meta(self, ctx: StepContext, state: TransformState, jobs: Sequence[SliceJob]) -> StackMeta:
        imin, imax, jmin, jmax = state.region
        return super().output_meta(ctx, state, jobs).evolve(shape=(imax - imin, jmax - jmin))

    def finish(self, ctx: StepContext, state: TransformState, stats: np.ndarray) -> None:
        from ._registration_plots import plot_area, plot_transforms

        transformation = "AFFINE"
        meta_path = ctx.step_dir(CALCULATION) / "outputs" / META_FILE
        if meta_path.is_file():
            transformation = json.loads(meta_path.read_text()).get("transformation", transformation)
        plot_transforms(state.cumulative, transformation, "registration_transformation: applied cumulative "
                        "matrices (slice 0 -> k)", ctx.outputs_dir / "tmats_cumul_evol.png")
        if state.cropped and (ctx.outputs_dir / "img_crop.npy").is_file():
            plot_area(np.load(ctx.outputs_dir / "img_crop.npy"), state.region,
                      ctx.outputs_dir / "registration_area.png")


STEPS: list[type[Step]] = [RegistrationCalculation, RegistrationTransformation]
"""The steps this module provides (collected by :mod:`stack3d_steps.plugin`)."""
