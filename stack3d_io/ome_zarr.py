"""OME-Zarr (NGFF 0.5: Zarr v3 + ``ome`` metadata) images, read and written with zarr-python 3.

Layout written by :class:`OmeZarrWriter`: **one image group per channel** (the writer's
``path``, e.g. ``result.ome.zarr``) holding a single-scale multiscale of one array::

    result.ome.zarr/zarr.json      group: attributes.ome (NGFF 0.5) + attributes.stack3d
    result.ome.zarr/s0/zarr.json   array (n, rows, cols), dimension_names ["z", "y", "x"]
    result.ome.zarr/s0/c/<i>/0/0   one chunk per slice: chunks (1, rows, cols), zstd

* Axes ``z, y, x`` have type ``"space"`` and unit ``"micrometer"``; the ``scale`` transform
  is the voxel size ``(z, y, x)`` in µm, followed by a ``translation`` ``(z0, 0, 0)``
  when slice positions are known (:mod:`._omezarr_meta`).
* ``attributes.stack3d`` keeps what NGFF has no place for: slice names, per-slice z
  positions (µm), ``StackMeta.instrument`` (made JSON-able), the dtype, and two flags:
  ``one_chunk_per_slice`` (every chunk is written, even all-zero ones) and ``complete``
  (false while staged).
* Chunks never span two slices, so workers writing different slices never share a chunk.

:class:`OmeZarrReader` reads those, and other NGFF 0.4 / 0.5 images whose last three axes
are z, y, x (leading axes of length 1, e.g. ``t`` and ``c``, are dropped). A path that is
not itself an image but holds image groups is read as one channel per image group.
"""

from __future__ import annotations

import itertools
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

from ._omezarr_meta import (
    DATASET,
    STACK3D_KEY,
    ImageLayout,
    image_attributes,
    is_image_group,
    multiscales_of,
    parse_image,
    read_group_attributes,
)
from ._tiffutil import as_triple, pixel_size_issues, to_native
from ._writeutil import check_slice, default_names, jsonable, publish, require, staging_dir, start_writer, to_um

__all__ = ["OmeZarrReader", "OmeZarrWriter"]

ZARR_SUFFIXES = (".ome.zarr", ".zarr")
_BLOSC_MAX = 2**31 - 64  # bytes in one blosc block


