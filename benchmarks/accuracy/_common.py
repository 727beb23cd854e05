"""Helpers shared by the accuracy benchmarks (``accuracy.py`` skips ``_*.py`` modules).

Importable as ``_common`` both when a benchmark runs as a script (its folder is on
``sys.path``) and under ``benchmarks/accuracy.py`` (which puts this folder there).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stack3d_core.testing.pystack3d import find_pystack3d_python
from stack3d_core.testing.pystack3d import run_pystack3d as _run_pystack3d

__all__ = ["markdown_table", "pyplot", "pystack3d_python", "run_stack3d", "run_timed", "save_figure", "write_project"]


def pystack3d_python(given: str | None, **kw: Any) -> str | None:
    """The PyStack3D interpreter given (``--pystack3d``) or named by
    ``STACK3D_PYSTACK3D_PYTHON``; ``None`` without one (a benchmark never falls back to
    this interpreter). ``kw``: more options of
    :func:`~stack3d_core.testing.pystack3d.find_pystack3d_python`."""
    return find_pystack3d_python(given, this_interpreter=False, **kw)


def write_project(folder: Path, slices: Iterable[tuple[str, Any]], params: str) -> Path:
    """Write a PyStack3D project: ``folder`` (created with its parents; it must not exist)
    holding the ``(name, image)`` slices as TIFF files and ``params.toml``."""
    import tifffile

    folder.mkdir(parents=True)
    for name, image in slices:
        tifffile.imwrite(folder / name, image, photometric="minisblack")
    (folder / "params.toml").write_text(params)
    return folder


def run_stack3d(folder: Path) -> None:
    """Run stack3d on a project folder with the built-in ``io`` and ``steps`` plugins only
    (no ``plots`` observer, no other installed plugin)."""
    import stack3d_io.plugin
    import stack3d_steps.plugin
    from stack3d_core import PluginHost, load_config, run

    host = PluginHost(autoload=False)
    host.register(stack3d_io.plugin, "io")
    host.register(stack3d_steps.plugin, "steps")
    run(load_config(folder / "params.toml", host), host=host)


def run_timed(folder: Path, steps: Sequence[str], python: str | None = None, *,
              timeout: float | None = None) -> float:
    """Run ``steps`` on a project folder and return the wall time (s): stack3d
    (:func:`run_stack3d`, which runs the ``process_steps`` of its ``params.toml``) when
    ``python`` is ``None``, else PyStack3D in that interpreter (``timeout`` applies), which
    raises :class:`RuntimeError` with the end of its stderr when it fails."""
    t0 = time.perf_counter()
    if python is None:
        run_stack3d(folder)
    else:
        proc = _run_pystack3d(folder, steps, python=python, timeout=timeout, check=False)
        if proc.returncode:
            raise RuntimeError(f"PyStack3D failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table: the header, its ``|---|`` line and one line per row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, *, dpi: int, atomic: bool = False) -> None:
    """Save ``fig`` as ``path`` and close it; ``atomic``: through a temporary file renamed
    into place."""
    target = path.with_name(f".{path.name}.tmp.png") if atomic else path
    plt = pyplot()
    fig.savefig(target, dpi=dpi)
    plt.close(fig)
    if atomic:
        target.replace(path)
