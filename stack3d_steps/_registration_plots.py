"""Figures of the registration steps (matplotlib Agg, drawn on the driver in ``finish``).

Transforms are shown as a microscopist reads them: translation x (columns, to the right)
and **y upward** (``-ty``), rotation **counter-clockwise** in degrees (``-rotation`` of the
image-frame decomposition), shear in degrees and scale - 1, against the slice index, one
line per block. As in PyStack3D, the parameters are those of the stored (inverse-map)
matrices: where the material of slice ``k`` sits relative to the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._figures import new_figure, save_figure
from ._registration_matrices import decompose

__all__ = ["plot_area", "plot_residuals", "plot_transforms"]



def plot_transforms(mats: np.ndarray, transformation: str, title: str, path: Path) -> None:
    """Components of ``(n, nb, 3, 3)`` matrices over the slice index, saved to ``path``."""
    n, nb = mats.shape[:2]
    comps = np.array([[decompose(mats[k, b]) for b in range(nb)] for k in range(n)])  # (n, nb, 6)
    panels = [("translation (px)", [(0, 1.0, "x"), (1, -1.0, "y (up)")])]
    if transformation != "TRANSLATION":
        rot = [(2, -180 / np.pi, "rotation (CCW)")]
        if transformation == "AFFINE":
            rot.append((5, 180 / np.pi, "shear"))
        panels.append(("angle (deg)", rot))
    if transformation in ("SCALED_ROTATION", "AFFINE"):
        panels.append(("scale - 1", [(3, 1.0, "x"), (4, 1.0, "y")]))
    fig, axes = new_figure(len(panels), 1, figsize=(8, 2.6 * len(panels) + 0.6), sharex=True, squeeze=False,
                           margins={"top": 0.88 if len(panels) > 1 else 0.82, "bottom": 0.15 if len(panels) == 1 else 0.1})
    k = np.arange(n)
    for ax, (label, series) in zip(axes[:, 0], panels, strict=True):
        for b in range(nb):
            for idx, factor, name in series:
                values = comps[:, b, idx] * factor
                if label.startswith("scale"):
                    values = values - 1.0
                style = "-" if series.index((idx, factor, name)) == 0 else "--"
                tag = f"{name}" + (f" block {b}" if nb > 1 else "")
                ax.plot(k, values, style, lw=1, label=tag)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if nb <= 4:
            ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("slice index")
    fig.suptitle(title)
    save_figure(fig, path)


def plot_residuals(pairs: np.ndarray, residuals: np.ndarray, weights: np.ndarray,
                   sigmas: dict[int, np.ndarray], path: Path) -> None:
    """Misfit of every measured pair after the global solution, by offset; pairs that the
    robust weights discounted (weight < 0.5) are circled."""
    fig, ax = new_figure(figsize=(8, 3.6), margins={"bottom": 0.15, "top": 0.88})
    offsets = pairs[:, 1] - pairs[:, 0]
    res = residuals.max(axis=1) if residuals.size else residuals
    low = weights.min(axis=1) < 0.5 if weights.size else np.zeros(0, bool)
    for d in np.unique(offsets):
        s = offsets == d
        sig = float(np.max(sigmas.get(int(d), np.zeros(1))))
        ax.plot(pairs[s, 1], res[s], ".", ms=3, label=f"offset {d} (sigma {sig:.3f} px)")
    if low.any():
        ax.plot(pairs[low, 1], res[low], "o", mfc="none", mec="r", ms=7, label="down-weighted")
    ax.set_xlabel("slice index i of the pair (i - offset, i)")
    ax.set_ylabel("misfit (px, RMS at corners + centre)")
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("registration_calculation: pair misfits of the global solution")
    save_figure(fig, path)


def plot_area(mask: np.ndarray, bounds: tuple[int, int, int, int], path: Path) -> None:
    """The pixels valid on every slice (white) and the crop kept (red); image orientation
    (row 0 at the top)."""
    imin, imax, jmin, jmax = bounds
    h, w = mask.shape
    from matplotlib.patches import Rectangle

    fig, ax = new_figure(figsize=(6, 6 * h / max(w, 1) + 0.5), margins={"left": 0.12, "bottom": 0.1})
    ax.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.add_patch(Rectangle((jmin - 0.5, imin - 0.5), jmax - jmin, imax - imin, lw=1.2, ec="r", fc="none"))
    ax.set_title(f"valid on every slice; crop rows {imin}:{imax}, columns {jmin}:{jmax}", fontsize=9)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    save_figure(fig, path)
