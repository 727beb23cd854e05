"""``bkg_removal``: subtract a polynomial background, fitted per slice (2D) or once over
the whole stack (3D).

**Basis.** Terms ``x**px * y**py (* z**pz)`` from ``orders`` (+ ``cross_terms``) or from
``poly_basis`` (+ ``dim``); a constant term is always present. Coordinates (PyStack3D's):
``x`` = column scaled by ``linspace(0, 1, W)``, ``y`` = row scaled by ``linspace(0, 1, H)``
with the **top row at y = 0**, ``z`` = slice index in the processed stack scaled by
``linspace(0, 1, n)`` (0 for a single slice). See :mod:`stack3d_steps._bkg_poly`.

**Fit.** On a subsampled grid: every ``skip_x``-th column and ``skip_y``-th row (or block
means with ``skip_averaging``), pixels outside ``[threshold_min, threshold_max]`` (absolute
gray levels) excluded; robust IRLS (Huber / Hampel) or least squares
(:mod:`stack3d_steps._bkg_robust`).

* 2D (two powers per term): a REDUCE step whose ``measure`` fits each slice in the
  workers and returns its coefficients; ``apply`` evaluates them.
* 3D (three powers): ``measure`` returns the samples of every ``skip_z``-th slice,
  ``combine`` makes one global fit, ``apply`` evaluates it at each slice's ``z``.

**Correction** (every pixel, thresholded ones included)::

    out = image - (B - c0)          preserve_avg = false (default): the fitted constant
                                     term c0 is kept (PyStack3D's default)
    out = image - (B - <B>)         preserve_avg = true: the mean of the background over
                                     the fitted domain is kept: each slice keeps its mean
                                     (2D), the stack keeps its mean (3D; the z trend of
                                     the background is removed)

where ``B`` is the fitted background of the slice. Outputs (``outputs/``): ``coefs.npz``
(``coefs`` (n, q), ``powers`` (q, 2|3)), ``coefs.png``, ``coefs_3d.txt`` (3D),
``bkgs/<slice>.png``, ``stats_X.png``, ``stats_Y.png``, ``log.txt``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import attrs
import numpy as np

from stack3d_core import Step, StepContext, StepKind

from . import _bkg_poly as poly
from ._bkg_robust import robust_fit

__all__ = ["STEPS", "BkgRemoval", "BkgRemovalParams", "BkgState"]

PROFILE_SLICES_2D = 64
"""In 2D mode (no z skip factor) the X / Y statistics use at most this many slices."""

MAX_DESIGN_ENTRIES_3D = 18_000_000
"""Most entries (samples x terms) of the 3D fit's float64 design matrix: 144 MB, so 1.5
million samples with 12 terms (orders [1, 2, 1] with cross terms). Every ``skip_z``-th slice
is sampled while the design matrix stays within this; beyond, evenly spaced slices among
them, so that the fit's memory (about 190 bytes per sample with 12 terms, the design matrix
included) stays bounded however long the stack. PyStack3D samples every ``skip_z``-th slice
whatever the count; up to the bound both fit the same samples."""


def _tuple_or_none(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


def _orders_ok(_: Any, attribute: attrs.Attribute, value: tuple[int, ...] | None) -> None:
    if value is None:
        return
    if len(value) not in (2, 3):
        raise ValueError(f"orders must have 2 (x, y) or 3 (x, y, z) entries (got {list(value)})")
    if min(value) < 0:
        raise ValueError(f"orders must be >= 0 (got {list(value)})")


def _skips_ok(_: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if len(value) not in (2, 3):
        raise ValueError(f"skip_factors must have 2 (x, y) or 3 (x, y, z) entries (got {list(value)})")
    if min(value) < 1:
        raise ValueError(f"skip_factors must be >= 1 (got {list(value)})")


def _f(default: Any, doc: str, unit: str = "-", **kw: Any) -> Any:
    return attrs.field(default=default, metadata={"doc": doc, "unit": unit}, **kw)


@attrs.frozen(kw_only=True)
class BkgRemovalParams:
    """Parameters of ``bkg_removal`` (PyStack3D's keys and defaults).

    ``orders`` (with ``cross_terms``) or ``poly_basis`` is required; ``poly_basis`` wins
    when both are given (as in PyStack3D).
    """

    TEMPLATE: ClassVar[dict[str, Any]] = {"orders": [1, 2, 1], "cross_terms": True, "skip_factors": [10, 10, 10]}
    """Values ``stack3d init`` writes (a 3D fit, as PyStack3D's template): there is no default."""

    orders: tuple[int, ...] | None = _f(
        None, "polynomial order in x, y[, z]; 2 entries: one fit per slice (2D), 3: one fit "
              "over the stack (3D)", converter=_tuple_or_none, validator=_orders_ok)
    cross_terms: bool | None = _f(None, "with orders: include mixed terms (x*y, ...); required with orders")
    poly_basis: str | None = _f(
        None, "explicit basis instead of orders, e.g. '1 + x + y + x*y + x**2 + z'; a constant "
              "term is always added; empty = unset")
    dim: int | None = _f(
        None, "with poly_basis: 2 (variables x, y) or 3 (x, y, z); default: the number of "
              "skip_factors; ignored with orders",
        validator=attrs.validators.optional(attrs.validators.in_((2, 3))))
    skip_factors: tuple[int, ...] = _f(
        (10, 10), "subsampling of the fit: every skip_x-th column, skip_y-th row[, skip_z-th "
                  "slice]; as many entries as the polynomial has variables", "px, px[, slices]",
        converter=tuple, validator=_skips_ok)
    skip_averaging: bool = _f(False, "fit on skip_y x skip_x block means instead of strided pixels")
    threshold_min: float | None = _f(
        None, "pixels below this absolute gray level are left out of the fit (still corrected)",
        "gray level")
    threshold_max: float | None = _f(
        None, "pixels above this absolute gray level are left out of the fit (still corrected)",
        "gray level")
    weight_func: Literal["HuberT", "Hampel", "None"] = _f(
        "HuberT", "robust fit: 'HuberT' or 'Hampel' M-estimator (IRLS), 'None': least squares")
    preserve_avg: bool = _f(
        False, "true: the background's mean over the fitted domain is kept: each slice keeps its "
               "mean (2D), the stack keeps its mean (3D); false: the fitted constant term is kept")

    def __attrs_post_init__(self) -> None:
        if not self.poly_basis:
            if self.orders is None:
                raise TypeError("bkg_removal needs 'orders' (with 'cross_terms') or 'poly_basis'")
            if self.cross_terms is None:
                raise TypeError("'cross_terms' (true or false) is required with 'orders'")

    @property
    def dimension(self) -> int:
        """2 (per-slice fit) or 3 (global fit)."""
        if self.poly_basis:
            return self.dim if self.dim is not None else len(self.skip_factors)
        return len(self.orders or ())

    @property
    def powers(self) -> poly.Powers:
        """The terms of the polynomial, constant first (raises ValueError if unreadable)."""
        if self.poly_basis:
            return poly.powers_from_expr(self.poly_basis, self.dimension)
        return poly.powers_from_orders(self.orders or (), bool(self.cross_terms))

    def validate(self) -> list[str]:
        problems = []
        if self.poly_basis:
            try:
                _ = self.powers
            except ValueError as exc:
                problems.append(f"poly_basis: {exc}")
        if len(self.skip_factors) != self.dimension:
            source = "dim" if self.poly_basis else "orders"
            problems.append(f"skip_factors has {len(self.skip_factors)} entries but the polynomial "
                            f"has {self.dimension} variables ({source}): give one skip factor per variable")
        if (self.threshold_min is not None and self.threshold_max is not None
                and self.threshold_min >= self.threshold_max):
            problems.append(f"threshold_min ({self.threshold_min}) must be < threshold_max ({self.threshold_max})")
        return problems


@attrs.frozen(eq=False)
class SliceFit:
    """2D measure: the coefficients fitted on one slice, plus what the plots need."""

    coefs: np.ndarray
    n_samples: int
    rank: int
    iterations: int
    profile: dict[str, np.ndarray] | None


@attrs.frozen(eq=False)
class SliceSamples:
    """3D measure: the fit samples of a sampled slice (``None`` for the others)."""

    samples: poly.Samples | None
    profile: dict[str, np.ndarray] | None


@attrs.frozen(eq=False)
class BkgState:
    """What ``apply`` needs (and ``finish`` writes): small.

    :param coefs: ``(n, q)`` per-slice coefficients (2D) or ``(q,)`` global ones (3D).
    """

    powers: poly.Powers
    coefs: np.ndarray
    n: int
    preserve_avg: bool
    profile_slices: tuple[int, ...] = ()
    profile_in: dict[str, np.ndarray] | None = None
    notes: tuple[str, ...] = ()

    @property
    def three_d(self) -> bool:
        return len(self.powers[0]) == 3

    def slice_coefs(self, index: int) -> np.ndarray:
        return self.coefs if self.three_d else self.coefs[index]

    def coefs_table(self) -> np.ndarray:
        """``(n, q)`` coefficients per slice (the 3D row repeated, as PyStack3D writes it)."""
        return np.tile(self.coefs, (self.n, 1)) if self.three_d else self.coefs

    def removed(self, index: int, shape: tuple[int, int], step: int = 1) -> np.ndarray:
        """What is subtracted from slice ``index`` (on every ``step``-th pixel):
        ``B - c0``, or with ``preserve_avg`` ``B - <B>`` where ``<B>`` is the mean of the
        background over the slice (2D) or over the whole stack (3D)."""
        z = poly.z_coord(index, self.n)
        coefs = self.slice_coefs(index)
        bkg = poly.evaluate(self.powers, coefs, shape, z, step)
        if not self.preserve_avg:
            bkg -= coefs[0]
        elif self.three_d:
            bkg -= poly.stack_mean(self.powers, coefs, shape, self.n)
        else:
            bkg -= poly.stack_mean(self.powers, coefs, shape, 1)
        return bkg


class BkgRemoval(Step):
    """Polynomial background removal (see the module docstring)."""

    name = "bkg_removal"
    description = "polynomial background removal, per slice (2D) or one robust fit over x, y, z (3D)"
    Params = BkgRemovalParams
    kind = StepKind.REDUCE

    def _sampling(self, image: np.ndarray) -> poly.Samples:
        p = self.params
        return poly.sample_slice(image, p.skip_factors[0], p.skip_factors[1], p.skip_averaging,
                                 p.threshold_min, p.threshold_max)

    def measure_slices(self, ctx: StepContext) -> Sequence[int] | None:
        """3D: every ``skip_z``-th slice is sampled (only those are read), within
        :data:`MAX_DESIGN_ENTRIES_3D` (evenly spaced among them beyond)."""
        p = self.params
        if len(p.powers[0]) != 3:
            return None
        strided = range(0, ctx.meta.n, p.skip_factors[2])
        rows, cols = ctx.meta.shape
        per_slice = math.ceil(rows / p.skip_factors[1]) * math.ceil(cols / p.skip_factors[0])
        most = max(2, MAX_DESIGN_ENTRIES_3D // max(per_slice * len(p.powers), 1))
        if len(strided) <= most:
            return strided
        picks = np.unique(np.linspace(0, len(strided) - 1, most).round().astype(int))
        return [strided[k] for k in picks]

    def measure(self, image: np.ndarray, index: int, previous: Any = None) -> SliceFit | SliceSamples:
        p = self.params
        sx, sy = p.skip_factors[:2]
        powers = p.powers
        if len(powers[0]) == 3:
            if index % p.skip_factors[2]:
                return SliceSamples(None, None)
            return SliceSamples(self._sampling(image), poly.profiles(image, sx, sy))
        samples = self._sampling(image)
        fit = robust_fit(poly.design_matrix(powers, samples.x, samples.y), samples.values, p.weight_func)
        coefs = fit.coefs if fit.rank else np.zeros(len(powers))
        return SliceFit(coefs, fit.n, fit.rank, fit.iterations, poly.profiles(image, sx, sy))

    def combine(self, ctx: StepContext, measures: Sequence[Any]) -> BkgState:
        p = self.params
        powers = p.powers
        n = len(measures)
        notes: list[str] = []
        if len(powers[0]) == 3:
            coefs, profile_slices = self._global_fit(ctx, measures, powers, notes)
        else:
            coefs = np.stack([m.coefs for m in measures]) if measures else np.zeros((0, len(powers)))
            _report_2d(ctx, measures, len(powers), notes)
            step = max(1, math.ceil(n / PROFILE_SLICES_2D))
            profile_slices = tuple(range(0, n, step))
        profile_in = poly.merge_profiles([measures[k].profile for k in profile_slices])
        return BkgState(powers, coefs, n, p.preserve_avg, profile_slices, profile_in, tuple(notes))

    def _global_fit(self, ctx: StepContext, measures: Sequence[SliceSamples], powers: poly.Powers,
                    notes: list[str]) -> tuple[np.ndarray, tuple[int, ...]]:
        n = len(measures)
        sampled = tuple(k for k, m in enumerate(measures) if m is not None and m.samples is not None)
        parts = [measures[k].samples for k in sampled]
        z = np.concatenate([np.full(s.size, poly.z_coord(k, n)) for k, s in zip(sampled, parts)])
        values = np.concatenate([s.values for s in parts])
        x = poly.design_matrix(powers, np.concatenate([s.x for s in parts]),
                               np.concatenate([s.y for s in parts]), z)
        zero_terms = [j for j in range(len(powers)) if not np.any(x[:, j])] if values.size else []
        fit = robust_fit(x, values, self.params.weight_func)
        del x
        coefs = fit.coefs
        strided = len(range(0, n, self.params.skip_factors[2]))
        if len(sampled) < strided:
            notes.append(f"3D fit: {len(sampled)} of the {strided} slices at skip_z sampled "
                         f"(at most {MAX_DESIGN_ENTRIES_3D} design-matrix entries: samples x "
                         f"{len(powers)} terms)")
        notes.append(f"3D fit on {fit.n} samples from {len(sampled)} slices: {fit.iterations} "
                     f"least-squares solves of the M-estimation, MAD scale {fit.scale:.4g}")
        if fit.n == 0:
            ctx.warn("no pixel within the thresholds in the sampled slices: background not removed")
            coefs = np.zeros(len(powers))
        elif zero_terms:
            terms = poly.expr_from_powers(tuple(powers[j] for j in zero_terms))
            ctx.warn(f"the terms {terms} are zero at every sample (z = 0 only: a single slice, or "
                     f"skip_z >= n): their coefficients are 0")
        elif fit.rank < len(powers):
            ctx.warn(f"the samples determine only {fit.rank} of the {len(powers)} terms: "
                     f"minimum-norm coefficients")
        return coefs, sampled

    def apply(self, image: np.ndarray, index: int, state: BkgState) -> np.ndarray:
        out = np.asarray(image, dtype=np.float64)
        out = out - state.removed(index, out.shape)
        return out

    def finish(self, ctx: StepContext, state: BkgState, stats: np.ndarray) -> None:
        from ._bkg_outputs import write_outputs

        write_outputs(ctx, state, self.params)


def _report_2d(ctx: StepContext, measures: Sequence[SliceFit], q: int, notes: list[str]) -> None:
    empty = [k for k, m in enumerate(measures) if m.n_samples == 0]
    partial = [k for k, m in enumerate(measures) if m.n_samples and m.rank < q]
    if empty:
        ctx.warn(f"{len(empty)} slice(s) without any pixel within the thresholds, left uncorrected: "
                 f"{_few(empty)}")
    if partial:
        ctx.warn(f"{len(partial)} slice(s) whose samples determine only part of the {q} terms "
                 f"(minimum-norm coefficients): {_few(partial)}")
    if measures:
        solves = [m.iterations for m in measures]
        notes.append(f"2D fits on {int(np.mean([m.n_samples for m in measures]))} samples per slice on "
                     f"average: {min(solves)}-{max(solves)} least-squares solves of the M-estimation")


def _few(indices: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")


STEPS: list[type[Step]] = [BkgRemoval]
"""The steps this module provides (collected by :mod:`stack3d_steps.plugin`)."""
