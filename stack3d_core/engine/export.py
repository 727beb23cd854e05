"""Exporting the final stack to the ``[output]`` writer (e.g. MRC, OME-Zarr, a TIFF folder
elsewhere), streaming slice by slice through the same task code as the steps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..stackio import NoOptions, StackReader
from ..step import Step, StepContext
from .executors import SerialExecutor
from .runner import execute_step

if TYPE_CHECKING:
    from ..config.project import ProjectConfig
    from ..plugin.host import PluginHost
    from ..progress import ProgressCallback

__all__ = ["channel_path", "copy_stack", "export_result"]


class _Copy(Step):
    """Identity step: every slice unchanged (cast-free, since the dtype is kept)."""

    name = "export"
    Params = NoOptions

    def apply(self, image: np.ndarray, index: int, state: Any) -> np.ndarray:
        return image


def copy_stack(
    reader: StackReader,
    channel: str,
    writer_cls: Any,
    path: Path,
    options: Any = None,
    progress: ProgressCallback | None = None,
    executor: Any = None,
    parallelism: int = 1,
) -> int:
    """Stream every slice of ``reader``'s ``channel`` into a new ``writer_cls`` at ``path``
    (metadata included), on ``executor`` (default: in-process).

    :returns: the number of slices written.
    """
    meta = reader.meta(channel)
    names = reader.names(channel)
    ctx = StepContext(step="export", channel=channel, channels=(channel,), project_dir=path.parent,
                      image_dir=path, outputs_dir=path.parent, names=tuple(names), meta=meta,
                      process_dir=path.parent)

    def make_writer(meta_out: Any, out_names: Any) -> Any:
        return writer_cls(path, meta_out, out_names, options)

    outcome = execute_step(_Copy(), ctx, reader, make_writer, executor or SerialExecutor(), parallelism, progress)
    return outcome.n_out


def channel_path(path: Path, channel: str) -> Path:
    """Output path of one channel when several are written: ``out.ome.zarr`` + ``SE2`` ->
    ``out_SE2.ome.zarr`` (compound suffixes kept; the root channel ``"."`` is ``root``)."""
    name = path.name
    stem, dot, rest = name.partition(".")
    label = channel.strip("./") or "root"
    return path.with_name(f"{stem}_{label}{dot}{rest}")


def export_result(config: ProjectConfig, host: PluginHost, reader: StackReader,
                  progress: ProgressCallback | None = None) -> list[Path]:
    """Write the final images of every channel with the ``[output]`` writer."""
    assert config.output.path is not None
    writer_cls = host.writers.get(config.output.name) if config.output.name else host.writer_for(config.output.path)
    written = []
    for channel in config.channels:
        path = config.output.path
        if len(config.channels) > 1:
            path = channel_path(path, channel)
        copy_stack(reader, channel, writer_cls, path, config.output.options, progress)
        written.append(path)
    return written
