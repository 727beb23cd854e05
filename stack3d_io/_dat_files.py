"""Pixels, scaling and file names of Janelia FIB-SEM ``.dat`` files.

* Payload: C-order ``(Y, X, C)`` samples, big-endian int16 (``EightBit == 0``) or uint8,
  channels interleaved per pixel in AI1..AI4 order; ``(Y, X, oversamples, C)`` when every
  oversample is stored. :func:`read_channel` memory-maps the file and copies one channel.
* Scaling (:func:`scale`) follows the MATLAB reference reader (``readfibsem.m``):

  - FileVersion 1–6: detector volts ``k0 + raw * k1``, coefficients of the stored channel
    (the Scaling block has one row per stored channel);
  - 16-bit, FileVersion 7–9: ``(raw - k1) * k2``, coefficients of the detector (row 0 is
    detector A, row 1 detector B; detectors C/D have none);
  - 8-bit, FileVersion 7–9 (8-bit files appeared with version 7): the byte is first
    turned into the equivalent 16-bit raw value ``byte * ScanRate / (k0 * k2 * k3) + k1``
    (as the reference reader does), then scaled as above, which gives
    ``byte * ScanRate / (k0 * k3)``.

  :func:`electron_counts` is Shtengel's other convention (``(raw - k1) * k2 * k0 /
  (ScanRate * EF)``, EF = 0.1), offered as a function only.
* Names: ``<Name>_<YY-MM-DD>_<HHMMSS>_<i>-<j>-<k>.dat`` (:func:`parse_dat_name`): the
  acquisition time, and the tile index ``i-j-k`` within a layer.
"""

from __future__ import annotations

import mmap
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from stack3d_core.errors import InputError

from ._dat_header import DETECTORS, HEADER_SIZE, DatLayout

__all__ = [
    "electron_counts",
    "encode_payload",
    "format_dat_name",
    "parse_dat_name",
    "read_channel",
    "scale",
    "scaling_coefficients",
]

_NAME = re.compile(
    r"^(?P<prefix>.*)_(?P<date>\d{2}-\d{2}-\d{2})_(?P<time>\d{6})_(?P<tile>\d+-\d+-\d+)\.dat$",
    re.IGNORECASE,
)


def parse_dat_name(name: str) -> tuple[datetime | None, str | None]:
    """``(acquisition time, tile index)`` from a file name; ``(None, None)`` when it does
    not follow ``<Name>_YY-MM-DD_HHMMSS_i-j-k.dat`` (years are 20YY)."""
    match = _NAME.match(name)
    if match is None:
        return None, None
    try:
        stamp = datetime.strptime(match["date"] + match["time"], "%y-%m-%d%H%M%S")
    except ValueError:
        return None, match["tile"]
    return stamp, match["tile"]


def format_dat_name(prefix: str, stamp: datetime, tile: str = "0-0-0") -> str:
    """``<prefix>_YY-MM-DD_HHMMSS_<tile>.dat``."""
    return f"{prefix}_{stamp:%y-%m-%d_%H%M%S}_{tile}.dat"


def _describe(layout: DatLayout) -> str:
    over = f" x {layout.oversamples} oversamples" if layout.oversamples > 1 else ""
    return (
        f"{layout.rows} x {layout.cols} px x {len(layout.channels)} channel(s){over} of "
        f"{layout.native_dtype} = {layout.payload_bytes} bytes"
    )


def read_channel(
    path: Path,
    layout: DatLayout,
    channel: str,
    *,
    file_size: int,
    fill_truncated: bool = False,
    oversample: int | None = None,
) -> np.ndarray:
    """The ``(rows, cols)`` pixels of ``channel``, in native byte order.

    :param file_size: size of the file in bytes (from the header read).
    :param fill_truncated: a file shorter than its header says is an
        :class:`~stack3d_core.errors.InputError`; with ``True`` the missing pixels are 0 and a
        warning names the file and the missing bytes.
    :param oversample: with stored oversamples, ``None`` averages them (float32), ``k`` keeps
        oversample ``k`` (stored dtype).
    """
    index = layout.channels.index(channel)
    if layout.oversamples > 1 and oversample is not None and not 0 <= oversample < layout.oversamples:
        raise InputError(path, f"oversample {oversample} out of range: the file stores {layout.oversamples}")
    expected = HEADER_SIZE + layout.payload_bytes
    if file_size < expected:
        missing = expected - file_size
        message = (
            f"truncated: {missing} bytes missing (the header describes {_describe(layout)} "
            f"after the {HEADER_SIZE}-byte header, {expected} bytes in all; the file has "
            f"{file_size})"
        )
        if not fill_truncated:
            raise InputError(path, message + "; fill_truncated = true reads it with zeros")
        warnings.warn(f"{path}: {message}; missing pixels filled with 0", stacklevel=3)
        return _finish(_read_partial(path, layout, file_size, index), layout, oversample)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        count = int(np.prod(layout.payload_shape))
        view = np.frombuffer(mm, dtype=layout.sample, count=count, offset=HEADER_SIZE)
        try:
            out = _finish(view.reshape(layout.payload_shape)[..., index], layout, oversample)
        finally:
            del view  # release the buffer before the map closes
    return out


