"""One TIFF file per slice, in a folder per channel (PyStack3D's project layout, spec §1.3).

Layout read by :class:`TiffFolderReader`::

    project/slice_0000_z=0.0000um.tif, ...        single channel, channel "."
    project/SE2/slice_00100_z=1.0894um.tif, ...   one subfolder per channel ("SE2", "ESB")

* Slices are the visible ``*.tif`` / ``*.tiff`` files (suffix compared case-insensitively,
  names starting with ``.`` ignored), in **lexicographic order of the file name**, as
  PyStack3D. Slice numbers must therefore be zero-padded consistently.
* Only page 0 of each file is read; it must be one 2D greyscale plane. The pixel array
  is indexed ``[row, column]``; row 0 is the top of the image.
* Every slice of a channel must have the shape ``(rows, columns)`` and dtype of the first
  slice; otherwise :class:`~stack3d_core.errors.InputError` names the offending file.
* z positions (µm by convention) are the Fibics per-slice ``ZPos`` when every slice has
  one, else parsed from the names with the ``parse`` pattern ``z_pattern`` (PyStack3D's
  resampling ``policy``), and only when *every* name matches.
* Pixel size and instrument fields come from the first slice's tags (Zeiss CZ_SEM,
  Atlas/Fibics XML, FEI) and ``Atlas3D.a3d-setup`` (:mod:`stack3d_io.sem_metadata`);
  the ``pixel_size`` option overrides them.

:class:`TiffFolderWriter` writes the same layout: one classic TIFF per slice, carrying the
input's private tags (code > 32768, e.g. the Fibics XML tag 51023), its compression and its
resolution tags (see :mod:`stack3d_io._tiffutil`). Files are staged in a hidden sibling
folder ``.<name>.partial`` and published by :meth:`TiffFolderWriter.commit`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import parse

from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta, StackReader, StackWriter

from ._tiffutil import (
    as_triple,
    check_complete,
    check_plane,
    compression_code,
    is_tiff_name,
    open_tiff,
    page_extras,
    pixel_size_issues,
    to_native,
    write_tiff,
)
from ._writeutil import commit_folder
from .sem_metadata import fibics_z_from_files, read_page_metadata, stack_fields

__all__ = ["DEFAULT_Z_PATTERN", "TiffFolderReader", "TiffFolderWriter"]

DEFAULT_Z_PATTERN = "slice_{slice_nb}_z={z_coord}um.tif"
"""PyStack3D's default naming policy: slice number and z position (µm) in the file name."""


