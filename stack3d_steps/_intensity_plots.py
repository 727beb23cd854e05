"""Figures of ``intensity_rescaling`` and ``intensity_rescaling_area`` (matplotlib, Agg).

Drawn on the driver in ``finish``; each figure is saved atomically at 110 dpi and closed.
Histogram figures put gray levels (the bins' range ``[vmin, vmax]``) on x and the slice
index on y, slice 0 at the bottom.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._figures import new_figure, save_figure

__all__ = ["histogram_percentiles", "plot_area_factors", "plot_area_means",
           "plot_histogram_maps", "plot_histogram_profiles"]

_TITLES = ("original", "reference", "final")


def _save(fig: Any, path: Path) -> None:
    save_figure(fig, path)


def histogram_percentiles(hist: np.ndarray, vmin: float, vmax: float,
                          q: tuple[float, ...] = (0.05, 0.5, 0.95)) -> np.ndarray:
    """Gray-level percentiles of every histogram row, interpolated linearly within bins.

    :returns: ``(n, len(q))`` float64 (NaN for an empty row).
    """
    hist = np.asarray(hist, dtype=np.float64)
    edges = np.linspace(vmin, vmax, hist.shape[1] + 1)
    out = np.full((hist.shape[0], len(q)), np.nan)
    for k, row in enumerate(hist):
        total = row.sum()
        if total > 0:
            cdf = np.concatenate([[0.0], np.cumsum(row) / total])
            out[k] = np.interp(q, cdf, edges)
    return out


def plot_histogram_maps(orig: np.ndarray, ref: np.ndarray, final: np.ndarray, vmin: float,
                        vmax: float, path: Path) -> None:
    """Three (slices × gray level) maps of the histograms: original, reference, final, on
    one colour scale (counts per bin)."""
    n = orig.shape[0]
    top = float(max(np.max(orig), np.max(ref), np.max(final), 1))
    fig, axes = new_figure(1, 3, figsize=(13, 4), sharey=True, margins={"left": 0.06, "right": 0.9, "bottom": 0.16, "top": 0.9, "wspace": 0.1})
    for ax, data, title in zip(axes, (orig, ref, final), _TITLES):
        im = ax.imshow(data, origin="lower", aspect="auto", extent=(vmin, vmax, -0.5, n - 0.5),
                       vmin=0, vmax=top, cmap="viridis", interpolation="nearest")
        ax.set_title(f"{title} histograms")
        ax.set_xlabel("gray level")
    axes[0].set_ylabel("slice index")
    fig.colorbar(im, ax=axes, label="pixels per bin", shrink=0.9)
    _save(fig, path)


def plot_histogram_profiles(orig: np.ndarray, ref: np.ndarray, final: np.ndarray, vmin: float,
                            vmax: float, path: Path, max_lines: int = 40) -> None:
    """Overlaid histograms (at most ``max_lines`` slices, coloured by slice index) of the
    original, reference and final stacks, and the 5 / 50 / 95 % gray levels per slice."""
    n, nbins = orig.shape
    centres = np.linspace(vmin, vmax, nbins + 1)
    centres = (centres[1:] + centres[:-1]) / 2
    picks = np.unique(np.linspace(0, n - 1, min(n, max_lines)).round().astype(int))
    from matplotlib import cm, colormaps, colors

    cmap = colormaps["viridis"]
    fig, axes = new_figure(2, 2, figsize=(11, 8))
    for ax, data, title in zip(axes.flat[:3], (orig, ref, final), _TITLES):
        for k in picks:
            ax.plot(centres, data[k], color=cmap(k / max(n - 1, 1)), lw=0.8, alpha=0.7)
        ax.plot(centres, np.mean(data, axis=0), color="k", lw=1.5, label="mean over slices")
        ax.set_title(f"{title} histograms ({len(picks)} of {n} slices)")
        ax.set_xlabel("gray level")
        ax.set_ylabel("pixels per bin")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="best", fontsize="small")
    sm = cm.ScalarMappable(cmap=cmap, norm=colors.Normalize(0, max(n - 1, 1)))
    fig.colorbar(sm, ax=axes[0, :], label="slice index", shrink=0.9)
    ax = axes[1, 1]
    frames = np.arange(n)
    for data, style, title in ((orig, "-", "original"), (final, "-", "final"), (ref, ":", "reference")):
        pct = histogram_percentiles(data, vmin, vmax)
        colour = {"original": "C0", "final": "C1", "reference": "k"}[title]
        for j, q in enumerate((5, 50, 95)):
            ax.plot(frames, pct[:, j], ls=style, color=colour, lw=1.6 if q == 50 else 0.9,
                    label=f"{title}" if j == 1 else None)
    ax.set_title("5 / 50 / 95 % gray levels per slice")
    ax.set_xlabel("slice index")
    ax.set_ylabel("gray level")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_area_means(means: np.ndarray, ref: float, path: Path) -> None:
    """Mean gray level of the area per slice, with the reference (median) level."""
    fig, ax = new_figure(figsize=(7, 3.8))
    ax.plot(np.arange(len(means)), means, ".-", color="C0", lw=1, ms=3, label="area mean")
    ax.axhline(ref, color="k", ls="--", lw=1, label=f"reference (median) = {ref:.4g}")
    ax.set_xlabel("slice index")
    ax.set_ylabel("mean gray level in the area")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_area_factors(factors: np.ndarray, factors_range: tuple[float, float], clipped: np.ndarray,
                      path: Path) -> None:
    """Rescaling factor per slice, the allowed range, and the slices clipped to it
    (``clipped``: boolean per slice)."""
    lo, hi = factors_range
    frames = np.arange(len(factors))
    fig, ax = new_figure(figsize=(7, 3.8))
    ax.plot(frames, factors, ".-", color="C1", lw=1, ms=3, label="factor")
    if clipped.any():
        ax.plot(frames[clipped], factors[clipped], "x", color="C3", label="clipped to the range")
    for bound in (lo, hi):
        ax.axhline(bound, color="gray", ls="--", lw=1)
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xlabel("slice index")
    ax.set_ylabel("rescaling factor")
    ax.set_title(f"factors_range = [{lo:g}, {hi:g}]")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, path)
