"""Figures: metrics along z, and FRC curves of a few pairs (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from . import metrics as m
from .evaluate import MetricsTable

__all__ = ["plot_frc", "plot_metrics"]

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("NCC, NMI (-)", ("ncc", "nmi")),
    ("NSAD (-)", ("nsad",)),
    ("SNR (-)", ("snr_ncc", "snr_x", "snr_y", "snr_r")),
    ("dark offset (DN)", ("dark_offset",)),
    ("gain (DN/quantum)", ("gain",)),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> None:
    plt = _pyplot()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


def plot_metrics(series: Sequence[tuple[str, MetricsTable]], path: Path, title: str, z_unit: str = "") -> bool:
    """One panel per metric group, metrics against z (or slice index when z is unknown).

    :param series: ``(label, table)`` pairs drawn with different line styles (e.g. the
        input and output of an observed step).
    :param z_unit: length unit of the z positions, for the axis label.
    :returns: False when no metric had a finite value (nothing drawn).
    """
    plt = _pyplot()
    columns = {c for _, t in series for c in t.columns}
    frc_cols = tuple(c for c in series[0][1].columns if c.startswith("frc_") and c.endswith("_px"))
    groups = [*_GROUPS, ("FRC resolution (px)", frc_cols)]
    panels = [(label, [c for c in cols if c in columns]) for label, cols in groups]
    panels = [(label, cols) for label, cols in panels
              if any(t.column(c)[0].size for _, t in series for c in cols)]
    if not panels:
        return False
    use_z = all(t.z is not None for _, t in series)
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 1.9 * len(panels) + 0.8), sharex=True,
                             layout="constrained", squeeze=False)
    styles = ("-", "--", ":", "-.")
    for ax, (label, cols) in zip(axes[:, 0], panels, strict=True):
        for s, (name, table) in enumerate(series):
            for c, col in enumerate(cols):
                idx, vals = table.column(col)
                if idx.size == 0:
                    continue
                tag = col if len(series) == 1 else f"{col} ({name})"
                ax.plot(table.zaxis(idx), vals, styles[s % len(styles)], color=f"C{c}", marker=".", ms=3, label=tag)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="x-small", ncol=2)
    axes[-1, 0].set_xlabel((f"z ({z_unit})" if z_unit else "z") if use_z else "slice index")
    axes[0, 0].set_title(title)
    _save(fig, path, dpi=100)
    return True


def plot_frc(freq: np.ndarray, n_pixels: np.ndarray, curves: Mapping[str, np.ndarray], thresholds: Sequence[str],
             path: Path, title: str, pixel: tuple[float, str] | None = None) -> None:
    """FRC curves against spatial frequency, with the threshold curves.

    :param curves: ``{label: FRC per ring}`` (e.g. ``"slices 4-5"``).
    :param pixel: ``(pixel size, unit)``: adds a top axis in cycles per unit.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for k, (label, curve) in enumerate(curves.items()):
        ax.plot(freq[1:], np.asarray(curve)[1:], color=f"C{k}", lw=1, label=label)
    for j, spec in enumerate(thresholds):
        ax.plot(freq[1:], m.frc_threshold(spec, n_pixels)[1:], color="k", ls=("--", ":", "-.")[j % 3], lw=1,
                label=f"threshold {spec}")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("spatial frequency (cycles/pixel)")
    ax.set_ylabel("FRC")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if pixel is not None:
        size, unit = pixel
        top = ax.secondary_xaxis("top", functions=(lambda f: f / size, lambda g: g * size))
        top.set_xlabel(f"cycles/{unit}")
    ax.set_title(title)
    _save(fig, path, dpi=100)