@attrs.frozen(kw_only=True)
class TiffFolderOptions:
    """Options of :class:`TiffFolderReader` (the ``[input]`` table)."""

    z_pattern: str = attrs.field(
        default=DEFAULT_Z_PATTERN,
        metadata={
            "doc": "parse-library pattern of the slice names; its {z_coord} field is the z "
            "position of the slice (PyStack3D's resampling 'policy'). z positions are known "
            "only when every name matches.",
            "unit": "",
        },
    )
    pixel_size: tuple[float, float, float] | None = attrs.field(
        default=None,
        metadata={
            "doc": "voxel size (x = column spacing, y = row spacing, z = slice spacing); "
            "overrides what the files say. None: the instrument metadata's, else unknown.",
            "unit": "um",
        },
    )
    instrument_metadata: bool = attrs.field(
        default=True,
        metadata={
            "doc": "read the instrument metadata of the first slice (Zeiss CZ_SEM, "
            "Atlas/Fibics XML and Atlas3D.a3d-setup, FEI): pixel size, detector, EHT, ... "
            "(stack3d_io.sem_metadata)",
            "unit": "",
        },
    )
    instrument_z: bool = attrs.field(
        default=True,
        metadata={
            "doc": "when the first slice carries a Fibics z position (ZPos), read it from "
            "every slice (one tag read per slice, about 0.2 ms each) and prefer it to the "
            "names' z",
            "unit": "",
        },
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        issues = pixel_size_issues(self.pixel_size)
        try:
            parse.compile(self.z_pattern)
        except Exception as exc:
            issues.append(f"z_pattern: invalid parse pattern {self.z_pattern!r} ({exc})")
        return issues


@attrs.frozen(kw_only=True)
class TiffFolderWriterOptions:
    """Options of :class:`TiffFolderWriter` (the ``[output]`` table)."""

    compression: str | None = attrs.field(
        default=None,
        metadata={
            "doc": "TIFF compression of the written slices: None keeps each input slice's "
            "compression; 'none' writes uncompressed; or a tifffile name such as 'zlib' "
            "(Adobe deflate), 'deflate', 'lzma', 'zstd' (LZW, PackBits and JPEG need the "
            "imagecodecs package).",
            "unit": "",
        },
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        try:
            compression_code(self.compression)
        except ValueError as exc:
            return [f"compression: {exc}"]
        return []


def _z_positions(names: Sequence[str], pattern: str) -> tuple[float, ...] | None:
    """z of every name from ``pattern``'s ``{z_coord}`` field, or ``None`` if one fails."""
    try:
        compiled = parse.compile(pattern)
    except Exception:
        return None
    out: list[float] = []
    for name in names:
        result = compiled.parse(name)
        if result is None or "z_coord" not in result.named:
            return None
        try:
            out.append(float(result.named["z_coord"]))
        except (TypeError, ValueError):
            return None
    return tuple(out)


def _visible_tiffs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return [e.name for e in it if is_tiff_name(e.name) and e.is_file()]


class TiffFolderReader(StackReader):
    """Reads a PyStack3D project folder: one TIFF per slice, one subfolder per channel.

    ``path`` is the project folder. Channel ``"."`` is ``path`` itself, channel ``"SE2"``
    is ``path / "SE2"``. The instance caches names and metadata in a small dict, which
    pickles with it; files are opened per call.
    """

    name = "tiff_folder"
    description = "a folder of single-page TIFF slices, one subfolder per channel (PyStack3D)"
    Options = TiffFolderOptions

    def __init__(self, path: str | os.PathLike[str], options: Any = None) -> None:
        super().__init__(path, options)
        self._cache: dict[tuple[str, str], Any] = {}

    # -- discovery -------------------------------------------------------------------------
    @classmethod
    def can_read(cls, path: Path) -> bool:
        """A folder holding TIFF files directly or in (non-hidden) subfolders."""
        path = Path(path)
        try:
            if not path.is_dir():
                return False
            if _visible_tiffs(path):
                return True
            return any(
                sub.is_dir() and not sub.name.startswith(".") and _visible_tiffs(sub)
                for sub in path.iterdir()
            )
        except OSError:
            return False

    def channels(self) -> tuple[str, ...]:
        """``(".",)`` if the project folder holds slices itself, else the sorted names of
        its non-hidden subfolders that hold TIFF files."""
        if not self.path.is_dir():
            raise InputError(self.path, "project folder does not exist or is not a folder")
        try:
            if _visible_tiffs(self.path):
                return (".",)
            subs = sorted(
                sub.name
                for sub in self.path.iterdir()
                if sub.is_dir() and not sub.name.startswith(".") and _visible_tiffs(sub)
            )
        except OSError as exc:
            raise InputError(self.path, f"cannot list folder ({exc})") from exc
        if not subs:
            raise InputError(self.path, "no .tif/.tiff slice here nor in any subfolder")
        return tuple(subs)

    # -- contents --------------------------------------------------------------------------
    def folder(self, channel: str) -> Path:
        """The folder holding the slices of ``channel``."""
        if channel in (".", ""):
            return self.path
        if Path(channel).name != channel or channel in ("..",):
            raise InputError(self.path / channel, f"invalid channel name {channel!r}")
        return self.path / channel

    def names(self, channel: str) -> tuple[str, ...]:
        """TIFF file names of ``channel``, sorted lexicographically."""
        key = ("names", channel)
        if key not in self._cache:
            folder = self.folder(channel)
            if not folder.is_dir():
                raise InputError(folder, "channel folder does not exist")
            try:
                names = sorted(_visible_tiffs(folder))
            except OSError as exc:
                raise InputError(folder, f"cannot list folder ({exc})") from exc
            if not names:
                raise InputError(folder, "holds no .tif/.tiff slice")
            self._cache[key] = tuple(names)
        return self._cache[key]

    def file(self, channel: str, index: int) -> Path:
        """Path of slice ``index`` of ``channel``."""
        names = self.names(channel)
        if not 0 <= index < len(names):
            raise IndexError(f"slice index {index} out of range 0..{len(names) - 1}")
        return self.folder(channel) / names[index]

    def meta(self, channel: str) -> StackMeta:
        """n, ``(rows, columns)`` and dtype from page 0 of the first file; pixel size, z
        positions and instrument fields by the rules of :mod:`stack3d_io.sem_metadata`:

        * pixel size (µm): the ``pixel_size`` option, else the instrument metadata of the
          first slice (z: the Atlas slice interval, else NaN), else ``None``;
        * z positions (µm): the Fibics ``ZPos`` of every slice, else the names
          (``z_pattern``), else ``None``; ``instrument["z_source"]`` says which.
        """
        key = ("meta", channel)
        if key not in self._cache:
            names = self.names(channel)
            folder = self.folder(channel)
            first = folder / names[0]
            info = None
            with open_tiff(first) as tif:
                if not tif.pages:
                    raise InputError(first, "TIFF holds no image")
                shape, dtype = check_plane(tif.pages[0], first)
                if self.options.instrument_metadata:
                    dirs = tuple(dict.fromkeys((folder, self.path)))
                    info = read_page_metadata(tif.pages[0], first, shape, dirs,
                                              channel if channel not in (".", "") else None)
            problems: list[str] = []
            instrument_z = None
            if info is not None and info.slice_z and self.options.instrument_z:
                instrument_z = fibics_z_from_files([folder / n for n in names], problems)
            pixel_size, z_positions, instrument = stack_fields(
                as_triple(self.options.pixel_size),
                info,
                instrument_z,
                _z_positions(names, self.options.z_pattern),
                problems,
            )
            self._cache[key] = StackMeta(
                n=len(names),
                shape=shape,
                dtype=dtype,
                pixel_size=pixel_size,
                unit="um",
                z_positions=z_positions,
                instrument=instrument,
            )
        return self._cache[key]

    def _read(
        self, channel: str, index: int, with_extras: bool
    ) -> tuple[np.ndarray, dict[str, Any]]:
        meta = self.meta(channel)
        path = self.file(channel, index)
        first = self.names(channel)[0]
        with open_tiff(path) as tif:
            if not tif.pages:
                raise InputError(path, "TIFF holds no image")
            page = tif.pages[0]
            shape, dtype = check_plane(page, path)
            if shape != meta.shape:
                raise InputError(
                    path,
                    f"slice shape (rows, columns) differs from the first slice of channel "
                    f"{channel!r} ({first}): expected {meta.shape}, got {shape}",
                )
            if dtype != meta.dtype:
                raise InputError(
                    path,
                    f"slice dtype differs from the first slice of channel {channel!r} "
                    f"({first}): expected {meta.dtype}, got {dtype}",
                )
            check_complete(page, path)
            image = to_native(page.asarray())
            extras = page_extras(tif, page) if with_extras else {}
        return image, extras

    def read(self, channel: str, index: int) -> np.ndarray:
        """Pixels of page 0 of slice ``index``, shape ``(rows, columns)``."""
        return self._read(channel, index, with_extras=False)[0]

    def extras(self, channel: str, index: int) -> dict[str, Any]:
        """Private tags, compression and resolution of page 0 (:mod:`._tiffutil`)."""
        path = self.file(channel, index)
        with open_tiff(path) as tif:
            if not tif.pages:
                raise InputError(path, "TIFF holds no image")
            return page_extras(tif, tif.pages[0])

    def read_with_extras(self, channel: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Pixels and extras of slice ``index`` with one file open."""
        return self._read(channel, index, with_extras=True)


def _file_name(name: str) -> str:
    """The file name of a slice name: ``.tif`` appended unless it ends in .tif/.tiff."""
    return name if name.lower().endswith((".tif", ".tiff")) else name + ".tif"


class TiffFolderWriter(StackWriter):
    """Writes one classic TIFF per slice into the folder ``path`` (e.g.
    ``project/process/cropping/SE2``).

    * Staging: slices go to the sibling folder ``path.parent / ".<name>.partial"``
      (created by the constructor, after removing a leftover of a crashed run); each file
      is written as ``<file>.tmp`` and renamed, so concurrent workers writing different
      indices never collide and a half-written file never carries the final name.
    * :meth:`commit` renames an existing ``path`` aside to ``.<name>.old``, renames the
      staging folder to ``path``, moves the entries of the old folder that are not TIFF
      slices (e.g. a step's ``outputs/`` folder) into the new one unless it already has
      that name, then deletes the old folder. :meth:`abort` deletes the staging folder.
    * Slice names not ending in ``.tif``/``.tiff`` get ``.tif`` appended.
    * Per-slice extras carry the input's private tags, compression and resolution; when the
      input had no resolution and ``meta.pixel_size`` is known, the resolution tags are
      written from it (pixels per centimetre). Output bytes depend only on pixels and extras.
    """

    name = "tiff_folder"
    description = "a folder of single-page TIFF slices, carrying private tags and compression"
    Options = TiffFolderWriterOptions
    suffixes = ()

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: StackMeta,
        names: Sequence[str],
        options: Any = None,
    ) -> None:
        super().__init__(path, meta, names, options)
        self.path = Path(os.path.abspath(self.path))
        issues = self.options.validate()
        if issues:
            raise ValueError("; ".join(issues))
        if len(self.names) != meta.n:
            raise ValueError(f"{self.path}: {len(self.names)} slice names for {meta.n} slices")
        files = tuple(_file_name(str(n)) for n in self.names)
        for f in files:
            if f.startswith(".") or Path(f).name != f or os.sep in f or "/" in f:
                raise ValueError(f"{self.path}: invalid slice file name {f!r}")
        if len(set(files)) != len(files):
            raise ValueError(f"{self.path}: slice file names are not unique")
        self.files = files
        self.staging = self.path.parent / f".{self.path.name}.partial"
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)

    @classmethod
    def can_write(cls, path: Path) -> bool:
        """An existing folder or a path without a suffix."""
        path = Path(path)
        return path.is_dir() or (not path.exists() and not path.suffix)

    def write(self, index: int, image: np.ndarray, extras: Mapping[str, Any]) -> None:
        """Write slice ``index`` (shape ``meta.shape``, dtype ``meta.dtype``) to staging."""
        if not 0 <= index < len(self.files):
            raise IndexError(f"slice index {index} out of range 0..{len(self.files) - 1}")
        image = np.asarray(image)
        if tuple(image.shape) != tuple(self.meta.shape):
            raise ValueError(
                f"{self.files[index]}: image shape {tuple(image.shape)} != stack shape "
                f"{tuple(self.meta.shape)} (rows, columns)"
            )
        if image.dtype.name != np.dtype(self.meta.dtype).name:
            raise ValueError(
                f"{self.files[index]}: image dtype {image.dtype.name} != stack dtype "
                f"{self.meta.dtype}"
            )
        if not self.staging.is_dir():
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        write_tiff(
            self.staging / self.files[index],
            image,
            extras,
            compression=self.options.compression,
            pixel_size=self.meta.pixel_size,
            unit=self.meta.unit,
        )

    def commit(self) -> None:
        """Publish the staged folder at :attr:`path` (see the class doc)."""
        commit_folder(self.staging, self.path, self.files, is_tiff_name)

    def abort(self) -> None:
        """Remove the staging folder; :attr:`path` is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
