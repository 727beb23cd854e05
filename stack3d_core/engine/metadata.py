"""Carrying stack metadata (pixel size, z positions, instrument) from step to step.

Intermediate images are plain TIFF folders, which cannot hold everything a reader found
(per-slice z positions, instrument fields, a pixel size the user gave). After each step the
engine saves the output :class:`~stack3d_core.stackio.StackMeta` as
``process/<step>/<channel>/outputs/stack_meta.json``; the next step reads the images through
:class:`SavedMetaReader`, which takes ``n``, ``shape`` and ``dtype`` from the files and the
rest from that JSON. :class:`PixelSizeOverride` applies ``[input] pixel_size``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ..stackio import StackMeta, StackReader

__all__ = ["META_FILE", "PixelSizeOverride", "SavedMetaReader", "meta_from_json", "meta_to_json"]

META_FILE = "stack_meta.json"


def _plain(value: Any) -> Any:
    """JSON-able copy: tuples to lists, numpy scalars and arrays to Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def meta_to_json(meta: StackMeta) -> str:
    """``meta`` as JSON text (instrument values that are not JSON become strings)."""
    return json.dumps(_plain(attrs.asdict(meta, recurse=False)), indent=1)


def meta_from_json(text: str) -> StackMeta:
    """The :class:`StackMeta` saved by :func:`meta_to_json`."""
    data = json.loads(text)
    pixel = data.get("pixel_size")
    z = data.get("z_positions")
    return StackMeta(n=int(data["n"]), shape=tuple(data["shape"]), dtype=str(data["dtype"]),
                     pixel_size=tuple(float(v) for v in pixel) if pixel else None,
                     unit=str(data.get("unit", "um")),
                     z_positions=tuple(float(v) for v in z) if z is not None else None,
                     instrument=dict(data.get("instrument") or {}))


class _Wrapper(StackReader):
    """Delegates everything but :meth:`meta` to ``inner``."""

    name = "wrapped"

    def __init__(self, inner: StackReader) -> None:
        super().__init__(inner.path, None)
        self.inner = inner

    def channels(self) -> tuple[str, ...]:
        return self.inner.channels()

    def names(self, channel: str) -> tuple[str, ...]:
        return self.inner.names(channel)

    def meta(self, channel: str) -> StackMeta:
        return self.inner.meta(channel)

    def read(self, channel: str, index: int) -> np.ndarray:
        return self.inner.read(channel, index)

    def extras(self, channel: str, index: int) -> dict[str, Any]:
        return self.inner.extras(channel, index)

    def read_with_extras(self, channel: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        return self.inner.read_with_extras(channel, index)

    def describe(self, channel: str, index: int) -> str:
        return self.inner.describe(channel, index)


class SavedMetaReader(_Wrapper):
    """Reads a step's output folder with the metadata the engine saved beside it.

    ``n``, ``shape`` and ``dtype`` always come from the files; ``pixel_size``, ``unit``,
    ``instrument`` and (when the slice count agrees) ``z_positions`` from the JSON.
    """

    def __init__(self, inner: StackReader, step_dir: Path) -> None:
        super().__init__(inner)
        self.step_dir = Path(step_dir)

    def meta(self, channel: str) -> StackMeta:
        found = self.inner.meta(channel)
        folder = self.step_dir if channel == "." else self.step_dir / channel
        path = folder / "outputs" / META_FILE
        if not path.is_file():
            return found
        try:
            saved = meta_from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            return found  # an unreadable side file must not stop the run
        z = saved.z_positions if saved.z_positions is not None and len(saved.z_positions) == found.n else \
            found.z_positions
        return found.evolve(pixel_size=saved.pixel_size or found.pixel_size, unit=saved.unit,
                            z_positions=z, instrument={**found.instrument, **saved.instrument})


class PixelSizeOverride(_Wrapper):
    """``[input] pixel_size``: replaces the pixel size every reader reports.

    :param pixel_size: ``(x, y)`` or ``(x, y, z)`` in µm; a missing z keeps the reader's.
    """

    def __init__(self, inner: StackReader, pixel_size: tuple[float, ...]) -> None:
        super().__init__(inner)
        self.pixel_size = tuple(float(v) for v in pixel_size)

    def meta(self, channel: str) -> StackMeta:
        found = self.inner.meta(channel)
        x, y = self.pixel_size[:2]
        if len(self.pixel_size) == 3:
            z = self.pixel_size[2]
        else:
            z = found.pixel_size[2] if found.pixel_size is not None else float("nan")
        if found.unit != "um":  # the override is in µm; z positions in another unit are dropped
            found = found.evolve(unit="um", z_positions=None)
        return found.evolve(pixel_size=(x, y, z), instrument={**found.instrument, "pixel_size_source": "[input]"})
