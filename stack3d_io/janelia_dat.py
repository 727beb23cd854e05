"""Janelia FIB-SEM ``.dat`` files ("Jeiss" format, FileVersion 1–9): reader and writer.

Layout read by :class:`DatReader` (``path`` is a folder of ``.dat`` files, one slice per
file, or a single ``.dat`` file)::

    acq/Merlin-6281_19-08-09_120426_0-0-0.dat      1024-byte header + interleaved pixels
    acq/Merlin-6281_19-08-09_120503_0-0-0.dat      ...

* Slices are the visible ``*.dat`` files (suffix case-insensitive), sorted by the
  acquisition time in the name (``<Name>_YY-MM-DD_HHMMSS_i-j-k.dat``), then by name; files
  without such a name come last. ``i-j-k`` is the tile index within a layer: a folder
  holding several tiles is refused unless the ``tile`` option picks one.
* Channels are the detector inputs stored in the files, named after the detector letter:
  ``"A"`` (AI1), ``"B"`` (AI2), ``"C"``, ``"D"``; the detector names (e.g. ``"InLens"``) are
  in ``meta.instrument``. Slice names are the file names without ``.dat`` (the engine's
  TIFF folders then hold ``<name>.tif``).
* Pixels are the raw samples (int16 or uint8, indexed ``[row, column]``, row 0 first in the
  file) unless ``scaled`` asks for the reference reader's units (float32; see
  :mod:`stack3d_io._dat_files`). Files are memory-mapped per read and only the asked
  channel is copied.
* Every slice must have the first slice's resolution, channels, sample type and stored
  oversamples; a file shorter than its header says is an error naming the missing bytes
  (``fill_truncated`` reads it with zeros and a warning). ``FileLength`` and ``SWdate`` are
  not trusted.
* ``pixel_size`` is ``PixelSize`` (nm) in µm for x and y; the header has no slice spacing,
  so z is the ``z_step`` option or NaN, and z positions are unknown (``None``).

:class:`DatWriter` (in :mod:`stack3d_io._dat_writer`) writes one single-channel ``.dat``
per slice; :func:`write_dat` writes one multi-channel file (tests, synthetic data).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta, StackReader

from ._dat_files import parse_dat_name, read_channel, scale, scaling_coefficients
from ._dat_header import DETECTORS, DatLayout, has_magic, layout_of, read_header
from ._dat_writer import DatWriter, write_dat

__all__ = ["DatReader", "DatReaderOptions", "DatWriter", "write_dat"]

_TILE = re.compile(r"^\d+-\d+-\d+$")


@attrs.frozen(kw_only=True)
class DatReaderOptions:
    """Options of :class:`DatReader` (the ``[input]`` table)."""

    tile: str | None = attrs.field(
        default=None,
        metadata={
            "doc": "tile index 'i-j-k' (the end of the file names) to read when the folder "
            "holds several tiles per slice; None: the folder must hold one tile only.",
            "unit": "",
        },
    )
    scaled: bool = attrs.field(
        default=False,
        metadata={
            "doc": "false: raw samples (int16 or uint8, as stored); true: float32 in the "
            "reference reader's units (detector volts for FileVersion 1-6, (raw - k1) * k2 "
            "for 7-9), from the header's Scaling coefficients.",
            "unit": "",
        },
    )
    fill_truncated: bool = attrs.field(
        default=False,
        metadata={
            "doc": "read a file shorter than its header says with the missing pixels set "
            "to 0 (and a warning) instead of refusing it.",
            "unit": "",
        },
    )
    oversample: int | None = attrs.field(
        default=None,
        metadata={
            "doc": "for files that store every oversample (SaveOversamples): None averages "
            "them (float32), k keeps oversample k (stored dtype). No effect otherwise.",
            "unit": "",
        },
    )
    z_step: float | None = attrs.field(
        default=None,
        metadata={
            "doc": "slice spacing (the header has none); None: unknown (NaN).",
            "unit": "um",
        },
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        issues = []
        if self.tile is not None and not _TILE.match(self.tile):
            issues.append(f"tile: expected 'i-j-k' such as '0-0-0', got {self.tile!r}")
        if self.oversample is not None and self.oversample < 0:
            issues.append(f"oversample: must be >= 0, got {self.oversample}")
        if self.z_step is not None and not (math.isfinite(self.z_step) and self.z_step > 0):
            issues.append(f"z_step: must be > 0, got {self.z_step}")
        return issues


@attrs.frozen
class _Index:
    """The slices found at the reader's path (picklable; cached in the reader)."""

    folder: Path
    files: tuple[str, ...]
    stamps: tuple[datetime | None, ...]
    tile: str | None
    first_fields: Mapping[str, Any]
    first_header: bytes
    layout: DatLayout


