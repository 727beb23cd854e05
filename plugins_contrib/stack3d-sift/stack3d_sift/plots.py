"""Figures of ``sift_registration`` (matplotlib, Agg backend, imported here only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cumulative import KEPT_NEIGHBOUR

__all__ = ["plot_matches", "plot_transforms"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)


def plot_transforms(chained: np.ndarray, applied: np.ndarray, shape: tuple[int, int], axis: tuple[np.ndarray, str],
                    flags: Sequence[str], title: str, path: Path) -> None:
    """Centre shift, rotation, scales and shear of the cumulative matrices against z:
    as chained from the pairs (thin) and as applied after the drift options (thick);
    slices that kept their neighbour's transform are marked in red."""
    from .outputs import decompose

    plt = _pyplot()
    z, label = axis
    keys = (("centre_dx_px", "centre shift x (px)"), ("centre_dy_px", "centre shift y (px, down)"),
            ("rotation_deg", "rotation (deg)"), ("scale_x", "scale x"), ("scale_y", "scale y"), ("shear_deg", "shear (deg)"))
    raw = [decompose(m, shape) for m in chained]
    app = [decompose(m, shape) for m in applied]
    bad = np.array([f == KEPT_NEIGHBOUR for f in flags])
    fig, axes = plt.subplots(3, 2, figsize=(10, 8), sharex=True)
    for ax, (key, name) in zip(axes.ravel(), keys):
        ax.plot(z, [d[key] for d in raw], lw=0.8, color="0.6", label="chained pairs")
        values = np.array([d[key] for d in app])
        ax.plot(z, values, lw=1.5, color="C0", label="applied")
        if bad.any():
            ax.plot(z[bad], values[bad], "o", color="red", ms=4, label="kept neighbour")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(label)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_matches(report: Any, axis: tuple[np.ndarray, str], title: str, path: Path) -> None:
    """Matches and inliers of every pair (against the later slice of the pair), residual
    RMS, and the unusable pairs in red."""
    plt = _pyplot()
    z, label = axis
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    offsets = sorted({i - j for j, i in report.pairs})
    for n, d in enumerate(offsets):
        items = sorted((i, r) for (j, i), r in report.pairs.items() if i - j == d)
        idx = np.array([i for i, _ in items])
        matches = np.array([r.get("matches") for _, r in items])
        inliers = np.array([r.get("inliers") for _, r in items])
        rms = np.array([r.get("residual_rms_px") for _, r in items])
        ok = np.array([r.ok for _, r in items])
        top.plot(z[idx], matches, lw=0.8, ls="--", color=f"C{n}", label=f"matches (offset {d})")
        top.plot(z[idx], inliers, lw=1.2, color=f"C{n}", label=f"inliers (offset {d})")
        if (~ok).any():
            top.plot(z[idx[~ok]], inliers[~ok], "x", color="red", ms=6,
                     label="unusable pair" if n == 0 else None)
        bottom.plot(z[idx], rms, lw=1.0, color=f"C{n}", label=f"offset {d}")
    top.set_ylabel("point pairs")
    top.set_yscale("symlog", linthresh=10)
    top.grid(alpha=0.3)
    bottom.set_ylabel("inlier residual RMS (px)")
    bottom.set_xlabel(label + " (later slice of the pair)")
    bottom.grid(alpha=0.3)
    if offsets:
        top.legend(fontsize=7, ncol=2)
        bottom.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
