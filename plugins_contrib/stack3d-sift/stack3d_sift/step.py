"""The step ``sift_registration``: Shtengel's SIFT registration, computed and applied.

PAIRWISE, ``state_from = "first"``: key points, matches and a robust model for every pair
``(i - d, i)`` (``d`` in ``pair_offsets``) of ``channels[0]`` (workers), composed into
cumulative matrices on the driver (:mod:`.cumulative`), then every slice of every channel
warped onto slice 0 with ``scipy.ndimage`` (workers). The registered slices keep the
input dtype (the engine rounds and clips the float warp); SIFT sees an 8-bit view of each
slice only.

Matrices follow the built-in registration: inverse maps on ``(x = column, y = row, 1)``,
origin at the centre of the top-left pixel, ``T_k`` from slice-0 coordinates to slice
``k``. ``outputs/tmats_cumul.npy`` holds them as ``(n, 1, 3, 3)``; ``outputs/tmats.npy``
the pair matrices whose chain gives them back (``registration_calculation``'s format).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
from stack3d_core import SliceJob, StackMeta, Step, StepContext, StepKind

from .cumulative import (
    AFTER_BREAK,
    KEPT_NEIGHBOUR,
    Solution,
    build_chain,
    canvas_offset,
    detrend_linear,
    remove_linear_drift,
    solve_global,
)
from .features import SiftOptions
from .models import MINIMAL, MODELS
from .pairs import PairOptions, PairResult, register_pair

__all__ = ["SiftRegistration", "SiftRegistrationParams", "SiftReport", "SiftState", "warp"]

_in = attrs.validators.in_
_opt = attrs.validators.optional


def _f(default: Any, doc: str, unit: str, validator: Any = None) -> Any:
    return attrs.field(default=default, validator=validator, metadata={"doc": doc, "unit": unit})


def _fraction(_: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1] (got {value})")


def _offsets_ok(_: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value or min(value) < 1 or 1 not in value or len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} must be distinct integers >= 1 including 1 (got {list(value)})")


@attrs.frozen(kw_only=True)
class SiftRegistrationParams:
    """Parameters of ``sift_registration`` (the ``[sift_registration]`` table)."""

    cdf_low: float = _f(0.01, "8-bit view for SIFT: gray level at this point of each slice's cumulative histogram "
                        "maps to 0 (the data themselves are never converted)", "fraction", _fraction)
    cdf_high: float = _f(0.99, "8-bit view: gray level at this point of the cumulative histogram maps to 255",
                         "fraction", _fraction)
    n_features: int = _f(0, "cv2.SIFT_create nfeatures: keep the best N key points per slice (0: all)", "-",
                         attrs.validators.ge(0))
    n_octave_layers: int = _f(3, "cv2.SIFT_create nOctaveLayers", "-", attrs.validators.ge(1))
    contrast_threshold: float = _f(0.04, "cv2.SIFT_create contrastThreshold (higher: fewer, stronger key points)",
                                   "-", attrs.validators.gt(0))
    edge_threshold: float = _f(10.0, "cv2.SIFT_create edgeThreshold", "-", attrs.validators.gt(0))
    sigma: float = _f(1.6, "cv2.SIFT_create sigma (Gaussian of octave 0)", "px", attrs.validators.gt(0))
    matcher: Literal["flann", "bf"] = _f("flann", "descriptor matching: 'flann' (KD-trees, seeded: reproducible) "
                                         "or 'bf' (brute force, exact)", "-", _in(("flann", "bf")))
    lowe_ratio: float = _f(0.7, "Lowe's ratio test: keep a match if its distance < ratio x the second best's",
                           "-", [attrs.validators.gt(0), attrs.validators.le(1)])
    model: Literal["shift", "xscale_shift", "scale_shift", "affine", "regularized_affine"] = _f(
        "regularized_affine", "pair model: shift, xscale_shift (x scale + shift), scale_shift (x and y scales + "
        "shift), affine, regularized_affine (affine pulled toward a pure shift, see reg_lambda)", "-", _in(MODELS))
    reg_lambda: float = _f(1.0, "regularized_affine: weight of ||A - I||^2 against the sum of squared normalised "
                           "residuals (about one point's worth per unit; Shtengel's Gamma = 1e-5 is "
                           "1e-5 * n_matches^2)", "points", attrs.validators.ge(0))
    solver: Literal["ransac", "lsq"] = _f("ransac", "robust fit: 'ransac' (MSAC, samples >= the model's minimal set) "
                                          "or 'lsq' (iterative least squares dropping the worst matches)", "-",
                                          _in(("ransac", "lsq")))
    residual_threshold: float = _f(1.5, "inlier distance |dst - M src| (Shtengel's drmax)", "px",
                                   attrs.validators.gt(0))
    max_iter: int = _f(1000, "ransac: most samples drawn; lsq: most refits", "-", attrs.validators.ge(1))
    min_samples: int = _f(0, "ransac sample size; 0: the model's minimal set (shift 1, x/scale_shift 2, affine 3); "
                          "never below it", "pairs", attrs.validators.ge(0))
    remove_per_iter: int = _f(1, "lsq: matches dropped per refit", "-", attrs.validators.ge(1))
    min_inliers: int = _f(10, "a pair with fewer inliers (or matches) is unusable", "pairs", attrs.validators.ge(1))
    pair_offsets: tuple[int, ...] = _f((1, 2), "slice distances of the registered pairs (must include 1); a slice "
                                       "whose pairs at distance 1 fail is bridged by the others", "slices",
                                       _offsets_ok)
    solve: Literal["chain", "global"] = _f("global", "'chain': compose one pair per slice (Shtengel); 'global': "
                                           "weighted robust least squares over every usable pair", "-",
                                           _in(("chain", "global")))
    preserve_scales: bool = _f(True, "remove the slow trend of the cumulative linear parts (scale, shear, rotation) "
                               "with a Savitzky-Golay fit, keeping slice-to-slice corrections (Shtengel)", "-")
    sg_window: int = _f(51, "Savitzky-Golay window (odd; clipped to the stack length)", "slices",
                        attrs.validators.ge(3))
    sg_order: int = _f(3, "Savitzky-Golay polynomial order", "-", attrs.validators.ge(0))
    subtract_linear_drift: bool = _f(False, "subtract a straight-line fit of the image-centre drift (px/slice) "
                                     "from the translations", "-")
    canvas: Literal["same", "union"] = _f("same", "'same': output slices have the input shape (slice 0's frame); "
                                          "'union': large enough to hold every transformed slice", "-",
                                          _in(("same", "union")))
    order: int = _f(1, "interpolation order (scipy.ndimage): 1 bilinear, 0 nearest, 3 cubic (clipped to the "
                    "slice's range)", "-", [attrs.validators.ge(0), attrs.validators.le(5)])
    fill_value: float | None = _f(None, "value outside the moved slice; None: NaN, written as 0 by the engine "
                                  "(and counted)", "gray level")

    def validate(self) -> list[str]:
        problems = []
        if self.cdf_low >= self.cdf_high:
            problems.append(f"cdf_low ({self.cdf_low}) must be below cdf_high ({self.cdf_high})")
        if 0 < self.min_samples < MINIMAL[self.model]:
            problems.append(f"min_samples = {self.min_samples} is below the minimal set of model "
                            f"'{self.model}' ({MINIMAL[self.model]}); use 0 for the minimal set")
        if self.sg_window % 2 == 0:
            problems.append(f"sg_window must be odd (got {self.sg_window})")
        if self.sg_order >= self.sg_window:
            problems.append(f"sg_order ({self.sg_order}) must be below sg_window ({self.sg_window})")
        return problems

    @property
    def sift(self) -> SiftOptions:
        return SiftOptions(self.cdf_low, self.cdf_high, self.n_features, self.n_octave_layers,
                           self.contrast_threshold, self.edge_threshold, self.sigma)

    @property
    def pair(self) -> PairOptions:
        return PairOptions(self.matcher, self.lowe_ratio, self.model, self.reg_lambda, self.solver,
                           self.residual_threshold, self.max_iter, self.min_samples, self.remove_per_iter,
                           self.min_inliers)


@attrs.frozen(eq=False)
class SiftReport:
    """What the driver keeps for the side outputs (never sent to the workers)."""

    pairs: dict[tuple[int, int], PairResult]
    solution: Solution
    """``T_k`` from the pairs (chain or global solve), before the drift options."""
    drift_slope: tuple[float, float] | None
    detrended: bool

    @property
    def flags(self) -> tuple[str, ...]:
        return self.solution.flags


class SiftState:
    """Matrices for the workers; the driver-only :class:`SiftReport` is dropped when the
    state is pickled (only ``applied`` and the warp options travel)."""

    def __init__(self, applied: np.ndarray, shape: tuple[int, int], offset: tuple[float, float], order: int,
                 fill: float, cumulative: np.ndarray | None = None, report: SiftReport | None = None) -> None:
        self.applied = applied
        """``(n, 3, 3)``: output pixel ``(c, r, 1)`` -> slice ``k`` (``T_k @ S``, ``S`` the canvas offset)."""
        self.shape = shape
        self.offset = offset
        self.order = order
        self.fill = fill
        self.cumulative = cumulative
        """``(n, 3, 3)`` ``T_k`` (slice-0 coordinates -> slice ``k``), driver only."""
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        return (SiftState, (self.applied, self.shape, self.offset, self.order, self.fill))


class SiftRegistration(Step):
    """SIFT key points -> matches -> robust pair models -> cumulative matrices -> warp."""

    name = "sift_registration"
    description = "register slices with SIFT key points (Shtengel's pipeline): compute and apply the transforms"
    Params = SiftRegistrationParams
    kind = StepKind.PAIRWISE
    state_from = "first"

    @property  # type: ignore[override]
    def pair_offsets(self) -> tuple[int, ...]:
        """The sorted ``params.pair_offsets``."""
        return tuple(sorted(self.params.pair_offsets))

    # -- workers -----------------------------------------------------------------------------
    def measure_pair(self, previous: np.ndarray, current: np.ndarray, index: int) -> PairResult:
        return register_pair(previous, current, self.params.sift, self.params.pair, seed=index)

    def apply(self, image: np.ndarray, index: int, state: SiftState) -> np.ndarray:
        return warp(image, state.applied[index], state.shape, order=state.order, fill=state.fill)

    # -- driver ------------------------------------------------------------------------------
    def combine(self, ctx: StepContext, measures: Sequence[Any] | Mapping[tuple[int, int], Any]) -> SiftState:
        p = self.params
        n = ctx.meta.n
        pairs: dict[tuple[int, int], PairResult] = dict(measures) if isinstance(measures, Mapping) else \
            {(i - 1, i): m for i, m in enumerate(measures, 1)}
        sol = build_chain(n, pairs, self.pair_offsets, ctx.meta.shape)
        if p.solve == "global":
            sol = solve_global(n, pairs, sol, ctx.meta.shape, p.model)
        self._report_failures(ctx, pairs, sol)
        cumulative = sol.cumulative
        detrended = False
        if p.preserve_scales and n > 1:
            out = detrend_linear(sol, p.sg_window, p.sg_order)
            if out is None:
                ctx.warn(f"preserve_scales: {n} slices are too few for a Savitzky-Golay fit of order "
                         f"{p.sg_order}: the linear parts are not detrended")
            else:
                cumulative, detrended = out, True
        slope = None
        if p.subtract_linear_drift:
            cumulative, s = remove_linear_drift(cumulative, ctx.meta.shape)
            slope = (float(s[0]), float(s[1]))
        offset, shape = (0.0, 0.0), tuple(ctx.meta.shape)
        if p.canvas == "union":
            offset, shape = canvas_offset(cumulative, ctx.meta.shape)
            h, w = ctx.meta.shape
            if shape[0] * shape[1] > 4 * h * w:
                ctx.warn(f"canvas = 'union' gives {shape[0]} x {shape[1]} px slices ({shape[0] * shape[1] / (h * w):.1f}"
                         f" times the input area): check the transforms (tmats_evol.png)")
        shift = np.array([[1.0, 0.0, offset[0]], [0.0, 1.0, offset[1]], [0.0, 0.0, 1.0]])
        report = SiftReport(pairs, sol, slope, detrended)
        fill = float("nan") if p.fill_value is None else float(p.fill_value)
        return SiftState(cumulative @ shift, (int(shape[0]), int(shape[1])), offset, p.order, fill,
                         cumulative, report)

    @staticmethod
    def _report_failures(ctx: StepContext, pairs: Mapping[tuple[int, int], PairResult], sol: Solution) -> None:
        """Warn about unusable pairs and name every slice that could not be registered."""
        failed = sorted((ji for ji, r in pairs.items() if not r.ok), key=lambda ji: (ji[1], ji[0]))
        if failed:
            ctx.warn(f"{len(failed)} of {len(pairs)} pairs gave no usable model (see qc_pairs.csv): "
                     + ", ".join(f"({j}, {i})" for j, i in failed[:20]) + (" ..." if len(failed) > 20 else ""))
        flags = sol.flags
        for k, flag in enumerate(flags):
            if flag != KEPT_NEIGHBOUR:
                continue
            why = "; ".join(f"pair ({j}, {i}): {pairs[(j, i)].reason}" for j, i in failed if k in (j, i))
            ctx.warn(f"slice {k} ({ctx.names[k]}) could not be registered: it keeps the transform of slice {k - 1} "
                     f"(flag '{KEPT_NEIGHBOUR}' in qc_slices.csv){' - ' + why if why else ''}")
            end = k + 1
            while end < len(flags) and flags[end] == AFTER_BREAK:
                end += 1
            if end > k + 1:
                ctx.warn(f"slices {k + 1}-{end - 1} ({ctx.names[k + 1]} ... {ctx.names[end - 1]}) are registered to "
                         f"slice {k} only, not to slice 0: they follow its kept transform (flag '{AFTER_BREAK}')")

    def output_meta(self, ctx: StepContext, state: SiftState, jobs: Sequence[SliceJob]) -> StackMeta:
        return super().output_meta(ctx, state, jobs).evolve(shape=tuple(state.shape))

    def finish(self, ctx: StepContext, state: SiftState, stats: np.ndarray) -> None:
        from .outputs import write_outputs

        write_outputs(self, ctx, state)


# -- the warp ----------------------------------------------------------------------------------
# ``matrix`` maps output pixel (x = column, y = row, 1) to the input slice (an inverse map);
# ``scipy.ndimage.affine_transform`` works on (row, column), so it gets ``P @ matrix @ P`` with
# ``P`` the swap of the first two coordinates. With the same matrix, order and fill this gives
# the same float32 values as ``registration_transformation``'s affine warp (mode "constant").

_SWAP = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def warp(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], *, order: int = 1,
         fill: float = float("nan")) -> np.ndarray:
    """``image`` resampled on an output grid of ``shape`` (rows, columns), float32.

    Output pixel ``p`` takes the input's value at ``matrix @ p`` (spline ``order``: 1
    bilinear, 0 nearest, 3 cubic; orders > 1 are clipped to the input's range); points
    outside the input get ``fill`` (NaN by default: the engine writes 0 and counts them).
    """
    from scipy import ndimage as ndi

    src = np.asarray(image, dtype=np.float32)
    m_rc = _SWAP @ np.asarray(matrix, dtype=np.float64) @ _SWAP
    out = ndi.affine_transform(src, m_rc[:2, :2], offset=m_rc[:2, 2], output_shape=tuple(shape), order=order,
                               mode="constant", cval=fill, prefilter=order > 1, output=np.float32)
    if order > 1:
        np.clip(out, np.nanmin(src), np.nanmax(src), out=out)
    return out


STEPS: list[type[Step]] = [SiftRegistration]