@attrs.frozen(kw_only=True)
class OmeZarrReaderOptions:
    """Options of :class:`OmeZarrReader` (the ``[input]`` table)."""

    pixel_size: tuple[float, float, float] | None = attrs.field(
        default=None,
        metadata={
            "doc": "voxel size (x = column spacing, y = row spacing, z = slice spacing); overrides "
            "the metadata's scale. None: from the metadata (unknown without units).",
            "unit": "um",
        },
    )
    level: int = attrs.field(
        default=0,
        metadata={"doc": "multiscale level read (0 = the full-resolution dataset).", "unit": ""},
    )
    missing_chunks: Literal["auto", "error", "fill"] = attrs.field(
        default="auto",
        metadata={
            "doc": "a slice whose chunk file is missing: 'error' raises an error naming the "
            "chunk, 'fill' reads the fill value (zarr's rule for chunks never written), 'auto' "
            "raises for images stack3d wrote (which write every chunk) and fills otherwise.",
            "unit": "",
        },
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        issues = pixel_size_issues(self.pixel_size)
        if self.level < 0:
            issues.append(f"level: must be >= 0, got {self.level}")
        return issues


@attrs.frozen(kw_only=True)
class OmeZarrWriterOptions:
    """Options of :class:`OmeZarrWriter` (the ``[output]`` table)."""

    compression: Literal["zstd", "blosc", "none"] = attrs.field(
        default="zstd",
        metadata={
            "doc": "chunk compression: 'zstd' (with checksum), 'blosc' (zstd inside blosc, byte "
            "shuffle; chunks up to 2 GiB), or 'none'.",
            "unit": "",
        },
    )
    level: int = attrs.field(
        default=3,
        metadata={"doc": "compression level: zstd 1..22, blosc 0..9.", "unit": ""},
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        if self.compression == "zstd" and not 1 <= self.level <= 22:
            return [f"level: zstd levels are 1..22, got {self.level}"]
        if self.compression == "blosc" and not 0 <= self.level <= 9:
            return [f"level: blosc levels are 0..9, got {self.level}"]
        if self.compression not in ("zstd", "blosc", "none"):
            return [f"compression: expected 'zstd', 'blosc' or 'none', got {self.compression!r}"]
        return []


@attrs.frozen
class _Image:
    """One channel: its group folder, layout and array facts (picklable)."""

    root: Path
    layout: ImageLayout
    n: int
    shape: tuple[int, int]
    dtype: str
    check_chunks: bool


def _open_array(folder: Path) -> Any:
    """``zarr.open_array`` read-only, failures as :class:`InputError` naming ``folder``."""
    zarr = require("zarr", "OME-Zarr")
    if not ((folder / "zarr.json").is_file() or (folder / ".zarray").is_file()):
        raise InputError(folder, "zarr array metadata missing (no zarr.json / .zarray)")
    try:
        return zarr.open_array(store=str(folder), mode="r")
    except Exception as exc:  # zarr raises many kinds on broken metadata
        raise InputError(folder, f"not a readable zarr array ({type(exc).__name__}: {exc})") from exc


def _chunk_files(arr: Any, folder: Path, index: tuple[int | None, ...]) -> list[Path]:
    """Files of the chunks (shards) holding the selection ``index`` (None: whole axis)."""
    meta = arr.metadata
    grid = getattr(meta, "chunk_grid", None)
    chunks = tuple(grid.chunk_shape) if grid is not None else tuple(meta.chunks)
    ranges = [
        [i // c] if i is not None else range(math.ceil(size / c))
        for i, c, size in zip(index, chunks, arr.shape, strict=True)
    ]
    return [folder / meta.encode_chunk_key(coords) for coords in itertools.product(*ranges)]


class OmeZarrReader(StackReader):
    """Reads OME-Zarr images (NGFF 0.5, and 0.4); channel ``"."`` for an image group, or
    one channel per image group found directly inside ``path``."""

    name = "ome_zarr"
    description = "OME-Zarr (NGFF 0.5 / 0.4) 3D images, z/y/x axes; one image group per channel"
    Options = OmeZarrReaderOptions

    def __init__(self, path: str | os.PathLike[str], options: Any = None) -> None:
        super().__init__(path, options)
        self._cache: dict[str, _Image] = {}

    @classmethod
    def can_read(cls, path: Path) -> bool:
        """A folder holding an OME-Zarr image, or image groups one level down."""
        path = Path(path)
        if is_image_group(path):
            return True
        try:
            return path.is_dir() and any(
                is_image_group(sub) for sub in path.iterdir() if not sub.name.startswith(".")
            )
        except OSError:
            return False

    def channels(self) -> tuple[str, ...]:
        """``(".",)`` for an image group, else the sorted names of the image groups inside."""
        attributes = None
        try:
            attributes = read_group_attributes(self.path)
        except InputError:
            if not self.path.is_dir():
                raise
        if attributes is not None and multiscales_of(attributes) is not None:
            return (".",)
        try:
            subs = sorted(s.name for s in self.path.iterdir() if not s.name.startswith(".") and is_image_group(s))
        except OSError as exc:
            raise InputError(self.path, f"cannot list folder ({exc})") from exc
        if not subs:
            read_group_attributes(self.path)  # the precise reason when it is not a group
            raise InputError(self.path, "no OME-Zarr image here (no 'multiscales' metadata) nor in any subfolder")
        return tuple(subs)

    def image_dir(self, channel: str) -> Path:
        """The image group folder of ``channel``."""
        if channel in (".", ""):
            return self.path
        if Path(channel).name != channel or channel in ("..",):
            raise InputError(self.path / channel, f"invalid channel name {channel!r}")
        return self.path / channel

    def _image(self, channel: str) -> _Image:
        if channel in self._cache:
            return self._cache[channel]
        root = self.image_dir(channel)
        layout = parse_image(root, read_group_attributes(root), self.options.level)
        if layout.stack3d.get("complete") is False:
            raise InputError(root, "stack3d wrote this image but never committed it: the run was interrupted")
        arr = _open_array(root / layout.dataset)
        shape = tuple(int(s) for s in arr.shape)
        if len(shape) != layout.ndim:
            raise InputError(root / layout.dataset, f"array has {len(shape)} dimensions, the axes metadata {layout.ndim}")
        if any(s != 1 for s in shape[:-3]):
            raise InputError(root, f"array shape {shape}: only axes before z, y, x of length 1 are supported")
        dtype = np.dtype(arr.dtype)
        if dtype.kind not in "biuf":
            raise InputError(root / layout.dataset, f"unsupported data type {dtype}")
        policy = self.options.missing_chunks
        check = policy == "error" or (policy == "auto" and bool(layout.stack3d.get("one_chunk_per_slice")))
        image = _Image(root, layout, shape[-3], (shape[-2], shape[-1]), dtype.newbyteorder("=").name, check)
        self._cache[channel] = image
        return image

    def names(self, channel: str) -> tuple[str, ...]:
        """The slice names stored by stack3d, else ``slice_0000.tif`` ..."""
        img = self._image(channel)
        names = img.layout.stack3d.get("names")
        if isinstance(names, list) and len(names) == img.n and all(isinstance(s, str) for s in names):
            if len(set(names)) == img.n:
                return tuple(names)
        return default_names(img.n)

    def meta(self, channel: str) -> StackMeta:
        """n, shape, dtype; pixel size from the scale (µm); z positions and instrument from
        ``attributes.stack3d`` when present."""
        img = self._image(channel)
        info = img.layout.stack3d
        z = info.get("z_positions")
        z_positions = None
        if isinstance(z, list) and len(z) == img.n and all(isinstance(v, int | float) for v in z):
            z_positions = tuple(float(v) for v in z)
        instrument = info.get("instrument")
        return StackMeta(
            n=img.n,
            shape=img.shape,
            dtype=img.dtype,
            pixel_size=as_triple(self.options.pixel_size) or img.layout.scale,
            unit="um",
            z_positions=z_positions,
            instrument=dict(instrument) if isinstance(instrument, Mapping) else {},
        )

    def describe(self, channel: str, index: int) -> str:
        """``<image folder>/<dataset> [slice <index>]``."""
        img = self._cache.get(channel)
        folder = img.root / img.layout.dataset if img else self.image_dir(channel)
        return f"{folder} [slice {index}]"

    def read(self, channel: str, index: int) -> np.ndarray:
        """Slice ``index`` along z, shape ``(rows, columns)``."""
        img = self._image(channel)
        if not 0 <= index < img.n:
            raise IndexError(f"slice index {index} out of range 0..{img.n - 1}")
        folder = img.root / img.layout.dataset
        arr = _open_array(folder)
        where = (*img.layout.selection[:-3], index, None, None)
        if img.check_chunks:
            for chunk in _chunk_files(arr, folder, where):
                if not chunk.is_file():
                    raise InputError(chunk, f"chunk of slice {index} is missing (deleted or never written)")
        selection = tuple(slice(None) if s is None else s for s in where)
        try:
            data = arr[selection]
        except Exception as exc:  # codec errors on corrupt or truncated chunks
            raise InputError(folder, f"slice {index}: cannot decode its chunk ({type(exc).__name__}: {exc})") from exc
        return to_native(np.asarray(data))


def _compressors(options: OmeZarrWriterOptions) -> Any:
    zarr = require("zarr", "OME-Zarr")
    if options.compression == "zstd":
        return zarr.codecs.ZstdCodec(level=options.level, checksum=True)
    if options.compression == "blosc":
        return zarr.codecs.BloscCodec(cname="zstd", clevel=options.level, shuffle="shuffle")
    return None


class OmeZarrWriter(StackWriter):
    """Writes one OME-Zarr 0.5 image group at ``path`` (e.g. ``result.ome.zarr``).

    * ``__init__`` (driver): creates the group (NGFF metadata, ``complete: false``) and the
      array ``s0`` of shape ``(n, rows, cols)``, chunks ``(1, rows, cols)``, in the staging
      folder ``.<name>.partial``.
    * :meth:`write` (any process): ``s0[index] = image``; the chunk is written even when
      it equals the fill value, so a missing chunk always means a damaged image.
    * :meth:`commit` (driver): checks that every chunk exists, sets ``complete: true`` and
      renames the folder to ``path`` (an older result is moved aside and deleted).
      :meth:`abort` removes the staging folder.
    """

    name = "ome_zarr"
    description = "OME-Zarr 0.5 image (Zarr v3), one chunk per slice, zstd; voxel size in micrometer"
    Options = OmeZarrWriterOptions
    suffixes = ZARR_SUFFIXES

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: StackMeta,
        names: Sequence[str],
        options: Any = None,
    ) -> None:
        super().__init__(path, meta, names, options)
        start_writer(self)
        rows, cols = meta.shape
        if self.options.compression == "blosc" and rows * cols * np.dtype(meta.dtype).itemsize > _BLOSC_MAX:
            raise ValueError(f"{self.path}: a slice exceeds blosc's 2 GiB block limit; use compression = 'zstd'")
        try:
            pixel = [to_um(v, meta.unit) for v in meta.pixel_size] if meta.pixel_size is not None else None
            z_um = [to_um(v, meta.unit) for v in meta.z_positions] if meta.z_positions is not None else None
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None
        if z_um is not None and len(z_um) != meta.n:
            raise ValueError(f"{self.path}: {len(z_um)} z positions for {meta.n} slices")
        label = self.path.name
        for suffix in ZARR_SUFFIXES:
            if label.lower().endswith(suffix):
                label = label[: -len(suffix)]
                break
        self.stack3d_info = {
            "format": 1,
            "dtype": np.dtype(meta.dtype).name,
            "names": [str(s) for s in self.names],
            "z_positions": z_um,
            "instrument": jsonable(dict(meta.instrument)),
            "one_chunk_per_slice": True,
            "complete": False,
        }
        zarr = require("zarr", "OME-Zarr")
        self.staging = staging_dir(self.path)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.create_group(
            store=str(self.staging), zarr_format=3, attributes=image_attributes(label, pixel, z_um, self.stack3d_info)
        )
        group.create_array(
            DATASET,
            shape=(meta.n, rows, cols),
            chunks=(1, rows, cols),
            dtype=np.dtype(meta.dtype),
            compressors=_compressors(self.options),
            fill_value=0,
            dimension_names=["z", "y", "x"],
        )

    def write(self, index: int, image: np.ndarray, extras: Mapping[str, Any]) -> None:
        """Write slice ``index`` (shape ``meta.shape``, dtype ``meta.dtype``): one chunk."""
        image = check_slice(self.path, self.meta, index, image)
        if not self.staging.is_dir():
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        zarr = require("zarr", "OME-Zarr")
        arr = zarr.open_array(store=str(self.staging / DATASET), mode="r+")
        arr.with_config({"write_empty_chunks": True})[index] = image

    def commit(self) -> None:
        """Check that every slice was written, mark the image complete, publish it."""
        if not self.staging.is_dir():
            raise RuntimeError(f"{self.path}: nothing staged (already committed or aborted?)")
        zarr = require("zarr", "OME-Zarr")
        folder = self.staging / DATASET
        arr = zarr.open_array(store=str(folder), mode="r")
        missing = [i for i in range(self.meta.n) if not all(f.is_file() for f in _chunk_files(arr, folder, (i, None, None)))]
        if missing:
            raise RuntimeError(
                f"{self.path}: {len(missing)} of {self.meta.n} slices were never written (first: {missing[0]})"
            )
        group = zarr.open_group(store=str(self.staging), mode="r+")
        group.attrs.update({STACK3D_KEY: {**self.stack3d_info, "complete": True}})
        publish(self.staging, self.path)

    def abort(self) -> None:
        """Remove the staging folder; :attr:`path` is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
