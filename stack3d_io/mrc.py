"""A whole stack in one MRC2014 file (``.mrc``), read and written with ``mrcfile``.

* The file is one volume of ``nz`` slices of ``ny`` rows and ``nx`` columns: slice ``i``
  of the stack is ``data[i]``, indexed ``[row, column]`` as the other formats. One channel,
  ``"."``; slice names are ``slice_0000.tif`` ... (MRC stores none).
* The voxel size is stored in Ångström (``cella / (mx, my, mz)``); stack3d's pixel size
  is in µm: 1 µm = 10⁴ Å. The header holds float32 values; the reader returns the
  shortest decimal consistent with them, so the written value comes back exactly.
* Modes written: 1 (int16), 2 (float32), 6 (uint16). uint8 is widened to mode 6, int8 to
  mode 1 and float16 to mode 2, losslessly; **mode 0 is never written** (MRC2014 mode 0
  is signed, so unsigned bytes above 127 would come back negative elsewhere). The stack's
  dtype is recorded in header label ``stack3d dtype=uint8 state=complete``, so this
  reader returns uint8 again (option ``restore_dtype``); other software sees uint16.
* Other dtypes are refused, or cast to float32 with ``dtype_policy = "float32"``.
* z positions are not stored (MRC has no per-slice positions): the reader returns
  ``None``; the nominal z spacing is the z voxel size.

Writing (see :class:`MrcWriter`): the file is created at its final size in the staging
folder by the constructor, every worker writes its slices in place at their byte offsets,
and :meth:`MrcWriter.commit` fills the header statistics and renames the file into place.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta, StackReader, StackWriter

from ._mrcutil import (
    HEADER_BYTES,
    MRC_SUFFIXES,
    MrcInfo,
    combine_stats,
    format_label,
    inspect_mrc,
    open_mrc,
    restore,
    slice_stats,
    storage_for,
)
from ._tiffutil import as_triple, pixel_size_issues, to_native
from ._writeutil import check_slice, default_names, publish, require, staging_dir, start_writer, to_um, um_to

__all__ = ["MrcReader", "MrcWriter"]

_STATS_ROW_BYTES = 40  # count, min, max, mean, M2 of one slice: 5 little-endian float64


def _pwrite(path: Path, data: Any, offset: int) -> None:
    """Write ``data`` (bytes-like) at ``offset`` of the existing file ``path``."""
    view = memoryview(data).cast("B")
    fd = os.open(path, os.O_WRONLY)
    try:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    finally:
        os.close(fd)


@attrs.frozen(kw_only=True)
class MrcReaderOptions:
    """Options of :class:`MrcReader` (the ``[input]`` table)."""

    pixel_size: tuple[float, float, float] | None = attrs.field(
        default=None,
        metadata={
            "doc": "voxel size (x = column spacing, y = row spacing, z = slice spacing); "
            "overrides the header's. None: from the header (unknown when it is zero).",
            "unit": "um",
        },
    )
    mode0: Literal["auto", "signed", "unsigned"] = attrs.field(
        default="auto",
        metadata={
            "doc": "how mode-0 bytes are read: 'signed' (int8, MRC2014), 'unsigned' (uint8, "
            "e.g. files from Shtengel's pipeline), or 'auto': unsigned only when the IMOD "
            "stamp says so, else signed.",
            "unit": "",
        },
    )
    restore_dtype: bool = attrs.field(
        default=True,
        metadata={
            "doc": "return the stack's original dtype recorded by stack3d in the header label "
            "(uint8 written as mode 6 comes back as uint8); false: the dtype of the MRC mode.",
            "unit": "",
        },
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        return pixel_size_issues(self.pixel_size)


@attrs.frozen(kw_only=True)
class MrcWriterOptions:
    """Options of :class:`MrcWriter` (the ``[output]`` table)."""

    dtype_policy: Literal["exact", "float32"] = attrs.field(
        default="exact",
        metadata={
            "doc": "'exact': write int16 (mode 1), uint16 (mode 6), float32 (mode 2), and widen "
            "uint8 -> mode 6, int8 -> mode 1, float16 -> mode 2 losslessly; refuse other dtypes. "
            "'float32': also cast any other integer or float dtype to float32 (lossy).",
            "unit": "",
        },
    )
    header_stats: bool = attrs.field(
        default=True,
        metadata={
            "doc": "fill dmin, dmax, dmean, rms from per-slice sums gathered by the workers "
            "(no extra pass over the file); false leaves them 'not computed' (MRC2014: "
            "dmax < dmin, dmean < dmin, rms < 0).",
            "unit": "",
        },
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        if self.dtype_policy not in ("exact", "float32"):
            return [f"dtype_policy: expected 'exact' or 'float32', got {self.dtype_policy!r}"]
        return []


class MrcReader(StackReader):
    """Reads one MRC file (modes 0, 1, 2, 6, 12) as a stack of ``nz`` slices; channel ``"."``.

    Slices are read through a memory map opened per call. The header facts are cached in
    the instance (a small picklable record).
    """

    name = "mrc"
    description = "one MRC2014 volume (.mrc), voxel size in Angstrom; channel '.'"
    Options = MrcReaderOptions

    def __init__(self, path: str | os.PathLike[str], options: Any = None) -> None:
        super().__init__(path, options)
        self._info: MrcInfo | None = None

    @classmethod
    def can_read(cls, path: Path) -> bool:
        """A file named ``*.mrc`` (or .mrcs, .map, .rec, .st, .ali) with the ``MAP `` ID."""
        path = Path(path)
        if not path.name.lower().endswith(MRC_SUFFIXES):
            return False
        try:
            with open(path, "rb") as fh:
                return fh.read(212)[208:212] == b"MAP "
        except OSError:
            return False

    def _check_channel(self, channel: str) -> None:
        if channel not in (".", ""):
            raise InputError(self.path, f"unknown channel {channel!r}: an MRC file has only '.'")

    def info(self) -> MrcInfo:
        """The checked header facts (cached)."""
        if self._info is None:
            self._info = inspect_mrc(self.path, self.options.mode0, self.options.restore_dtype)
        return self._info

    def channels(self) -> tuple[str, ...]:
        """``(".",)``."""
        self.info()
        return (".",)

    def names(self, channel: str) -> tuple[str, ...]:
        """``slice_0000.tif`` ... (MRC stores no slice names)."""
        self._check_channel(channel)
        return default_names(self.info().n)

    def meta(self, channel: str) -> StackMeta:
        """n, shape, dtype and voxel size (Å in the header, µm here); no z positions."""
        self._check_channel(channel)
        info = self.info()
        pixel = as_triple(self.options.pixel_size)
        if pixel is None and info.voxel_size_a is not None:
            pixel = as_triple([to_um(v, "angstrom") if v > 0 else math.nan for v in info.voxel_size_a])
        return StackMeta(
            n=info.n,
            shape=info.shape,
            dtype=info.dtype,
            pixel_size=pixel,
            unit="um",
            z_positions=None,
        )

    def describe(self, channel: str, index: int) -> str:
        """``<file> [slice <index>]``."""
        return f"{self.path} [slice {index}]"

    def read(self, channel: str, index: int) -> np.ndarray:
        """Slice ``index`` (``data[index]`` of the volume), shape ``(rows, columns)``."""
        self._check_channel(channel)
        info = self.info()
        if not 0 <= index < info.n:
            raise IndexError(f"slice index {index} out of range 0..{info.n - 1}")
        with open_mrc(self.path) as mrc:
            data = mrc.data
            shape = (1, *data.shape) if data.ndim == 2 else tuple(data.shape)
            if shape != (info.n, *info.shape):
                raise InputError(self.path, f"file changed while reading: shape {shape}, was {(info.n, *info.shape)}")
            image = np.array(data[index] if data.ndim == 3 else data)
        image = to_native(image)
        if info.file_dtype == "uint8" and image.dtype == np.int8:
            image = image.view(np.uint8)
        if info.dtype != info.file_dtype:
            image = restore(self.path, index, image, info.dtype)
        return image


class MrcWriter(StackWriter):
    """Writes the stack as one MRC2014 file at ``path`` (e.g. ``result.mrc``).

    * ``__init__`` (driver): creates ``.<name>.partial/<name>`` at its final size with
      ``mrcfile.new_mmap`` (a sparse file), sets the voxel size (Å), the mode and the label
      ``stack3d dtype=... state=staged``, notes where the voxels start (1024 + extended
      header), and creates ``slice_stats.f64`` (5 float64 zeros per slice).
    * :meth:`write` (any process, disjoint indices): writes the slice's bytes at their
      offset with one ``os.pwrite``, then its count, min, max, mean and sum of squared
      deviations at its row of ``slice_stats.f64``. Workers never touch the header (an
      ``mrcfile.mmap(mode="r+")`` per slice would rewrite it on close and ``msync`` the
      map: about half the time of a write), and only disjoint byte ranges are written.
    * :meth:`commit` (driver): checks that every slice was written, sets dmin/dmax/dmean/rms
      from the per-slice rows (or marks them not computed), sets ``state=complete``,
      re-reads and checks the header, then renames the file to ``path`` (atomic when it
      replaces a file). :meth:`abort` removes the staging folder.
    """

    name = "mrc"
    description = "one MRC2014 volume (.mrc): int16, uint16 (and uint8 widened), float32; voxel size in Angstrom"
    Options = MrcWriterOptions
    suffixes = (".mrc", ".mrcs", ".map", ".rec")

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: StackMeta,
        names: Sequence[str],
        options: Any = None,
    ) -> None:
        super().__init__(path, meta, names, options)
        start_writer(self)
        try:
            self.mode, self.stored_dtype, self.label_dtype = storage_for(meta.dtype, self.options.dtype_policy)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None
        self.voxel_size_a: tuple[float, float, float] | None = None
        if meta.pixel_size is not None:
            try:
                um = [to_um(v, meta.unit) for v in meta.pixel_size]
            except ValueError as exc:
                raise ValueError(f"{self.path}: pixel size: {exc}") from None
            # an unknown size (NaN, e.g. no slice spacing in the .dat headers) is stored as 0 Å:
            # MRC has no "unknown", and cella = 0 means "not set"; the reader maps it back
            self.voxel_size_a = tuple(um_to(v, "angstrom") if math.isfinite(v) and v > 0 else 0.0 for v in um)
        mrcfile = require("mrcfile", "MRC")
        self.staging = staging_dir(self.path)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.file = self.staging / self.path.name
        self.stats_file = self.staging / "slice_stats.f64"
        shape = (meta.n, *meta.shape)
        with mrcfile.new_mmap(self.file, shape=shape, mrc_mode=self.mode, overwrite=True) as mrc:
            mrc.header.label[:] = b""
            mrc.header.nlabl = 0
            mrc.add_label(format_label(self.label_dtype, "staged"))
            if self.voxel_size_a is not None:
                mrc.voxel_size = self.voxel_size_a
            mrc.set_volume()
            mrc.reset_header_stats()
            self.data_offset = int(mrc.header.nbytes) + int(mrc.header.nsymbt)
            self.file_dtype = mrc.data.dtype.str  # byte order included (native for new files)
        self.slice_bytes = meta.shape[0] * meta.shape[1] * np.dtype(self.stored_dtype).itemsize
        with open(self.stats_file, "wb") as fh:
            fh.truncate(meta.n * _STATS_ROW_BYTES)

    def write(self, index: int, image: np.ndarray, extras: Mapping[str, Any]) -> None:
        """Write slice ``index`` (shape ``meta.shape``, dtype ``meta.dtype``) in place."""
        image = check_slice(self.path, self.meta, index, image)
        if not self.file.is_file():
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        stored = np.ascontiguousarray(image, dtype=np.dtype(self.file_dtype))
        _pwrite(self.file, stored, self.data_offset + index * self.slice_bytes)
        if self.options.header_stats:
            row = slice_stats(stored)
        else:
            row = (float(stored.size), np.nan, np.nan, np.nan, np.nan)
        _pwrite(self.stats_file, np.asarray(row, dtype="<f8").tobytes(), index * _STATS_ROW_BYTES)

    def commit(self) -> None:
        """Fill the header statistics, check the header and publish the file at :attr:`path`."""
        if not self.file.is_file():
            raise RuntimeError(f"{self.path}: nothing staged (already committed or aborted?)")
        rows = np.fromfile(self.stats_file, dtype="<f8").reshape(self.meta.n, 5)
        missing = np.flatnonzero(rows[:, 0] == 0)
        if missing.size:
            raise RuntimeError(
                f"{self.path}: {missing.size} of {self.meta.n} slices were never written (first: {missing[0]})"
            )
        stats = combine_stats(rows) if self.options.header_stats else None
        mrcfile = require("mrcfile", "MRC")
        with mrcfile.mmap(self.file, mode="r+", permissive=False) as mrc:
            if stats is None:
                mrc.reset_header_stats()
            else:
                dmin, dmax, dmean, rms = (np.float32(v) for v in stats)
                mrc.header.dmin, mrc.header.dmax, mrc.header.dmean, mrc.header.rms = dmin, dmax, dmean, rms
            mrc.header.label[0] = format_label(self.label_dtype, "complete").encode("ascii")
        self._check_header()
        publish(self.file, self.path)
        shutil.rmtree(self.staging, ignore_errors=True)

    def _check_header(self) -> None:
        """Re-read the staged header: shape, mode, voxel size, label and file size."""
        info = inspect_mrc(self.file, "signed", restore_dtype=True)
        expected = HEADER_BYTES + self.meta.n * self.meta.shape[0] * self.meta.shape[1] * np.dtype(self.stored_dtype).itemsize
        problems = []
        if (info.n, info.shape, info.mode) != (self.meta.n, tuple(self.meta.shape), self.mode):
            problems.append(f"shape/mode {(info.n, info.shape, info.mode)}")
        if info.dtype != self.label_dtype:
            problems.append(f"dtype {info.dtype}")
        if self.voxel_size_a is not None and (
            info.voxel_size_a is None or not np.allclose(info.voxel_size_a, self.voxel_size_a, rtol=1e-6, atol=0)
        ):
            problems.append(f"voxel size {info.voxel_size_a} != {self.voxel_size_a} A")
        if os.path.getsize(self.file) != expected:
            problems.append(f"file size {os.path.getsize(self.file)} != {expected}")
        if problems:
            raise RuntimeError(f"{self.path}: staged MRC header is wrong: {'; '.join(problems)}")

    def abort(self) -> None:
        """Remove the staging folder; :attr:`path` is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
