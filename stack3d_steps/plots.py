"""Entry point ``plots``: draws ``outputs/stats.png`` after every image-writing step.

An observer plugin (hook ``stack3d_after_step``), so the core engine stays free of
matplotlib. Disable it with ``STACK3D_DISABLE_PLUGINS=plots`` to save the plotting time
on very long stacks; ``stats.npy`` is written by the engine either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stack3d_core import Step, StepContext, hookimpl

__all__ = ["plot_stats", "stack3d_after_step"]

_STATS = ("min", "max", "mean")


def plot_stats(stats: np.ndarray, path: Path, title: str) -> None:
    """Plot per-slice min / max / mean of the input, raw output and cast output.

    :param stats: ``(n, 3, 3)``: ``stats[k, source, stat]``, source 0 input, 1 raw output
        (float), 2 output cast to the stack dtype; stat 0 min, 1 max, 2 mean.
    :param path: PNG file to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    frames = np.arange(stats.shape[0])
    fig, axes = plt.subplots(3, 1, figsize=(7, 6.5), sharex=True, layout="constrained")
    for j, ax in enumerate(axes):
        ax.plot(frames, stats[:, 0, j], color="C0", label="input")
        ax.plot(frames, stats[:, 1, j], color="C1", ls="--", label="output (before cast)")
        ax.plot(frames, stats[:, 2, j], color="C1", label="output")
        ax.set_ylabel(f"{_STATS[j]} (gray level)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    axes[0].set_title(title)
    axes[-1].set_xlabel("slice index")
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


@hookimpl
def stack3d_after_step(step: Step, context: StepContext, stats: Any) -> None:
    """Write ``stats.png`` next to ``stats.npy``."""
    if stats is None or len(stats) == 0:
        return
    label = step.name if context.channel == "." else f"{step.name} [{context.channel}]"
    plot_stats(np.asarray(stats), context.outputs_dir / "stats.png", f"{label}: per-slice statistics")
