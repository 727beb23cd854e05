"""A whole stack in one multi-page TIFF (PyStack3D's single-TIFF mode, spec §1.2).

* ``path`` is the TIFF file. Its first series (``tifffile.TiffFile.series[0]``) is the
  stack: either one 2D page per slice, or one 3D series (ImageJ / tifffile stacks,
  including ImageJ files with a single IFD whose planes follow one another).
* There is one channel, ``"images"`` (PyStack3D's name for single-TIFF projects).
* Slice names are ``img_{i:0Nd}.tif`` with ``N = max(3, len(str(n - 1)))`` digits, so that
  names sort in stack order past 1000 pages (PyStack3D always uses 3 digits).
* :meth:`MultipageTiffReader.read` reads one page, not the whole file. Pixels are indexed
  ``[row, column]``. Extras are the private tags, compression and resolution of that page
  (of page 0 when the planes share one IFD); see :mod:`stack3d_io._tiffutil`.
* Pixel size, z positions (Fibics ``ZPos`` of every page) and instrument fields come from
  the tags (Zeiss CZ_SEM, Atlas/Fibics XML, FEI; :mod:`stack3d_io.sem_metadata`); the
  ``pixel_size`` option overrides the pixel size. Without them: ``None``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta, StackReader

from ._tiffutil import (
    TIFF_SUFFIXES,
    as_triple,
    check_complete,
    check_plane,
    open_tiff,
    page_extras,
    pixel_size_issues,
    to_native,
)
from .sem_metadata import fibics_z_from_pages, read_page_metadata, stack_fields

__all__ = ["MultipageTiffReader"]

CHANNEL = "images"
"""The single channel of a multi-page TIFF."""


@attrs.frozen(kw_only=True)
class MultipageTiffOptions:
    """Options of :class:`MultipageTiffReader` (the ``[input]`` table)."""

    pixel_size: tuple[float, float, float] | None = attrs.field(
        default=None,
        metadata={
            "doc": "voxel size (x = column spacing, y = row spacing, z = slice spacing); "
            "overrides what the file says. None: the instrument metadata's, else unknown.",
            "unit": "um",
        },
    )
    instrument_metadata: bool = attrs.field(
        default=True,
        metadata={
            "doc": "read the instrument metadata of the first page (Zeiss CZ_SEM, "
            "Atlas/Fibics XML, FEI; Atlas3D.a3d-setup beside the file): pixel size, "
            "detector, EHT, ... and the Fibics z position of every page "
            "(stack3d_io.sem_metadata)",
            "unit": "",
        },
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        return pixel_size_issues(self.pixel_size)


@attrs.frozen
class _Layout:
    """Where the slices of the file are (picklable; cached in the reader)."""

    n: int
    shape: tuple[int, int]
    dtype: str
    page_indices: tuple[int, ...] | None  # IFD index of every slice, or None:
    data_offset: int | None  # planes stored contiguously after this byte (single IFD)


def _count_planes(tif: Any) -> int:
    try:
        series = tif.series[0]
        key = series.keyframe
        return int(math.prod(series.shape) // max(1, math.prod(key.shape)))
    except Exception:
        return 0


class MultipageTiffReader(StackReader):
    """Reads a stack stored in one multi-page TIFF; channel ``"images"``."""

    name = "multipage_tiff"
    description = "one multi-page TIFF (a page per slice, or a 3D series); channel 'images'"
    Options = MultipageTiffOptions

    def __init__(self, path: str | os.PathLike[str], options: Any = None) -> None:
        super().__init__(path, options)
        self._layout_cache: _Layout | None = None
        self._meta_cache: StackMeta | None = None

    @classmethod
    def can_read(cls, path: Path) -> bool:
        """A ``.tif``/``.tiff`` file whose first series holds more than one 2D plane."""
        path = Path(path)
        if not (path.is_file() and path.name.lower().endswith(TIFF_SUFFIXES)):
            return False
        try:
            with open_tiff(path) as tif:
                return _count_planes(tif) > 1
        except InputError:
            return False

    def _check_channel(self, channel: str) -> None:
        if channel != CHANNEL:
            raise InputError(
                self.path, f"unknown channel {channel!r}: a multi-page TIFF has only {CHANNEL!r}"
            )

    def _layout(self) -> _Layout:
        if self._layout_cache is not None:
            return self._layout_cache
        path = self.path
        with open_tiff(path) as tif:
            if not tif.series:
                raise InputError(path, "TIFF holds no image")
            series = tif.series[0]
            key = series.keyframe
            shape, dtype = check_plane(key, path)
            n = int(math.prod(series.shape) // math.prod(shape))
            pages = list(series.pages)
            indices = [getattr(p, "index", None) for p in pages]
            page_indices: tuple[int, ...] | None = None
            data_offset: int | None = None
            if len(pages) == n and all(isinstance(i, int) for i in indices):
                page_indices = tuple(int(i) for i in indices)  # type: ignore[arg-type]
            elif series.dataoffset is not None:
                data_offset = int(series.dataoffset)
            self._layout_cache = _Layout(n, shape, dtype, page_indices, data_offset)
        return self._layout_cache

    def channels(self) -> tuple[str, ...]:
        """``("images",)``."""
        return (CHANNEL,)

    def names(self, channel: str) -> tuple[str, ...]:
        """``img_000.tif`` ... with at least 3 digits, enough for every index."""
        self._check_channel(channel)
        n = self._layout().n
        digits = max(3, len(str(max(n - 1, 0))))
        return tuple(f"img_{i:0{digits}d}.tif" for i in range(n))

    def meta(self, channel: str) -> StackMeta:
        """n, ``(rows, columns)``, dtype; pixel size from the option, else from the
        instrument metadata of the first page; z positions from the Fibics ``ZPos`` of
        every page, else ``None`` (:mod:`stack3d_io.sem_metadata`)."""
        self._check_channel(channel)
        if self._meta_cache is not None:
            return self._meta_cache
        lay = self._layout()
        info = None
        instrument_z = None
        problems: list[str] = []
        if self.options.instrument_metadata:
            path = self.path
            with open_tiff(path) as tif:
                first = lay.page_indices[0] if lay.page_indices is not None else 0
                info = read_page_metadata(tif.pages[first], path, lay.shape, (path.parent,))
                if info.slice_z and lay.page_indices is not None:
                    instrument_z = fibics_z_from_pages(tif, lay.page_indices, path, problems)
        pixel_size, z_positions, instrument = stack_fields(
            as_triple(self.options.pixel_size), info, instrument_z, None, problems
        )
        self._meta_cache = StackMeta(
            n=lay.n,
            shape=lay.shape,
            dtype=lay.dtype,
            pixel_size=pixel_size,
            unit="um",
            z_positions=z_positions,
            instrument=instrument,
        )
        return self._meta_cache

    def describe(self, channel: str, index: int) -> str:
        """``<file> [page <index>]``."""
        return f"{self.path} [page {index}]"

    def _read(
        self, channel: str, index: int, with_extras: bool
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._check_channel(channel)
        lay = self._layout()
        if not 0 <= index < lay.n:
            raise IndexError(f"page index {index} out of range 0..{lay.n - 1}")
        what = f"page {index}"
        with open_tiff(self.path, what) as tif:
            if lay.page_indices is not None:
                page = tif.pages[lay.page_indices[index]]
                shape, dtype = check_plane(page, self.path, what)
                if (shape, dtype) != (lay.shape, lay.dtype):
                    raise InputError(
                        self.path,
                        f"{what}: expected shape {lay.shape} and dtype {lay.dtype} as page 0, "
                        f"got {shape} and {dtype}",
                    )
                check_complete(page, self.path, what)
                image = page.asarray()
            else:
                page = tif.pages[0]
                image = self._plane_from_series(tif, lay, index)
            extras = page_extras(tif, page) if with_extras else {}
        return to_native(image), extras

    def _plane_from_series(self, tif: Any, lay: _Layout, index: int) -> np.ndarray:
        """Plane ``index`` of a series whose planes share one IFD (e.g. ImageJ > 4 GB)."""
        series = tif.series[0]
        if lay.data_offset is not None:
            dtype = np.dtype(lay.dtype).newbyteorder(tif.byteorder)
            count = lay.shape[0] * lay.shape[1]
            offset = lay.data_offset + index * count * dtype.itemsize
            fh = tif.filehandle
            fh.seek(offset)
            raw = fh.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise InputError(self.path, f"page {index}: truncated file")
            return np.frombuffer(raw, dtype=dtype).reshape(lay.shape).copy()
        # compressed planes without their own IFD: read the series (whole file)
        data = series.asarray()
        return np.asarray(data).reshape((-1, *lay.shape))[index].copy()

    def read(self, channel: str, index: int) -> np.ndarray:
        """Pixels of page ``index``, shape ``(rows, columns)``."""
        return self._read(channel, index, with_extras=False)[0]

    def extras(self, channel: str, index: int) -> dict[str, Any]:
        """Private tags, compression and resolution of page ``index``."""
        self._check_channel(channel)
        lay = self._layout()
        if not 0 <= index < lay.n:
            raise IndexError(f"page index {index} out of range 0..{lay.n - 1}")
        page_index = lay.page_indices[index] if lay.page_indices is not None else 0
        with open_tiff(self.path, f"page {index}") as tif:
            return page_extras(tif, tif.pages[page_index])

    def read_with_extras(self, channel: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Pixels and extras of page ``index`` with one file open."""
        return self._read(channel, index, with_extras=True)
