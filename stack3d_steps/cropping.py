"""``cropping`` and ``cropping_final``: keep a rectangle of every slice.

``area = [xmin, xmax, ymin, ymax]`` in pixels with PyStack3D's convention: the origin is
the **bottom-left** corner, ``x`` counts columns to the right and ``y`` counts rows
upward from the last row. The kept array region is::

    image[H - ymax : H - ymin, xmin : xmax]      # rows, columns (numpy, top-left origin)

where ``H`` is the number of rows. Bounds beyond the image are clamped to it with a
warning; PyStack3D lets ``ymax > H`` wrap around (a negative numpy index), which keeps
the wrong rows. ``cropping_final`` is the same step under another name, meant to be
last (PyStack3D allows each step name once per run).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from stack3d_core import SliceJob, StackMeta, Step, StepContext, StepKind
from stack3d_core.stepkit import write_text

__all__ = ["STEPS", "Cropping", "CroppingFinal", "CroppingParams", "check_area", "crop_indices"]


def check_area(_: Any, attribute: attrs.Attribute, value: tuple[int, int, int, int] | None) -> None:
    """attrs validator of an ``area = [xmin, xmax, ymin, ymax]`` field (any step that takes
    PyStack3D's area): values >= 0, ``xmin < xmax`` and ``ymin < ymax``. Whether it lies on
    the image is checked at run time (:func:`crop_indices`)."""
    if value is None:
        return
    xmin, xmax, ymin, ymax = value
    if min(value) < 0:
        raise ValueError(f"{attribute.name} values must be >= 0 (got {list(value)})")
    if xmin >= xmax or ymin >= ymax:
        raise ValueError(f"{attribute.name} must satisfy xmin < xmax and ymin < ymax (got {list(value)})")


@attrs.frozen(kw_only=True)
class CroppingParams:
    """Parameters of ``cropping`` / ``cropping_final``."""

    area: tuple[int, int, int, int] | None = attrs.field(
        default=None,
        validator=check_area,
        metadata={
            "doc": "[xmin, xmax, ymin, ymax] to keep; origin at the bottom-left corner, "
                   "x = column, y = row counted upward; None keeps the whole image",
            "unit": "px",
        },
    )


def crop_indices(area: tuple[int, int, int, int] | None, shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], list[str]]:
    """Array bounds ``(imin, imax, jmin, jmax)`` of ``area`` on a slice of ``shape`` (rows, cols).

    :returns: the bounds, clamped to the image, and the warnings about clamping.
    :raises ValueError: nothing of the area lies on the image.
    """
    rows, cols = shape
    if area is None:
        return (0, rows, 0, cols), []
    xmin, xmax, ymin, ymax = area
    warnings = []
    c_xmin, c_xmax = min(xmin, cols), min(xmax, cols)
    c_ymin, c_ymax = min(ymin, rows), min(ymax, rows)
    if (c_xmin, c_xmax, c_ymin, c_ymax) != (xmin, xmax, ymin, ymax):
        warnings.append(f"area {list(area)} exceeds the image ({cols} columns x {rows} rows): "
                        f"clamped to {[c_xmin, c_xmax, c_ymin, c_ymax]}")
    if c_xmin >= c_xmax or c_ymin >= c_ymax:
        raise ValueError(f"area {list(area)} lies outside the image ({cols} columns x {rows} rows)")
    return (rows - c_ymax, rows - c_ymin, c_xmin, c_xmax), warnings


class Cropping(Step):
    """Keep the rectangle ``area`` of every slice."""

    name = "cropping"
    description = "keep a rectangle [xmin, xmax, ymin, ymax] (bottom-left origin) of every slice"
    Params = CroppingParams
    kind = StepKind.MAP

    def combine(self, ctx: StepContext, measures: Any) -> tuple[int, int, int, int]:
        bounds, warnings = crop_indices(self.params.area, ctx.meta.shape)
        for message in warnings:
            ctx.warn(message)
        return bounds

    def apply(self, image: np.ndarray, index: int, state: tuple[int, int, int, int]) -> np.ndarray:
        imin, imax, jmin, jmax = state
        return image[imin:imax, jmin:jmax]

    def output_meta(self, ctx: StepContext, state: Any, jobs: list[SliceJob]) -> StackMeta:
        imin, imax, jmin, jmax = state
        return super().output_meta(ctx, state, jobs).evolve(shape=(imax - imin, jmax - jmin))

    def finish(self, ctx: StepContext, state: Any, stats: np.ndarray) -> None:
        imin, imax, jmin, jmax = state
        n = ctx.meta.n
        write_text(ctx.outputs_dir / "log.txt", (
            f"Original shape (slices, rows, columns): ({n}, {ctx.meta.shape[0]}, {ctx.meta.shape[1]})\n"
            f"New shape (slices, rows, columns): ({n}, {imax - imin}, {jmax - jmin})\n"
            f"Area [xmin, xmax, ymin, ymax] (bottom-left origin): {list(self.params.area) if self.params.area else None}\n"
            f"Array region [rows, columns]: [{imin}:{imax}, {jmin}:{jmax}]\n"
        ))


class CroppingFinal(Cropping):
    """``cropping`` under another name, to crop again at the end of a pipeline."""

    name = "cropping_final"
    description = "cropping again, as the last step (same parameters as cropping)"


STEPS: list[type[Step]] = [Cropping, CroppingFinal]
"""The steps this module provides (collected by :mod:`stack3d_steps.plugin`)."""
