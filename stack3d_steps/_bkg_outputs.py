"""Side outputs of ``bkg_removal`` (driver side, in ``finish``).

* ``coefs.npz``: ``coefs`` (n, q) float64 (3D: the global row repeated per slice) and
  ``powers`` (q, 2 | 3) int64, PyStack3D's keys and layout;
* ``coefs_3d.txt`` (3D): the q global coefficients, one per line (``numpy.savetxt``);
* ``coefs.png``: one panel per in-plane term, its coefficient against the slice index
  (3D: the sum of its z terms evaluated at each slice's z);
* ``bkgs/<slice>.png``: the removed surface of each slice (``B - c0``, or ``B - <B>``
  with ``preserve_avg``)
  on every ``max(min(H, W) // 100, 1)``-th pixel, stretched to 0-255, with its min and max
  written in red (PyStack3D's thumbnails);
* ``stats_X.png`` / ``stats_Y.png``: min / max / mean of the input and output stacks
  against x (column, px) and against y (row, px, top = 0), over the strided grid
  ``[::skip_y, ::skip_x]`` of the slices listed in ``log.txt`` (every ``skip_z``-th slice
  in 3D; at most 64 evenly spaced slices in 2D);
* ``log.txt``: the basis, the mode and the fit summary.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stack3d_core import StepContext
from stack3d_core.stepkit import write_text

from . import _bkg_poly as poly
from ._figures import new_figure, save_figure

if TYPE_CHECKING:
    from .bkg_removal import BkgRemovalParams, BkgState

__all__ = ["npz_bytes", "write_outputs"]



def write_outputs(ctx: StepContext, state: BkgState, params: BkgRemovalParams) -> None:
    """Write every side output of the step into ``ctx.outputs_dir``."""
    out = ctx.outputs_dir
    powers = np.asarray(state.powers, dtype=np.int64)
    _atomic_bytes(out / "coefs.npz", npz_bytes(coefs=state.coefs_table(), powers=powers))
    if state.three_d:
        text = io.StringIO()
        np.savetxt(text, np.asarray(state.coefs))
        write_text(out / "coefs_3d.txt", text.getvalue())
    write_text(out / "log.txt", _log(ctx, state, params))
    plot_coefs(state, out / "coefs.png")
    write_thumbnails(ctx, state, out / "bkgs")
    reader = getattr(ctx, "output_reader", None)
    profile_out = None
    if reader is not None and state.profile_slices:
        sx, sy = params.skip_factors[:2]
        profile_out = poly.merge_profiles([poly.profiles(reader.read(ctx.channel, k), sx, sy)
                                           for k in state.profile_slices])
    if state.profile_in is not None:
        plot_profiles(state.profile_in, profile_out, params.skip_factors[:2], out)


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """``numpy.savez`` content with fixed zip timestamps, so that identical arrays give
    identical files (``np.savez`` stamps the current time)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buffer.getvalue()


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _log(ctx: StepContext, state: BkgState, params: BkgRemovalParams) -> str:
    mode = "3D (one fit over the stack)" if state.three_d else "2D (one fit per slice)"
    if not state.preserve_avg:
        keep = "the fitted constant term c0 (B - c0 removed)"
    else:
        keep = f"the mean of the background over {'the stack' if state.three_d else 'each slice'} (B - <B> removed)"
    lines = [f"Mode: {mode}", f"Polynomial basis: {poly.expr_from_powers(state.powers)}",
             "Coordinates: x = column / (W - 1), y = row / (H - 1) (top row 0), z = slice / (n - 1)",
             f"Slices: {state.n}; image (rows, columns): {tuple(ctx.meta.shape)}",
             f"Skip factors: {list(params.skip_factors)}; averaging: {params.skip_averaging}",
             f"Thresholds (fit only): [{params.threshold_min}, {params.threshold_max}]",
             f"Weight function: {params.weight_func}", f"Kept level: {keep}",
             *state.notes,
             f"X/Y statistics slices: {list(state.profile_slices)}"]
    return "\n".join(lines) + "\n"