def _read_partial(path: Path, layout: DatLayout, file_size: int, index: int) -> np.ndarray:
    """Samples of channel ``index`` of a truncated file, 0 where bytes are missing (only
    whole pixels are kept); shape ``(Y, X)`` or ``(Y, X, oversamples)``."""
    per_pixel_shape = layout.payload_shape[2:]
    per_pixel = np.dtype(layout.sample).itemsize * int(np.prod(per_pixel_shape))
    n_pixels = max(0, file_size - HEADER_SIZE) // per_pixel
    with open(path, "rb") as fh:
        fh.seek(HEADER_SIZE)
        data = fh.read(n_pixels * per_pixel)
    n_pixels = len(data) // per_pixel
    available = np.frombuffer(data, dtype=layout.sample, count=n_pixels * per_pixel // np.dtype(layout.sample).itemsize)
    out = np.zeros((layout.rows * layout.cols, *per_pixel_shape[:-1]), dtype=layout.sample)
    out[:n_pixels] = available.reshape((n_pixels, *per_pixel_shape))[..., index]
    return out.reshape((layout.rows, layout.cols, *per_pixel_shape[:-1]))


def _finish(samples: np.ndarray, layout: DatLayout, oversample: int | None) -> np.ndarray:
    """A native-order copy of one channel's ``samples`` (``(Y, X)``, or ``(Y, X, oversamples)``
    reduced to their mean (float32) or to oversample ``oversample``)."""
    if layout.oversamples > 1:
        if oversample is None:
            return samples.mean(axis=2, dtype=np.float64).astype(np.float32)
        return samples[:, :, oversample].astype(layout.native_dtype)
    return samples.astype(layout.native_dtype)


def scaling_coefficients(fields: Mapping[str, Any], layout: DatLayout, channel: str) -> tuple[float, ...]:
    """``(k0, k1, k2, k3)`` of ``channel`` (see the module doc for the row used)."""
    rows = fields["Scaling"]
    if layout.version <= 6:
        return tuple(float(k) for k in rows[layout.channels.index(channel)])
    detector = DETECTORS.index(channel)
    if detector >= len(rows):
        raise ValueError(f"FileVersion {layout.version} stores Scaling for detectors A and B only")
    return tuple(float(k) for k in rows[detector])


def scale(raw: np.ndarray, fields: Mapping[str, Any], layout: DatLayout, channel: str) -> np.ndarray:
    """``raw`` pixels of ``channel`` in the reference reader's units, as float32."""
    k0, k1, k2, k3 = scaling_coefficients(fields, layout, channel)
    values = raw.astype(np.float64)
    if layout.version <= 6:
        return (k0 + values * k1).astype(np.float32)
    if layout.sample == "u1":
        denominator = k0 * k3
        if denominator == 0:
            raise ValueError("Scaling k0 * k3 is 0: an 8-bit file cannot be scaled")
        return (values * (float(fields["ScanRate"]) / denominator)).astype(np.float32)
    return ((values - k1) * k2).astype(np.float32)


def electron_counts(raw: np.ndarray, coefficients: Sequence[float], scan_rate: float, ef: float = 0.1) -> np.ndarray:
    """Shtengel's electron counts of 16-bit v8/v9 data: ``(raw - k1) * k2 * k0 / (scan_rate * ef)``.

    :param coefficients: ``(k0, k1, k2, k3)`` of the channel (:func:`scaling_coefficients`).
    :param scan_rate: ``ScanRate`` in Hz. :param ef: Shtengel's hard-coded 0.1.
    """
    k0, k1, k2 = (float(k) for k in coefficients[:3])
    return ((raw.astype(np.float64) - k1) * k2 * k0 / (scan_rate * ef)).astype(np.float32)


def encode_payload(planes: Sequence[np.ndarray], sample: str) -> bytes:
    """Payload bytes of ``planes`` (one per stored channel, in AI order), each ``(Y, X)`` or
    ``(Y, X, oversamples)``, as ``sample`` (``">i2"`` or ``"u1"``)."""
    return np.stack([np.asarray(p) for p in planes], axis=-1).astype(sample).tobytes()
