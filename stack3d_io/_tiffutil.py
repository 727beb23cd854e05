"""TIFF helpers shared by the TIFF readers and writers of :mod:`stack3d_io`.

What is carried from an input slice to an output slice (PyStack3D's ``save_tif``
semantics, spec §1.6), as the per-slice *extras* dict:

``"tiff_extratags"``
    every private tag (code > 32768) of the page, as a list of
    ``(code, dtype, count, value, writeonce)`` tuples that ``tifffile.imwrite(extratags=...)``
    accepts. ``value`` is ``bytes`` for byte-like types (BYTE, ASCII, SBYTE, UNDEFINED),
    copied verbatim from the file, and a tuple of numbers for the other types (decoded with
    the input's byte order, so they are valid whatever order the output is written in;
    rationals as flat ``(num, den, num, den, ...)``). Tags that point to sub-IFDs
    (Exif 34665, GPS 34853, Interoperability 40965, or of type IFD/IFD8) are dropped: the
    pointed-to data would not follow them.
``"tiff_compression"``
    the TIFF compression code of the page (tag 259, e.g. 8 for zlib/Adobe deflate), or
    ``None`` when uncompressed.
``"tiff_byteorder"``
    ``"<"`` or ``">"``: the byte order of the input file. The output is written in the same
    order, so that byte-typed private tags whose content depends on it (ImageJ's
    ``IJMetadata`` 50839 in a big-endian ImageJ file) stay valid.
``"tiff_resolution"`` (only when the input has a resolution unit other than NONE)
    ``((x_num, x_den), (y_num, y_den), unit)``: XResolution, YResolution (pixels per unit
    along columns and rows) and ResolutionUnit (2 inch, 3 centimetre).

Files are written by :func:`write_tiff` deterministically: no Software, DateTime or
tifffile JSON description tags, so identical pixels and extras give identical bytes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from stack3d_core.errors import InputError

__all__ = [
    "TIFF_SUFFIXES",
    "as_triple",
    "check_complete",
    "check_plane",
    "compression_code",
    "is_tiff_name",
    "open_tiff",
    "page_extras",
    "pixel_size_issues",
    "to_native",
    "write_tiff",
]

TIFF_SUFFIXES = (".tif", ".tiff")
"""File name endings recognised as TIFF (compared case-insensitively)."""

PRIVATE_TAG_MIN = 32768
"""Tags with a code strictly greater than this are carried from input to output."""

_IFD_POINTER_CODES = frozenset({34665, 34853, 40965})  # Exif, GPS, Interoperability
_IFD_DTYPES = frozenset({13, 18})  # IFD, IFD8
_BYTE_DTYPES = frozenset({1, 2, 6, 7})  # BYTE, ASCII, SBYTE, UNDEFINED

_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "μm": 1.0, "nm": 1e-3, "mm": 1e3, "m": 1e6}


def is_tiff_name(name: str) -> bool:
    """Whether ``name`` is a visible TIFF file name (``.tif``/``.tiff``, any case)."""
    return not name.startswith(".") and name.lower().endswith(TIFF_SUFFIXES)


@contextmanager
def open_tiff(path: Path, what: str | None = None) -> Iterator[tifffile.TiffFile]:
    """Open ``path`` with tifffile; any failure inside the block becomes an
    :class:`InputError` naming the file (``what`` is prefixed to the message, e.g. a page).

    :class:`InputError` raised inside the block passes through unchanged.
    """
    prefix = f"{what}: " if what else ""
    try:
        with tifffile.TiffFile(path) as tif:
            yield tif
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(path, f"{prefix}file not found") from exc
    except Exception as exc:  # tifffile raises many kinds on corrupt data
        reason = f"{type(exc).__name__}: {exc}"
        raise InputError(path, f"{prefix}not a readable TIFF ({reason})") from exc


def check_plane(page: Any, path: Path, what: str = "page 0") -> tuple[tuple[int, int], str]:
    """``((rows, cols), dtype name)`` of a page, which must be one 2D greyscale plane."""
    shape = tuple(int(s) for s in page.shape)
    if len(shape) != 2 or int(getattr(page, "samplesperpixel", 1)) != 1:
        raise InputError(path, f"{what}: expected a 2D greyscale image, got shape {shape}")
    return (shape[0], shape[1]), np.dtype(page.dtype).name


def check_complete(page: Any, path: Path, what: str = "page 0") -> None:
    """Raise :class:`InputError` when the page's pixel data run past the end of the file
    (a truncated copy), instead of letting tifffile return zero-padded pixels."""
    size = getattr(page.parent.filehandle, "size", None)
    if not size:
        return
    ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if c]
    if ends and max(ends) > size:
        raise InputError(
            path, f"{what}: truncated file: pixel data end at byte {max(ends)}, file has {size}"
        )


def to_native(image: np.ndarray) -> np.ndarray:
    """``image`` in native byte order (tifffile keeps the file's byte order otherwise)."""
    if not image.dtype.isnative:
        return image.astype(image.dtype.newbyteorder("="))
    return image


def _raw_tag_bytes(tif: tifffile.TiffFile, tag: Any) -> bytes | None:
    fmt = tifffile.TIFF.DATA_FORMATS.get(int(tag.dtype))
    if fmt is None:
        return None
    size = int(tag.count) * int(fmt[:-1]) * struct.calcsize(fmt[-1])
    fh = tif.filehandle
    pos = fh.tell()
    try:
        fh.seek(tag.valueoffset)
        raw = fh.read(size)
    finally:
        fh.seek(pos)
    return raw if len(raw) == size else None


def private_tags(tif: tifffile.TiffFile, page: Any) -> list[tuple[int, int, int, Any, bool]]:
    """Private tags (code > 32768) of ``page`` as ``imwrite`` extratags (see module doc)."""
    out: list[tuple[int, int, int, Any, bool]] = []
    for tag in page.tags.values():
        code, dtype = int(tag.code), int(tag.dtype)
        if code <= PRIVATE_TAG_MIN or code in _IFD_POINTER_CODES or dtype in _IFD_DTYPES:
            continue
        raw = _raw_tag_bytes(tif, tag)
        if raw is None:
            continue
        if dtype in _BYTE_DTYPES:
            value: Any = raw
        else:
            fmt = tifffile.TIFF.DATA_FORMATS[dtype]
            nitems = int(tag.count) * int(fmt[:-1])
            value = struct.unpack(f"{tif.byteorder}{nitems}{fmt[-1]}", raw)
        out.append((code, dtype, int(tag.count), value, True))
    return out


def page_extras(tif: tifffile.TiffFile, page: Any) -> dict[str, Any]:
    """The extras of one page: private tags, compression and resolution (module doc)."""
    compression = int(page.compression)
    extras: dict[str, Any] = {
        "tiff_extratags": private_tags(tif, page),
        "tiff_compression": None if compression == 1 else compression,
        "tiff_byteorder": tif.byteorder,
    }
    unit = page.tags.get(296)
    xres, yres = page.tags.get(282), page.tags.get(283)
    if unit is not None and int(unit.value) != 1 and xres is not None and yres is not None:
        extras["tiff_resolution"] = (
            tuple(int(v) for v in xres.value),
            tuple(int(v) for v in yres.value),
            int(unit.value),
        )
    return extras


def compression_code(value: str | int | None) -> int | None:
    """TIFF compression code of a name (``"zlib"``, ``"deflate"``, ``"lzma"``, ``"zstd"``,
    ``"none"``, any ``tifffile.COMPRESSION`` name) or code; ``None`` means uncompressed.

    :raises ValueError: unknown name or code.
    """
    if value is None:
        return None
    if isinstance(value, str):
        key = value.strip().upper()
        if key in ("", "NONE"):
            return None
        if key == "ZLIB":
            return 8
        try:
            code = int(tifffile.COMPRESSION[key])
        except KeyError:
            raise ValueError(f"unknown TIFF compression {value!r}") from None
    else:
        try:
            code = int(tifffile.COMPRESSION(int(value)))
        except ValueError:
            raise ValueError(f"unknown TIFF compression code {value!r}") from None
    return None if code == 1 else code


def can_encode(code: int | None) -> bool:
    """Whether tifffile can write this compression here (some need ``imagecodecs``)."""
    if code is None:
        return True
    try:
        tifffile.TIFF.COMPRESSORS[code]
    except (KeyError, ValueError):
        return False
    return True


def resolution_from_pixel_size(
    pixel_size: Sequence[float] | None, unit: str
) -> tuple[tuple[float, float], int] | None:
    """``((x pixels/cm, y pixels/cm), RESUNIT.CENTIMETER)`` from an ``(x, y, z)`` voxel size
    in ``unit``; ``None`` when unknown, non-positive or in an unknown unit."""
    if pixel_size is None or unit not in _UNIT_TO_UM:
        return None
    scale = _UNIT_TO_UM[unit]
    px_um, py_um = float(pixel_size[0]) * scale, float(pixel_size[1]) * scale
    if not (px_um > 0 and py_um > 0):
        return None
    return (1e4 / px_um, 1e4 / py_um), int(tifffile.RESUNIT.CENTIMETER)


def write_tiff(
    dest: Path,
    image: np.ndarray,
    extras: Mapping[str, Any],
    *,
    compression: str | None = None,
    pixel_size: Sequence[float] | None = None,
    unit: str = "um",
) -> None:
    """Write one 2D slice to ``dest`` atomically (``dest.tmp`` then ``os.replace``).

    :param extras: the input slice's extras (module doc); keys of other formats are ignored.
    The byte order is ``extras["tiff_byteorder"]`` (little-endian when absent).

    :param compression: ``None`` carries ``extras["tiff_compression"]``; a name (``"none"``,
        ``"zlib"``, ...) forces one.
    :param pixel_size: ``(x, y, z)`` voxel size in ``unit``; written as XResolution /
        YResolution in pixels per centimetre, only when the extras carry no resolution of
        the input (which is then written unchanged).
    :raises ValueError: the compression cannot be written here (e.g. LZW without imagecodecs).
    """
    if compression is None:
        code = extras.get("tiff_compression")
        code = compression_code(code) if code is not None else None
    else:
        code = compression_code(compression)
    if not can_encode(code):
        name = tifffile.COMPRESSION(code).name
        raise ValueError(
            f"{dest}: cannot write TIFF compression {name} (code {code}) without the "
            "'imagecodecs' package; install it or set the writer option compression "
            '(e.g. "zlib" or "none")'
        )
    extratags = [
        tuple(t) for t in extras.get("tiff_extratags", ()) if int(t[0]) > PRIVATE_TAG_MIN
    ]
    kwargs: dict[str, Any] = {}
    res = extras.get("tiff_resolution")
    if res is not None:
        kwargs["resolution"] = (tuple(res[0]), tuple(res[1]))
        kwargs["resolutionunit"] = int(res[2])
    else:
        fromsize = resolution_from_pixel_size(pixel_size, unit)
        if fromsize is not None:
            kwargs["resolution"], kwargs["resolutionunit"] = fromsize
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        tifffile.imwrite(
            tmp,
            np.ascontiguousarray(to_native(image)),
            byteorder=">" if extras.get("tiff_byteorder") == ">" else "<",
            photometric="minisblack",
            compression=code,
            metadata=None,
            software=False,
            extratags=extratags,
            **kwargs,
        )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pixel_size_issues(value: Any) -> list[str]:
    """Messages about an ``(x, y, z)`` pixel-size option in µm (empty when fine)."""
    if value is None:
        return []
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return ["pixel_size: expected three numbers (x, y, z) in µm"]
    if len(values) != 3:
        return [f"pixel_size: expected three numbers (x, y, z) in µm, got {len(values)}"]
    if not all(v > 0 for v in values):
        return [f"pixel_size: every value must be > 0, got {tuple(values)}"]
    return []


def as_triple(value: Any) -> tuple[float, float, float] | None:
    """``(x, y, z)`` as floats, or ``None``."""
    if value is None:
        return None
    x, y, z = (float(v) for v in value)
    return (x, y, z)