def _save(fig: Any, path: Path) -> None:
    save_figure(fig, path)


def coefficients_over_z(state: BkgState) -> tuple[poly.Powers, np.ndarray]:
    """The in-plane terms and their coefficient at each slice, ``(n, q2)``: per slice in
    2D; in 3D ``a(z_k) = sum over pz of c * z_k**pz`` for each (px, py)."""
    if not state.three_d:
        return state.powers, state.coefs_table()
    terms = tuple(dict.fromkeys(p[:2] for p in state.powers))
    table = np.zeros((state.n, len(terms)))
    for k in range(state.n):
        z = poly.z_coord(k, state.n)
        for p, c in zip(state.powers, state.coefs):
            table[k, terms.index(p[:2])] += c * z ** p[2]
    return terms, table


def plot_coefs(state: BkgState, path: Path) -> None:
    """``coefs.png``: each in-plane term's coefficient against the slice index (in 3D, the
    global polynomial evaluated at each slice's z)."""
    terms, coefs = coefficients_over_z(state)
    q = len(terms)
    ncols = math.ceil(math.sqrt(q))
    nrows = math.ceil(q / ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(3.2 * ncols, 2.2 * nrows + 0.7), squeeze=False,
                             sharex=True, margins={"top": 0.85, "wspace": 0.35, "hspace": 0.35})
    frames = np.arange(len(coefs))
    for j, power in enumerate(terms):
        ax = axes.flat[j]
        ax.plot(frames, coefs[:, j], marker="." if len(frames) < 40 else None)
        ax.set_title(poly.expr_from_powers((power,)), fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes.flat[q:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("slice")
    kind = ("3D: one fit, in-plane coefficients at each slice's z" if state.three_d
            else "2D: fitted per slice")
    fig.suptitle(f"background coefficients ({kind})\n{poly.expr_from_powers(state.powers)}", fontsize=10)
    _save(fig, path)


def write_thumbnails(ctx: StepContext, state: BkgState, folder: Path) -> None:
    """``bkgs/<slice>.png``: the removed surface of each slice, with its min and max."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = ctx.meta.shape
    step = max(min(rows // 100, cols // 100), 1)
    for k, name in enumerate(ctx.names):
        surface = state.removed(k, (rows, cols), step)
        vmin, vmax = float(surface.min()), float(surface.max())
        scaled = np.zeros(surface.shape) if vmax == vmin else (surface - vmin) * (255.0 / (vmax - vmin))
        image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8)).convert("RGB")
        ImageDraw.Draw(image).text((1, 1), f"vmin={vmin:.1f}\nvmax={vmax:.1f}", fill=(255, 0, 0))
        path = folder / f"{Path(name).stem}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        image.save(tmp)
        tmp.replace(path)


def plot_profiles(before: dict[str, np.ndarray], after: dict[str, np.ndarray] | None,
                  skips: tuple[int, ...], folder: Path) -> None:
    """``stats_X.png`` and ``stats_Y.png``: min / max / mean against x and against y."""
    for axis, label, skip in (("x", "X", skips[0]), ("y", "Y", skips[1])):
        fig, axes = new_figure(3, 1, figsize=(8, 7), sharex=True, margins={"hspace": 0.15})
        for which, data, style in (("input", before, "-"), ("output", after, "-")):
            if data is None:
                continue
            values = data[axis].copy()
            values[2] = values[2] / data[f"count_{axis}"]
            coord = skip * np.arange(values.shape[1])
            for row, stat in enumerate(("Min", "Max", "Mean")):
                axes[row].plot(coord, values[row], style, color="C0" if which == "input" else "C1",
                               label=f"{stat} ({which})")
        for ax in axes:
            ax.legend(loc="best", fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel("x (column, px)" if axis == "x" else "y (row, px, top = 0)")
        fig.suptitle(f"gray levels along {label} (over the other axis and the sampled slices)")
        _save(fig, folder / f"stats_{label}.png")