def _is_dat_name(name: str) -> bool:
    return name.lower().endswith(".dat") and not name.startswith(".")


def _dat_files(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return [e.name for e in it if _is_dat_name(e.name) and e.is_file()]


def _sort_key(name: str) -> tuple[int, datetime, str]:
    stamp = parse_dat_name(name)[0]
    return (0, stamp, name) if stamp is not None else (1, datetime.min, name)


class DatReader(StackReader):
    """Reads Janelia FIB-SEM ``.dat`` files: a folder of slices or one file (module doc)."""

    name = "dat"
    description = "Janelia FIB-SEM .dat files (Jeiss, FileVersion 1-9); channels A, B, ..."
    Options = DatReaderOptions

    def __init__(self, path: str | os.PathLike[str], options: Any = None) -> None:
        super().__init__(path, options)
        issues = self.options.validate()
        if issues:
            raise ValueError("; ".join(issues))
        self._cache: dict[Any, Any] = {}

    # -- discovery -------------------------------------------------------------------------
    @classmethod
    def can_read(cls, path: Path) -> bool:
        """A file starting with the magic number 3555587570, or a folder whose first
        ``.dat`` file does."""
        path = Path(path)
        try:
            if path.is_file():
                return has_magic(path)
            if path.is_dir():
                names = sorted(_dat_files(path))
                return bool(names) and has_magic(path / names[0])
        except OSError:
            return False
        return False

    def _index(self) -> _Index:
        if "index" in self._cache:
            return self._cache["index"]
        path = self.path
        if path.is_file():
            folder, names = path.parent, [path.name]
        elif path.is_dir():
            folder = path
            try:
                names = _dat_files(path)
            except OSError as exc:
                raise InputError(path, f"cannot list folder ({exc})") from exc
            if not names:
                raise InputError(path, "holds no .dat file")
            names = self._select_tile(names)
        else:
            raise InputError(path, "does not exist")
        names.sort(key=_sort_key)
        parsed = [parse_dat_name(n) for n in names]
        fields, header, _ = read_header(folder / names[0])
        index = _Index(
            folder=folder,
            files=tuple(names),
            stamps=tuple(p[0] for p in parsed),
            tile=parsed[0][1],
            first_fields=fields,
            first_header=header,
            layout=layout_of(fields, folder / names[0]),
        )
        self._cache["index"] = index
        return index

    def _select_tile(self, names: list[str]) -> list[str]:
        tiles = {n: parse_dat_name(n)[1] for n in names}
        found = sorted({t or "(none)" for t in tiles.values()})
        wanted = self.options.tile
        if wanted is not None:
            kept = [n for n in names if tiles[n] == wanted]
            if not kept:
                raise InputError(self.path, f"no .dat file of tile {wanted!r}; tiles here: {', '.join(found)}")
            return kept
        if len(found) > 1:
            raise InputError(
                self.path,
                f"holds several tiles per slice ({', '.join(found)}); pick one with the "
                f'reader option tile (e.g. [input] tile = "{found[0]}")',
            )
        return names

    # -- contents --------------------------------------------------------------------------
    def channels(self) -> tuple[str, ...]:
        """Detector letters of the stored inputs, e.g. ``("A", "B")``."""
        return self._index().layout.channels

    def _check_channel(self, channel: str) -> _Index:
        index = self._index()
        if channel not in index.layout.channels:
            raise InputError(
                self.path,
                f"unknown channel {channel!r}: the .dat files hold {list(index.layout.channels)}",
            )
        return index

    def names(self, channel: str) -> tuple[str, ...]:
        """File names without ``.dat``, in stack order."""
        index = self._check_channel(channel)
        return tuple(n[:-4] for n in index.files)

    def file(self, index: int) -> Path:
        """Path of slice ``index``."""
        idx = self._index()
        if not 0 <= index < len(idx.files):
            raise IndexError(f"slice index {index} out of range 0..{len(idx.files) - 1}")
        return idx.folder / idx.files[index]

    def describe(self, channel: str, index: int) -> str:
        """The ``.dat`` file of slice ``index``."""
        try:
            return str(self.file(index))
        except (IndexError, InputError):
            return f"{self.path} #{index}"

    def _dtype(self, layout: DatLayout) -> str:
        if self.options.scaled or (layout.oversamples > 1 and self.options.oversample is None):
            return "float32"
        return layout.native_dtype

    def meta(self, channel: str) -> StackMeta:
        """n, ``(YResolution, XResolution)``, dtype and instrument fields of the first file;
        pixel size from ``PixelSize`` (nm -> µm); z from the ``z_step`` option."""
        key = ("meta", channel)
        if key not in self._cache:
            index = self._check_channel(channel)
            fields = index.first_fields
            pixel_nm = float(fields.get("PixelSize", 0.0))
            pixel_size = None
            if math.isfinite(pixel_nm) and pixel_nm > 0:
                z = self.options.z_step if self.options.z_step is not None else float("nan")
                pixel_size = (pixel_nm / 1000.0, pixel_nm / 1000.0, z)
            self._cache[key] = StackMeta(
                n=len(index.files),
                shape=index.layout.shape,
                dtype=self._dtype(index.layout),
                pixel_size=pixel_size,
                unit="um",
                z_positions=None,
                instrument=_instrument(index, channel),
            )
        return self._cache[key]

    def _read(self, channel: str, index: int) -> tuple[np.ndarray, bytes]:
        idx = self._check_channel(channel)
        path = self.file(index)
        fields, header, size = read_header(path)
        layout = layout_of(fields, path)
        first = idx.layout
        for what, mine, theirs in (
            ("(rows, columns)", layout.shape, first.shape),
            ("channels", layout.channels, first.channels),
            ("sample type", layout.native_dtype, first.native_dtype),
            ("stored oversamples", layout.oversamples, first.oversamples),
        ):
            if mine != theirs:
                raise InputError(
                    path,
                    f"{what} differ from the first slice ({idx.files[0]}): expected {theirs}, got {mine}",
                )
        image = read_channel(
            path,
            layout,
            channel,
            file_size=size,
            fill_truncated=self.options.fill_truncated,
            oversample=self.options.oversample,
        )
        if self.options.scaled:
            try:
                image = scale(image, fields, layout, channel)
            except ValueError as exc:
                raise InputError(path, f"cannot scale channel {channel!r}: {exc}") from exc
        return image, header

    def read(self, channel: str, index: int) -> np.ndarray:
        """Pixels of ``channel`` in slice ``index``, shape ``(rows, columns)``."""
        return self._read(channel, index)[0]

    def extras(self, channel: str, index: int) -> dict[str, Any]:
        """``{"dat_header": the 1024 header bytes, "dat_channel": channel}``, which
        :class:`DatWriter` carries into the files it writes."""
        self._check_channel(channel)
        _, header, _ = read_header(self.file(index))
        return {"dat_header": header, "dat_channel": channel}

    def read_with_extras(self, channel: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Pixels and extras of slice ``index`` with one header read."""
        image, header = self._read(channel, index)
        return image, {"dat_header": header, "dat_channel": channel}


def _instrument(index: _Index, channel: str) -> dict[str, Any]:
    """``meta.instrument`` of ``channel`` from the first file's header."""
    fields = index.first_fields
    version = int(fields["FileVersion"])
    detectors = {d: fields.get(f"Det{d}", "") for d in index.layout.channels}
    sample_id = fields.get("SampleID")
    if sample_id is None:  # before v9: the text before the first comma of Notes
        sample_id = str(fields.get("Notes", "")).split(",")[0].strip()
    stamps = [s for s in index.stamps if s is not None]
    out: dict[str, Any] = {
        "format": "Janelia FIB-SEM .dat",
        "file_version": version,
        "machine_id": fields.get("MachineID"),
        "sample_id": sample_id,
        "detector": detectors.get(channel, ""),
        "detector_input": f"AI{DETECTORS.index(channel) + 1}",
        "detectors": detectors,
        "dat_channel": channel,
        "eht_kv": fields.get("EHT"),
        "beam_current_a": fields.get("SEMCurr"),
        "scan_rate_hz": fields.get("ScanRate"),
        "dwell_time_s": 1.0 / fields["ScanRate"] if fields.get("ScanRate") else None,
        "oversampling": fields.get("Oversampling"),
        "working_distance_mm": fields.get("WD"),
        "pixel_size_nm": fields.get("PixelSize"),
        "eight_bit": bool(fields.get("EightBit")),
        "scaling": list(_coefficients(fields, index.layout, channel)),
        "tile": index.tile,
        "timestamp": stamps[0].isoformat() if stamps else None,
        "timestamp_last": stamps[-1].isoformat() if stamps else None,
        "sw_date": fields.get("SWdate"),
        "notes": fields.get("Notes"),
        "dat_header": dict(fields),
    }
    return out


def _coefficients(fields: Mapping[str, Any], layout: DatLayout, channel: str) -> tuple[float, ...]:
    try:
        return scaling_coefficients(fields, layout, channel)
    except ValueError:
        return ()
