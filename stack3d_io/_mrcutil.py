"""MRC helpers of :mod:`stack3d_io.mrc`: dtype <-> mode policy, the stack3d header label,
header inspection with errors naming the file, and header statistics from per-slice sums.

MRC2014 facts used here (``mrcfile`` 1.5 maps them):

* modes 0 int8 (signed in MRC2014), 1 int16, 2 float32, 4 complex64, 6 uint16, 12 float16;
* the 1024-byte header, then ``nsymbt`` bytes of extended header, then the voxels, x fastest;
* ``cella / (mx, my, mz)`` is the voxel size in Ångström;
* IMOD writes ``imodStamp = 1146047817`` at byte 152 and ``imodFlags`` at byte 156, whose
  bit 0 set means mode-0 bytes are *signed*: IMOD files without it store unsigned bytes;
* unknown statistics: ``dmax < dmin``, ``dmean < min(dmin, dmax)``, ``rms < 0``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from stack3d_core.errors import InputError

from ._writeutil import require

__all__ = [
    "MRC_SUFFIXES",
    "MrcInfo",
    "combine_stats",
    "format_label",
    "inspect_mrc",
    "open_mrc",
    "slice_stats",
    "storage_for",
]

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec", ".st", ".ali")
"""File name endings read as MRC (compared case-insensitively)."""

HEADER_BYTES = 1024
IMOD_STAMP = 1146047817
LABEL_PREFIX = "stack3d"

_NATIVE_MODES = {"int16": 1, "float32": 2, "uint16": 6}
_WIDENED = {"uint8": (6, "uint16"), "int8": (1, "int16"), "float16": (2, "float32")}
_MODE_DTYPES = {0: "int8", 1: "int16", 2: "float32", 4: "complex64", 6: "uint16", 12: "float16"}


def storage_for(dtype: str, policy: str) -> tuple[int, str, str]:
    """``(mode, stored dtype, dtype recorded in the label)`` for stack pixels of ``dtype``.

    * int16 -> 1, float32 -> 2, uint16 -> 6 (as is);
    * uint8 -> 6 (uint16), int8 -> 1 (int16), float16 -> 2 (float32): widened, lossless.
      Mode 0 is never written: MRC2014 defines it as signed, so uint8 values above 127
      would be read back negative by other software;
    * any other real dtype only with ``policy == "float32"`` (a lossy cast; the label
      then records float32, the dtype the file holds).

    :raises ValueError: the dtype cannot be stored under ``policy``.
    """
    name = np.dtype(dtype).name
    if name in _NATIVE_MODES:
        return _NATIVE_MODES[name], name, name
    if name in _WIDENED:
        return (*_WIDENED[name], name)
    dt = np.dtype(dtype)
    if policy == "float32" and dt.kind in "iuf":
        return 2, "float32", "float32"
    raise ValueError(
        f"MRC cannot store {name} pixels (modes: int16, uint16, float32; uint8, int8 and "
        "float16 are widened losslessly). Convert the stack first, or set the writer option "
        'dtype_policy = "float32" to cast to float32 (lossy above 2**24 or for float64).'
    )


def format_label(dtype: str, state: str) -> str:
    """The header label stack3d writes: ``stack3d dtype=<stack dtype> state=<state>``."""
    return f"{LABEL_PREFIX} dtype={dtype} state={state}"


def parse_label(labels: list[str]) -> dict[str, str]:
    """``key=value`` pairs of the first stack3d label (empty if none)."""
    for text in labels:
        words = text.strip().split()
        if words and words[0] == LABEL_PREFIX:
            return dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return {}


@contextmanager
def open_mrc(path: Path, mode: str = "r", *, header_only: bool = False) -> Iterator[Any]:
    """``mrcfile.open`` / ``mrcfile.mmap`` (strict, not permissive) with every failure
    turned into an :class:`InputError` naming ``path``; a short file is reported with the
    number of bytes missing."""
    mrcfile = require("mrcfile", "MRC")
    try:
        size = os.path.getsize(path)
    except FileNotFoundError as exc:
        raise InputError(path, "file not found") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc})") from exc
    if size < HEADER_BYTES:
        raise InputError(
            path, f"truncated or not an MRC file: {size} bytes, the header alone needs {HEADER_BYTES}"
        )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "MRC file is .* larger than expected", RuntimeWarning)
            if header_only:
                handle = mrcfile.open(path, mode="r", permissive=False, header_only=True)
            else:
                _check_size(path, size)
                handle = mrcfile.mmap(path, mode=mode, permissive=False)
    except InputError:
        raise
    except Exception as exc:  # mrcfile raises ValueError / OSError on corrupt headers
        raise InputError(path, f"not a readable MRC file ({type(exc).__name__}: {exc})") from exc
    with handle as mrc:
        yield mrc


def _check_size(path: Path, size: int) -> None:
    """Compare the file size with what the header announces (no mrcfile needed)."""
    with open(path, "rb") as fh:
        raw = fh.read(HEADER_BYTES)
    if raw[208:212] != b"MAP ":
        return  # let mrcfile describe it
    order = "<" if raw[212] == 0x44 else ">" if raw[212] == 0x11 else "<"
    nx, ny, nz, mode = np.frombuffer(raw[:16], dtype=f"{order}i4")
    nsymbt = int(np.frombuffer(raw[92:96], dtype=f"{order}i4")[0])
    dtype = _MODE_DTYPES.get(int(mode))
    if dtype is None or min(int(nx), int(ny), int(nz)) < 0 or nsymbt < 0:
        return
    expected = HEADER_BYTES + nsymbt + int(nx) * int(ny) * int(nz) * np.dtype(dtype).itemsize
    if size < expected:
        raise InputError(
            path,
            f"truncated MRC file: {expected - size} bytes missing (the header announces "
            f"{int(nz)} x {int(ny)} x {int(nx)} voxels of mode {int(mode)}, {expected} bytes; the file has {size})",
        )


@attrs.frozen
class MrcInfo:
    """What the reader needs from a header (small and picklable)."""

    n: int
    shape: tuple[int, int]
    mode: int
    file_dtype: str  # dtype of the voxels in the file (mode 0 may be read as uint8)
    dtype: str  # dtype the reader returns
    voxel_size_a: tuple[float, float, float] | None  # x, y, z in Angstrom
    label: Mapping[str, str]


def _imod_unsigned_bytes(header: Any) -> bool:
    """Whether an IMOD header marks mode-0 bytes as unsigned (stamp set, flag bit 0 clear)."""
    order = header.mode.dtype.byteorder
    i4 = np.dtype("i4").newbyteorder(order if order in "<>" else "=")
    extra2 = bytes(header.extra2)
    stamp, flags = np.frombuffer(extra2[40:48], dtype=i4)
    return int(stamp) == IMOD_STAMP and not int(flags) & 1


def _voxel_size(header: Any) -> tuple[float, float, float] | None:
    """``cella / (mx, my, mz)`` in Å. A zero z stays 0 ("not set": an unknown slice spacing,
    which the reader reports as NaN µm); ``None`` when x or y is not set, or any value is
    negative or not finite.

    Each value is the shortest decimal that gives the stored float32 ``cella`` back when
    written again (``cella = float32(float32(size) * mx)``, as ``mrcfile`` does), so a
    voxel size written as 34.5 or 48.828125 Å reads back as exactly that number.
    """
    sizes = []
    for cell, m in ((header.cella.x, header.mx), (header.cella.y, header.my), (header.cella.z, header.mz)):
        m, stored = int(m), np.float32(cell)
        if len(sizes) == 2 and m > 0 and stored == 0:  # z not set
            sizes.append(0.0)
            continue
        if m <= 0 or not (np.isfinite(stored) and stored > 0):
            return None
        value = float(stored) / m
        for digits in range(1, 10):
            candidate = float(f"{value:.{digits}g}")
            if np.float32(float(np.float32(candidate)) * m) == stored:
                value = candidate
                break
        sizes.append(value)
    return (sizes[0], sizes[1], sizes[2])


def inspect_mrc(path: Path, mode0: str, restore_dtype: bool) -> MrcInfo:
    """Header facts of ``path``, checked: 3D, standard axis order, supported real mode,
    file long enough. :raises InputError: naming ``path`` and the problem."""
    with open_mrc(path) as mrc:
        header = mrc.header
        labels = [str(t) for t in mrc.get_labels()]
        data = mrc.data
        mode = int(header.mode)
        axes = (int(header.mapc), int(header.mapr), int(header.maps))
        if axes != (1, 2, 3):
            raise InputError(
                path, f"unsupported axis order (mapc, mapr, maps) = {axes}: only (1, 2, 3) (x, y, z) is read"
            )
        if mode not in (0, 1, 2, 6, 12):
            raise InputError(path, f"unsupported MRC mode {mode} ({_MODE_DTYPES.get(mode, 'unknown')})")
        if data is None or data.ndim not in (2, 3):
            raise InputError(path, f"expected a 3D volume or image stack, got data of shape {getattr(data, 'shape', None)}")
        n, rows, cols = (1, *data.shape) if data.ndim == 2 else data.shape
        file_dtype = np.dtype(data.dtype).newbyteorder("=").name
        if mode == 0 and (mode0 == "unsigned" or (mode0 == "auto" and _imod_unsigned_bytes(header))):
            file_dtype = "uint8"
        label = parse_label(labels)
        if label and label.get("state") != "complete":
            raise InputError(
                path, f"stack3d wrote this file but never committed it (state={label.get('state')}): the run was interrupted"
            )
        dtype = file_dtype
        original = label.get("dtype")
        if restore_dtype and original and original != file_dtype:
            if _widened_from(original) != file_dtype:
                raise InputError(path, f"header label says dtype {original}, which mode {mode} cannot hold")
            dtype = original
        return MrcInfo(int(n), (int(rows), int(cols)), mode, file_dtype, dtype, _voxel_size(header), dict(label))


def _widened_from(dtype: str) -> str | None:
    entry = _WIDENED.get(dtype)
    return entry[1] if entry else None


def restore(path: Path, index: int, image: np.ndarray, dtype: str) -> np.ndarray:
    """Narrow a widened slice back to the stack's original ``dtype``, refusing values out
    of its range (the file was edited after stack3d wrote it)."""
    target = np.dtype(dtype)
    if image.dtype == target:
        return image
    if target.kind in "iu":
        info = np.iinfo(target)
        lo, hi = (int(image.min()), int(image.max())) if image.size else (0, 0)
        if lo < info.min or hi > info.max:
            raise InputError(
                path,
                f"slice {index}: values {lo}..{hi} do not fit the original dtype {dtype} recorded in "
                "the header label; read it with the reader option restore_dtype = false",
            )
    return image.astype(target)


def slice_stats(image: np.ndarray) -> tuple[float, float, float, float, float]:
    """``(count, min, max, mean, M2)`` of one slice in float64 (M2: sum of squared
    deviations from the slice mean), for :func:`combine_stats`."""
    values = np.asarray(image, dtype=np.float64)
    mean = float(values.mean())
    m2 = float(np.square(values - mean).sum())
    return float(values.size), float(values.min()), float(values.max()), mean, m2


def combine_stats(rows: np.ndarray) -> tuple[float, float, float, float] | None:
    """``(dmin, dmax, dmean, rms)`` of the whole stack from per-slice rows of
    :func:`slice_stats` (Chan et al.'s pairwise combination; ``rms`` is the standard
    deviation from the mean, as ``mrcfile.update_header_stats``), or ``None`` when a value
    is not finite (NaN or infinite pixels)."""
    count = rows[:, 0]
    total = float(count.sum())
    mean = float((count * rows[:, 3]).sum() / total)
    m2 = float(rows[:, 4].sum() + (count * np.square(rows[:, 3] - mean)).sum())
    out = (float(rows[:, 1].min()), float(rows[:, 2].max()), mean, float(np.sqrt(m2 / total)))
    return out if all(np.isfinite(out)) else None
