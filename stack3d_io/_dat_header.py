"""Decoding and encoding the 1024-byte header of Janelia FIB-SEM ``.dat`` files.

* :func:`decode_header` turns the header bytes into a dict ``{field name: value}`` following
  :data:`~stack3d_io._dat_fields.FIELDS` for the file's FileVersion: integers as ``int``,
  floats as ``float``, strings as ``str`` (Latin-1, trailing NULs removed, so that encoding
  restores the bytes), ``Scaling`` as a list of rows of 4 floats.
* :func:`encode_header` is the inverse. Given the original bytes as ``base`` it rewrites only
  the fields present in the dict, so every byte a field does not cover is kept.
* :class:`DatLayout` is what the payload looks like (rows, columns, stored channels, sample
  type, stored oversamples), checked against the header's own rules; :func:`read_header`
  reads and checks the header of a file, raising :class:`~stack3d_core.errors.InputError`.

``FileLength`` and ``SWdate`` are decoded but never used: the payload size is computed from
the resolution, channel count, sample type and oversamples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from stack3d_core.errors import InputError

from ._dat_fields import CHAN_NUM, HeaderField, field_count, fields_for, known_names

__all__ = [
    "DETECTORS",
    "HEADER_SIZE",
    "MAGIC",
    "VERSIONS",
    "DatLayout",
    "decode_header",
    "encode_header",
    "layout_of",
    "read_header",
]

MAGIC = 3555587570
"""``FileMagicNum`` of every ``.dat`` file (``0xD3EDF5F2``, big-endian at offset 0)."""

HEADER_SIZE = 1024
"""Bytes before the pixel payload."""

VERSIONS = tuple(range(1, 10))
"""FileVersions this module knows."""

DETECTORS = ("A", "B", "C", "D")
"""Channel names of analogue inputs AI1..AI4 (detector A = AI1, ...)."""


def _magic_and_version(buf: bytes) -> tuple[int, int]:
    magic = int.from_bytes(buf[0:4], "big")
    version = int.from_bytes(buf[4:6], "big")
    return magic, version


def _chan_num(buf: bytes) -> int:
    return buf[32]


def decode_header(buf: bytes, path: str | os.PathLike[str] = "<bytes>") -> dict[str, Any]:
    """The fields of a 1024-byte header, per its FileVersion (see the module doc).

    :raises InputError: too short, wrong magic number, unknown version, or a Scaling block
        that would run into the resolution fields.
    """
    check_header_bytes(buf, path)
    version = _magic_and_version(buf)[1]
    chan_num = _chan_num(buf)
    out: dict[str, Any] = {}
    for field in fields_for(version):
        out[field.name] = _decode_field(buf, field, chan_num)
    return out


def check_header_bytes(buf: bytes, path: str | os.PathLike[str]) -> None:
    """Length, magic number, version and Scaling size of a header (InputError naming ``path``)."""
    if len(buf) < HEADER_SIZE:
        raise InputError(
            Path(path),
            f"too short for a .dat header: {len(buf)} bytes, {HEADER_SIZE - len(buf)} bytes "
            f"missing of the {HEADER_SIZE}-byte header",
        )
    magic, version = _magic_and_version(buf)
    if magic != MAGIC:
        raise InputError(
            Path(path),
            f"not a Janelia FIB-SEM .dat file: magic number {magic} (0x{magic:08X}), expected {MAGIC} (0x{MAGIC:08X})",
        )
    if version not in VERSIONS:
        raise InputError(
            Path(path),
            f"unsupported .dat FileVersion {version} (known: {VERSIONS[0]}..{VERSIONS[-1]})",
        )
    scaling = next(f for f in fields_for(version) if f.name == "Scaling")
    end = scaling.offset + scaling.nbytes(_chan_num(buf))
    if end > 100:
        raise InputError(
            Path(path),
            f"ChanNum {_chan_num(buf)} is too large for FileVersion {version}: its Scaling block "
            f"would end at byte {end}, past the resolution fields at byte 100",
        )


def _decode_field(buf: bytes, field: HeaderField, chan_num: int) -> Any:
    dtype = np.dtype(field.dtype)
    if dtype.kind == "S":
        raw = bytes(buf[field.offset : field.offset + dtype.itemsize])
        return raw.rstrip(b"\0").decode("latin-1")
    count = field_count(field, chan_num)
    values = np.frombuffer(buf, dtype=dtype, count=count, offset=field.offset)
    if dtype.kind == "f" and dtype.itemsize == 4:
        # shortest decimal that maps back to the same float32: 0.9, not 0.8999999761581421
        items: list[Any] = [float(str(v)) for v in values]
    else:
        items = values.tolist()
    if not field.shape:
        return items[0]
    rows, cols = field.resolved_shape(chan_num)
    return [items[r * cols : (r + 1) * cols] for r in range(rows)]


def encode_header(
    fields: Mapping[str, Any],
    base: bytes | None = None,
    version: int | None = None,
) -> bytes:
    """The 1024 header bytes of ``fields`` (names of :data:`~stack3d_io._dat_fields.FIELDS`).

    :param fields: values by field name. Fields left out keep the bytes of ``base``.
        ``FileMagicNum`` defaults to :data:`MAGIC`.
    :param base: 1024 bytes to start from (e.g. the original header, so that bytes no field
        covers survive); zeros when ``None``.
    :param version: the FileVersion to lay the fields out for; default
        ``fields["FileVersion"]``, else the version in ``base``, else 9.
    :raises ValueError: unknown field name, field not in that version, value out of range,
        string too long, or a Scaling array of the wrong shape.
    """
    buf = bytearray(base if base is not None else bytes(HEADER_SIZE))
    if len(buf) != HEADER_SIZE:
        raise ValueError(f"base header must be {HEADER_SIZE} bytes, got {len(buf)}")
    if version is None:
        version = fields.get("FileVersion")
    if version is None:
        version = _magic_and_version(bytes(buf))[1] if base is not None else 9
    version = int(version)
    if version not in VERSIONS:
        raise ValueError(f"unsupported .dat FileVersion {version} (known: 1..9)")
    unknown = sorted(set(fields) - known_names())
    if unknown:
        raise ValueError(f"unknown .dat header fields: {unknown}")
    table = {f.name: f for f in fields_for(version)}
    absent = sorted(set(fields) - set(table))
    if absent:
        raise ValueError(f"fields {absent} do not exist in FileVersion {version}")
    values = {"FileMagicNum": MAGIC, **fields, "FileVersion": version}
    # ChanNum first: it sets the shape of the v1-6 Scaling block
    if "ChanNum" in values:
        _encode_field(buf, table["ChanNum"], values["ChanNum"], 0)
    chan_num = buf[32]
    for name, value in values.items():
        _encode_field(buf, table[name], value, chan_num)
    return bytes(buf)


def _encode_field(buf: bytearray, field: HeaderField, value: Any, chan_num: int) -> None:
    dtype = np.dtype(field.dtype)
    if dtype.kind == "S":
        data = value if isinstance(value, bytes) else str(value).encode("latin-1")
        if len(data) > dtype.itemsize:
            raise ValueError(f"{field.name}: {len(data)} bytes do not fit its {dtype.itemsize}-byte field")
        buf[field.offset : field.offset + dtype.itemsize] = data.ljust(dtype.itemsize, b"\0")
        return
    shape = field.resolved_shape(chan_num)
    try:
        if dtype.kind in "iu":
            ints = np.asarray(value)
            if ints.dtype.kind not in "iub" or not np.all(
                (ints >= np.iinfo(dtype).min) & (ints <= np.iinfo(dtype).max)
            ):
                raise ValueError(f"{value!r} is not an integer in {dtype.name}'s range")
            array = ints.astype(dtype)
        else:
            array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{field.name}: {exc}") from exc
    if array.shape != shape:
        if field.shape and CHAN_NUM in field.shape:
            raise ValueError(f"{field.name}: expected shape {shape} (ChanNum rows), got {array.shape}")
        raise ValueError(f"{field.name}: expected shape {shape}, got {array.shape}")
    data = array.tobytes()
    buf[field.offset : field.offset + len(data)] = data


@attrs.frozen
class DatLayout:
    """The pixel payload described by a header.

    :param version: FileVersion.
    :param rows: ``YResolution``. :param cols: ``XResolution``.
    :param channels: names of the stored channels in payload order (``"A"`` = AI1 ...).
    :param sample: numpy dtype of one stored sample, ``">i2"`` or ``"u1"``.
    :param oversamples: samples stored per pixel and channel (1 unless ``SaveOversamples``).
    """

    version: int
    rows: int
    cols: int
    channels: tuple[str, ...]
    sample: str
    oversamples: int = 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self.rows, self.cols)

    @property
    def payload_shape(self) -> tuple[int, ...]:
        """C-order shape of the payload: ``(Y, X, C)`` or ``(Y, X, oversamples, C)``."""
        if self.oversamples > 1:
            return (self.rows, self.cols, self.oversamples, len(self.channels))
        return (self.rows, self.cols, len(self.channels))

    @property
    def payload_bytes(self) -> int:
        """Bytes of pixel data after the header."""
        return int(np.prod(self.payload_shape)) * np.dtype(self.sample).itemsize

    @property
    def native_dtype(self) -> str:
        """Dtype name of one channel as returned by a raw read: ``int16`` or ``uint8``."""
        return np.dtype(self.sample).newbyteorder("=").name


def layout_of(fields: Mapping[str, Any], path: str | os.PathLike[str]) -> DatLayout:
    """The payload layout of decoded header ``fields`` (InputError naming ``path``).

    Channels are the enabled analogue inputs AI1..AI4 in that order; ``ChanNum`` must equal
    their count (files whose AI flags are all 0 take the first ``ChanNum`` names).
    """
    where = Path(path)
    chan_num = int(fields["ChanNum"])
    if not 1 <= chan_num <= 4:
        raise InputError(where, f"ChanNum is {chan_num}; a .dat file stores 1 to 4 channels")
    flags = [bool(fields.get(f"AI{i}", 0)) for i in range(1, 5)]
    enabled = tuple(name for name, on in zip(DETECTORS, flags, strict=True) if on)
    if not enabled:
        enabled = DETECTORS[:chan_num]
    if len(enabled) != chan_num:
        raise InputError(
            where,
            f"ChanNum says {chan_num} channels but the AI1..AI4 flags enable "
            f"{len(enabled)} ({', '.join('AI' + str(DETECTORS.index(c) + 1) for c in enabled)})",
        )
    eight_bit = int(fields["EightBit"])
    if eight_bit not in (0, 1):
        raise InputError(where, f"EightBit is {eight_bit}; expected 0 (int16) or 1 (uint8)")
    rows, cols = int(fields["YResolution"]), int(fields["XResolution"])
    if rows < 1 or cols < 1:
        raise InputError(where, f"empty image: XResolution {cols}, YResolution {rows}")
    oversamples = 1
    if fields.get("SaveOversamples", 0) and int(fields.get("Oversampling", 0)) > 1:
        oversamples = int(fields["Oversampling"])
    return DatLayout(
        version=int(fields["FileVersion"]),
        rows=rows,
        cols=cols,
        channels=enabled,
        sample="u1" if eight_bit else ">i2",
        oversamples=oversamples,
    )


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes, int]:
    """``(fields, header bytes, file size)`` of the ``.dat`` file at ``path``.

    :raises InputError: unreadable, too short, wrong magic number, unknown version.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            buf = fh.read(HEADER_SIZE)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from exc
    return decode_header(buf, path), buf, size


def has_magic(path: Path) -> bool:
    """Whether ``path`` is a file starting with the ``.dat`` magic number."""
    try:
        with open(path, "rb") as fh:
            return int.from_bytes(fh.read(4), "big") == MAGIC
    except OSError:
        return False
