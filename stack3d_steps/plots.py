"""Entry point ``plots``: after every image-writing step, draws ``outputs/stats.png``
(per-slice min / max / mean) and ``outputs/cut_planes.png`` (XY, XZ and YZ planes of the
step's input and output).

An observer plugin (hook ``stack3d_after_step``), so the core engine stays free of
matplotlib. The cut planes read at most :data:`CUT_PLANE_SLICES` slices of the input and of
the output (evenly spaced along z); ``STACK3D_CUT_PLANES=0`` turns them off, and
``STACK3D_DISABLE_PLUGINS=plots`` turns off both figures (``stats.npy`` is written by the
engine either way).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from stack3d_core import StackReader, Step, StepContext, hookimpl
from stack3d_core.engine.fused import PLANE_SLICES, plane_picks

from ._figures import new_figure, save_figure

__all__ = ["CUT_PLANE_SLICES", "cut_planes", "plot_cut_planes", "plot_stats", "stack3d_after_step"]

CUT_PLANE_SLICES = PLANE_SLICES
"""Most slices read (per stack) to draw the XZ and YZ planes (the engine's fused passes
gather the same planes: ``StepContext.input_planes`` / ``output_planes``)."""

_STATS = ("min", "max", "mean")


def plot_stats(stats: np.ndarray, path: Path, title: str) -> None:
    """Plot per-slice min / max / mean of the input, raw output and cast output.

    :param stats: ``(n, 3, 3)``: ``stats[k, source, stat]``, source 0 input, 1 raw output
        (float), 2 output cast to the stack dtype; stat 0 min, 1 max, 2 mean.
    :param path: PNG file to write (atomically).
    """
    frames = np.arange(stats.shape[0])
    fig, axes = new_figure(3, 1, figsize=(7, 6.5), sharex=True, margins={"left": 0.12, "hspace": 0.12})
    for j, ax in enumerate(axes):
        ax.plot(frames, stats[:, 0, j], color="C0", label="input")
        ax.plot(frames, stats[:, 1, j], color="C1", ls="--", label="output (before cast)")
        ax.plot(frames, stats[:, 2, j], color="C1", label="output")
        ax.set_ylabel(f"{_STATS[j]} (gray level)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    axes[0].set_title(title)
    axes[-1].set_xlabel("slice index")
    save_figure(fig, path)


def cut_planes(reader: StackReader, channel: str, max_slices: int = CUT_PLANE_SLICES) -> dict[str, Any]:
    """The XY plane of the middle slice and the XZ / YZ planes through the middle row and
    column, sampled on at most ``max_slices`` evenly spaced slices.

    :returns: ``{"xy": (rows, cols), "xz": (k, cols), "yz": (k, rows), "z_index": (k,)}``.
    """
    n = reader.meta(channel).n
    picks = plane_picks(n, max_slices)
    xy = reader.read(channel, n // 2)
    row, col = xy.shape[0] // 2, xy.shape[1] // 2
    xz, yz = [], []
    for k in picks:
        image = reader.read(channel, int(k))
        xz.append(image[row, :])
        yz.append(image[:, col])
    return {"xy": xy, "xz": np.stack(xz), "yz": np.stack(yz), "z_index": picks, "row": row, "col": col}


def plot_cut_planes(before: dict[str, Any], after: dict[str, Any], path: Path, title: str) -> None:
    """Two rows (input, output) of XY / XZ / YZ planes; gray levels stretched per row to the
    1-99 % percentiles of its XY plane. Planes are drawn in pixel units, z downward by
    slice index (sampled slices only)."""
    fig, axes = new_figure(2, 3, figsize=(11, 6.5), gridspec_kw={"width_ratios": [1.2, 1, 1]},
                           margins={"left": 0.03, "right": 0.99, "top": 0.9, "bottom": 0.06, "wspace": 0.2})
    for r, (label, planes) in enumerate((("input", before), ("output", after))):
        lo, hi = np.percentile(planes["xy"], (1, 99))
        n_z = planes["z_index"]
        kw = {"cmap": "gray", "vmin": lo, "vmax": hi, "interpolation": "nearest"}
        axes[r, 0].imshow(planes["xy"], **kw)
        axes[r, 0].set_title(f"{label}: XY (middle slice)")
        extent_z = (-0.5, planes["xz"].shape[1] - 0.5, n_z[-1] + 0.5, n_z[0] - 0.5)
        axes[r, 1].imshow(planes["xz"], aspect="auto", extent=extent_z, **kw)
        axes[r, 1].set_title(f"{label}: XZ (row {planes['row']})")
        extent_y = (-0.5, planes["yz"].shape[1] - 0.5, n_z[-1] + 0.5, n_z[0] - 0.5)
        axes[r, 2].imshow(planes["yz"], aspect="auto", extent=extent_y, **kw)
        axes[r, 2].set_title(f"{label}: YZ (column {planes['col']})")
        axes[r, 1].set_ylabel("slice")
    for ax in axes[:, 0]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    save_figure(fig, path)


@hookimpl
def stack3d_after_step(step: Step, context: StepContext, stats: Any) -> None:
    """Write ``stats.png`` next to ``stats.npy``, and ``cut_planes.png``."""
    if stats is None or len(stats) == 0:
        return
    label = step.name if context.channel == "." else f"{step.name} [{context.channel}]"
    plot_stats(np.asarray(stats), context.outputs_dir / "stats.png", f"{label}: per-slice statistics")
    if os.environ.get("STACK3D_CUT_PLANES", "1") == "0" or context.reader is None or context.output_reader is None:
        return
    # a fused pass hands over the planes it saw: no second read (or recomputation) of the stack
    before = getattr(context, "input_planes", None) or cut_planes(context.reader, context.channel)
    after = getattr(context, "output_planes", None) or cut_planes(context.output_reader, context.channel)
    plot_cut_planes(before, after, context.outputs_dir / "cut_planes.png", f"{label}: cut planes before / after")
