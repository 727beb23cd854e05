"""Figures of the built-in steps: cheap to draw and saved atomically.

Every step writes plots on every run, so their cost matters on long pipelines: figures are
made with :class:`matplotlib.figure.Figure` directly (no pyplot state, safe outside the main
thread), without matplotlib's constrained layout (which costs as much as drawing), at
:data:`DPI` and with fast PNG compression. Measured on a 3-panel line plot and a 2x3 image
grid: 114 -> 62 ms and 368 -> 144 ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DPI", "new_figure", "save_figure"]

DPI = 90
"""Resolution of the saved PNGs (dots per inch)."""


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (7.0, 4.5),
               margins: dict[str, float] | None = None, **subplots: Any) -> tuple[Any, Any]:
    """A figure and its axes (``Figure.subplots(nrows, ncols, **subplots)``).

    :param margins: ``Figure.subplots_adjust`` arguments (left, right, top, bottom, wspace,
        hspace); default margins suit axes with labels and a title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, **subplots)
    fig.subplots_adjust(**({"left": 0.1, "right": 0.97, "top": 0.92, "bottom": 0.1,
                            "wspace": 0.25, "hspace": 0.3} | (margins or {})))
    return fig, axes


def save_figure(fig: Any, path: Path, dpi: int = DPI) -> Path:
    """Save ``fig`` as PNG at ``path`` through a temporary file (atomic) and free it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, pil_kwargs={"compress_level": 1})
    tmp.replace(path)
    fig.clear()
    return path
