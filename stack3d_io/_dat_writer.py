"""Writing Janelia FIB-SEM ``.dat`` files: :class:`DatWriter` and :func:`write_dat`.

* :func:`write_dat` writes one file holding any of the channels ``A``..``D`` (tests and
  synthetic data). ``ChanNum``, ``EightBit``, the resolution, the AI flags, the oversample
  fields and ``FileLength`` (= 1024 + payload bytes) always follow the arrays.
* :class:`DatWriter` is the engine's writer: the engine writes one channel at a time, so
  every file holds **one** channel, stored as the detector given by the ``detector`` option
  or by the source (a :class:`~stack3d_io.janelia_dat.DatReader`'s extras or instrument),
  else ``A``. The header comes from the source slice's header bytes when the extras carry
  them (``dat_header``; every byte no field covers is kept), else from the source's decoded
  fields in ``meta.instrument["dat_header"]``, else from :data:`DEFAULT_FIELDS`;
  ``PixelSize`` follows ``meta.pixel_size``.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from stack3d_core.stackio import StackMeta, StackWriter

from ._dat_fields import fields_for
from ._dat_files import encode_payload, format_dat_name
from ._dat_header import DETECTORS, HEADER_SIZE, VERSIONS, decode_header, encode_header, layout_of
from ._writeutil import commit_folder

__all__ = ["DEFAULT_FIELDS", "DatWriter", "DatWriterOptions", "dat_bytes", "write_dat"]

DEFAULT_FIELDS: Mapping[str, Any] = {"FileType": 1, "ScanRate": 100000.0, "Detmin": -10.0, "Detmax": 10.0}
"""Fields of a header built from nothing (ScanRate in Hz, Detmin/Detmax in V, v4+)."""

_DTYPES = {"int16": ">i2", "uint8": "u1"}
_UNIT_NM = {"um": 1e3, "µm": 1e3, "nm": 1.0, "mm": 1e6, "m": 1e9, "A": 0.1, "angstrom": 0.1}


def _default_scaling(version: int, channels: Sequence[str], scan_rate: float) -> list[list[float]]:
    """Coefficients under which scaled values equal the raw ones (see ``_dat_files``)."""
    if version <= 6:
        return [[0.0, 1.0, 0.0, 0.0] for _ in channels]
    return [[scan_rate or 1.0, 0.0, 1.0, 1.0] for _ in range(2)]


def _scaling_for(
    version: int, channels: Sequence[str], rows: Mapping[str, Sequence[float]], scan_rate: float
) -> list[list[float]]:
    """The Scaling block of ``version`` for stored ``channels`` from per-detector ``rows``."""
    default = _default_scaling(version, "A", scan_rate)[0]
    if version <= 6:
        return [list(rows.get(c, default)) for c in channels]
    return [list(rows.get(d, default)) for d in ("A", "B")]


def _rows_by_detector(fields: Mapping[str, Any]) -> dict[str, list[float]]:
    """Scaling coefficients of a decoded header, keyed by detector letter."""
    layout = layout_of(fields, "<source header>")
    rows = fields["Scaling"]
    if layout.version <= 6:
        return {c: list(rows[i]) for i, c in enumerate(layout.channels)}
    return {d: list(rows[i]) for i, d in enumerate(("A", "B"))}


def dat_bytes(
    planes: Mapping[str, np.ndarray],
    header_fields: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    base: bytes | None = None,
) -> tuple[bytes, bytes]:
    """``(header, payload)`` of a ``.dat`` file holding ``planes`` (see :func:`write_dat`)."""
    channels = [d for d in DETECTORS if d in planes]
    unknown = sorted(set(planes) - set(DETECTORS))
    if unknown or not channels:
        raise ValueError(f"channels must be some of {list(DETECTORS)}, got {sorted(planes)}")
    arrays = [np.asarray(planes[c]) for c in channels]
    first = arrays[0]
    if any(a.shape != first.shape or a.dtype != first.dtype for a in arrays):
        raise ValueError("every channel must have the same shape and dtype")
    if first.dtype.name not in _DTYPES:
        raise ValueError(f"a .dat file stores int16 or uint8 pixels, got {first.dtype.name}")
    if first.ndim not in (2, 3) or min(first.shape) < 1:
        raise ValueError(f"expected (rows, cols) or (rows, cols, oversamples) arrays, got {first.shape}")
    fields = dict(header_fields or {})
    base_fields = decode_header(base) if base is not None else None
    if version is None:
        version = int(fields.get("FileVersion") or (base_fields["FileVersion"] if base_fields else 9))
    if version not in VERSIONS:
        raise ValueError(f"unsupported .dat FileVersion {version} (known: 1..9)")
    if base_fields is not None and base_fields["FileVersion"] != version:
        raise ValueError(f"base header is FileVersion {base_fields['FileVersion']}, not {version}")
    names = {f.name for f in fields_for(version)}
    if base is None:
        fields = {**{k: v for k, v in DEFAULT_FIELDS.items() if k in names}, **fields}
    rows, cols = first.shape[:2]
    oversamples = first.shape[2] if first.ndim == 3 else 1
    if oversamples > 1 and version < 4:
        raise ValueError("stored oversamples need FileVersion >= 4 (SaveOversamples)")
    sample = _DTYPES[first.dtype.name]
    payload = encode_payload(arrays, sample)
    derived: dict[str, Any] = {
        "FileVersion": version,
        "ChanNum": len(channels),
        "EightBit": int(sample == "u1"),
        "XResolution": cols,
        "YResolution": rows,
        "FileLength": HEADER_SIZE + len(payload),
        **{f"AI{i + 1}": int(d in channels) for i, d in enumerate(DETECTORS)},
    }
    if version >= 4:
        derived["SaveOversamples"] = int(oversamples > 1)
        if oversamples > 1:
            derived["Oversampling"] = oversamples
    fields.update(derived)
    if "Scaling" not in fields:
        scan_rate = float(fields.get("ScanRate") or (base_fields or {}).get("ScanRate") or 0.0)
        if base_fields is not None:  # keep the base's coefficients, re-laid for these channels
            fields["Scaling"] = _scaling_for(version, channels, _rows_by_detector(base_fields), scan_rate)
        else:
            fields["Scaling"] = _default_scaling(version, channels, scan_rate)
    if base is not None and version <= 6:
        base = base[:36] + bytes(64) + base[100:]  # the per-channel Scaling block changes size
    return encode_header(fields, base=base, version=version), payload


def write_dat(
    path: str | os.PathLike[str],
    channels: Mapping[str, np.ndarray],
    header_fields: Mapping[str, Any] | None = None,
    *,
    version: int | None = None,
    base: bytes | None = None,
) -> Path:
    """Write one ``.dat`` file and return its path.

    :param channels: ``{"A": array, "B": array}`` (any of ``A``..``D``), all int16 or all
        uint8, ``(rows, cols)``; ``(rows, cols, oversamples)`` stores every oversample
        (``SaveOversamples``, FileVersion >= 4).
    :param header_fields: header values by field name (``PixelSize`` in nm, ``EHT`` in kV,
        ``Scaling`` rows ...); the fields derived from the arrays override them.
    :param version: FileVersion (default ``header_fields["FileVersion"]``, else 9).
    :param base: 1024 header bytes to start from (bytes no field covers are kept).
    """
    header, payload = dat_bytes(channels, header_fields, version=version, base=base)
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(payload)
    return path


@attrs.frozen(kw_only=True)
class DatWriterOptions:
    """Options of :class:`DatWriter` (the ``[output]`` table)."""

    version: int | None = attrs.field(
        default=None,
        metadata={
            "doc": "FileVersion of the written headers (1-9); None: the source file's "
            "version when a .dat header is carried, else 9.",
            "unit": "",
        },
    )
    detector: str | None = attrs.field(
        default=None,
        metadata={
            "doc": "detector input the channel is stored as ('A' = AI1 .. 'D' = AI4); "
            "None: the source channel of a .dat input, else 'A'.",
            "unit": "",
        },
    )
    naming: str = attrs.field(
        default="names",
        metadata={
            "doc": "'names': the slice names with '.dat' (replacing .tif/.tiff/.dat); "
            "'timestamp': <prefix>_YY-MM-DD_HHMMSS_<tile>.dat, one second apart "
            "from 'start'.",
            "unit": "",
        },
    )
    prefix: str = attrs.field(default="stack3d", metadata={"doc": "name prefix for naming = 'timestamp'.", "unit": ""})
    start: str | None = attrs.field(
        default=None,
        metadata={
            "doc": "time of slice 0 for naming = 'timestamp', 'YY-MM-DD_HHMMSS'; None: when the writer is created.",
            "unit": "",
        },
    )
    tile: str = attrs.field(
        default="0-0-0", metadata={"doc": "tile index 'i-j-k' for naming = 'timestamp'.", "unit": ""}
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        issues = []
        if self.version is not None and self.version not in VERSIONS:
            issues.append(f"version: must be 1..9, got {self.version}")
        if self.detector is not None and self.detector not in DETECTORS:
            issues.append(f"detector: must be one of {list(DETECTORS)}, got {self.detector!r}")
        if self.naming not in ("names", "timestamp"):
            issues.append(f"naming: must be 'names' or 'timestamp', got {self.naming!r}")
        if self.start is not None:
            try:
                datetime.strptime(self.start, "%y-%m-%d_%H%M%S")
            except ValueError:
                issues.append(f"start: expected 'YY-MM-DD_HHMMSS', got {self.start!r}")
        parts = self.tile.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            issues.append(f"tile: expected 'i-j-k' such as '0-0-0', got {self.tile!r}")
        if not self.prefix or "/" in self.prefix or os.sep in self.prefix:
            issues.append(f"prefix: must be a non-empty file-name part, got {self.prefix!r}")
        return issues


def _dat_name(name: str) -> str:
    for suffix in (".tif", ".tiff", ".dat"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] + ".dat"
    return name + ".dat"


class DatWriter(StackWriter):
    """Writes one single-channel ``.dat`` file per slice into the folder ``path``.

    Staging, commit and abort follow :class:`~stack3d_io.tiff_folder.TiffFolderWriter`:
    files go to ``.<name>.partial`` beside ``path`` (each as ``<file>.tmp``, then renamed);
    :meth:`commit` swaps the folder in (entries of an old folder that are not ``.dat``
    files are kept); :meth:`abort` removes the staging folder. Stacks must be int16 or
    uint8 (the format stores nothing else).
    """

    name = "dat"
    description = "Janelia FIB-SEM .dat files, one single-channel file per slice"
    Options = DatWriterOptions
    suffixes = ()

    def __init__(
        self, path: str | os.PathLike[str], meta: StackMeta, names: Sequence[str], options: Any = None
    ) -> None:
        super().__init__(path, meta, names, options)
        self.path = Path(os.path.abspath(self.path))
        issues = self.options.validate()
        if issues:
            raise ValueError("; ".join(issues))
        if np.dtype(meta.dtype).name not in _DTYPES:
            raise ValueError(
                f"{self.path}: the .dat format stores int16 or uint8 pixels, not {meta.dtype}; cast the stack first"
            )
        if len(self.names) != meta.n:
            raise ValueError(f"{self.path}: {len(self.names)} slice names for {meta.n} slices")
        if self.options.naming == "timestamp":
            start = (
                datetime.strptime(self.options.start, "%y-%m-%d_%H%M%S")
                if self.options.start
                else datetime.now().replace(microsecond=0)
            )
            files = tuple(
                format_dat_name(self.options.prefix, start + timedelta(seconds=i), self.options.tile)
                for i in range(meta.n)
            )
        else:
            files = tuple(_dat_name(str(n)) for n in self.names)
        for f in files:
            if f.startswith(".") or Path(f).name != f or os.sep in f or "/" in f:
                raise ValueError(f"{self.path}: invalid slice file name {f!r}")
        if len({f.lower() for f in files}) != len(files):
            raise ValueError(f"{self.path}: slice file names are not unique")
        self.files = files
        self.staging = self.path.parent / f".{self.path.name}.partial"
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)

    @classmethod
    def can_write(cls, path: Path) -> bool:
        """Never picked by path: ask for ``writer = "dat"``."""
        return False

    def _header_source(self, extras: Mapping[str, Any]) -> tuple[dict[str, Any], bytes | None, str | None]:
        """``(source fields, source header bytes or None, source channel or None)``."""
        raw = extras.get("dat_header")
        if isinstance(raw, bytes | bytearray) and len(raw) == HEADER_SIZE:
            return decode_header(bytes(raw)), bytes(raw), extras.get("dat_channel")
        saved = self.meta.instrument.get("dat_header")
        if isinstance(saved, Mapping) and saved.get("FileVersion") in VERSIONS:
            return dict(saved), None, self.meta.instrument.get("dat_channel")
        return {}, None, None

    def _build(self, image: np.ndarray, extras: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """Header and payload bytes of one slice (see the module doc)."""
        source, raw, source_channel = self._header_source(extras)
        detector = self.options.detector or (source_channel if source_channel in DETECTORS else None) or "A"
        version = self.options.version or int(source.get("FileVersion") or 9)
        fields: dict[str, Any] = {}
        base = None
        if source:
            same = raw is not None and int(source["FileVersion"]) == version
            base = raw if same else None
            if not same:  # lay the source's fields out for another version
                names = {f.name for f in fields_for(version)}
                fields = {k: v for k, v in source.items() if k in names}
            scan_rate = float(source.get("ScanRate") or 0.0)
            fields["Scaling"] = _scaling_for(version, [detector], _rows_by_detector(source), scan_rate)
        pixel = self._pixel_size_nm()
        if pixel is not None:
            fields["PixelSize"] = pixel
        return dat_bytes({detector: image}, fields, version=version, base=base)

    def _pixel_size_nm(self) -> float | None:
        size, factor = self.meta.pixel_size, _UNIT_NM.get(self.meta.unit)
        if size is None or factor is None or not math.isfinite(size[0]) or size[0] <= 0:
            return None
        return float(size[0]) * factor

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
            raise ValueError(f"{self.files[index]}: image dtype {image.dtype.name} != stack dtype {self.meta.dtype}")
        if not self.staging.is_dir():
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        header, payload = self._build(image, extras)
        final = self.staging / self.files[index]
        tmp = final.with_name(final.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(payload)
        os.replace(tmp, final)

    def commit(self) -> None:
        """Publish the staged folder at :attr:`path` (see the class doc)."""
        commit_folder(self.staging, self.path, self.files, lambda name: name.lower().endswith(".dat"))

    def abort(self) -> None:
        """Remove the staging folder; :attr:`path` is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
