"""The whole stack into one multi-page TIFF (or BigTIFF) file: writer ``multipage_tiff``.

Several processes cannot append pages to one TIFF at the same time (every page's IFD
points to the next one), so the writer works in two phases:

1. :meth:`MultipageTiffWriter.write`, in any process: slice ``index`` goes to the staging
   folder ``.<name>.partial/`` as ``<index>.npy`` (raw pixels, written to a temporary name
   and renamed) with its TIFF extras beside it (``<index>.extras.pkl``, only the
   ``tiff_*`` keys, see :mod:`stack3d_io._tiffutil`).
2. :meth:`MultipageTiffWriter.commit`, on the driver: streams the staged slices in index
   order into ``.<name>.partial/assembled.tif``, one page per slice and one slice in
   memory at a time, then renames it to ``path`` (atomic on one file system) and removes
   the staging folder.

The staged slices take as much disk space as the uncompressed stack, and the assembly
runs on the driver after the workers are done (its time grows with the stack size).

Pages: one 2D greyscale page per slice (``photometric = minisblack``), no ImageJ or
tifffile JSON description, so :class:`~stack3d_io.multipage_tiff.MultipageTiffReader`
(and tifffile's generic series) sees one series of ``n`` pages. Each page carries its
input's private tags. All pages share one compression (tifffile keeps a series only
across pages with the same compression): the ``compression`` option, else that of
slice 0. Resolution: ``XResolution = YResolution`` unit centimetre, pixels per cm
``= 1e4 / pixel size in µm`` from ``meta.pixel_size`` (the stack's current voxel size,
which can differ from the input's tags after binning); when it is unknown, the input
page's resolution tags are carried. The byte order is that of slice 0's input.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from stack3d_core.stackio import StackMeta, StackWriter

from ._tiffutil import PRIVATE_TAG_MIN, TIFF_SUFFIXES, can_encode, compression_code, to_native
from ._writeutil import check_slice, publish, staging_dir, start_writer, to_um

__all__ = ["MultipageTiffWriter"]

_CLASSIC_LIMIT = 2**32 - 2**25  # bytes: keep a 32 MiB margin below the classic TIFF limit
_PAGE_OVERHEAD = 4096  # bytes per page for its IFD and tags, besides private tag values
_RATIONAL_MAX = 2**32 - 1


@attrs.frozen(kw_only=True)
class MultipageTiffWriterOptions:
    """Options of :class:`MultipageTiffWriter` (the ``[output]`` table)."""

    compression: str | None = attrs.field(
        default=None,
        metadata={
            "doc": "TIFF compression of every page: None uses slice 0's input compression; "
            "'none' writes uncompressed; or a tifffile name such as 'zlib' (Adobe deflate), "
            "'lzma', 'zstd' (LZW, PackBits and JPEG need the imagecodecs package).",
            "unit": "",
        },
    )
    bigtiff: Literal["auto", "always", "never"] = attrs.field(
        default="auto",
        metadata={
            "doc": "write a BigTIFF: 'auto' when the stack (uncompressed, with tags) could pass "
            "4 GiB, 'always', or 'never' (classic TIFF; fails past 4 GiB).",
            "unit": "",
        },
    )

    def validate(self) -> list[str]:
        """Messages about invalid values (empty when fine)."""
        issues = []
        try:
            code = compression_code(self.compression)
            if not can_encode(code):
                issues.append(f"compression: {self.compression!r} needs the 'imagecodecs' package")
        except ValueError as exc:
            issues.append(f"compression: {exc}")
        if self.bigtiff not in ("auto", "always", "never"):
            issues.append(f"bigtiff: expected 'auto', 'always' or 'never', got {self.bigtiff!r}")
        return issues


def _rational(value: Fraction) -> tuple[int, int]:
    """``value`` as a TIFF RATIONAL ``(num, den)``: exact when both terms fit 32 bits
    (``1e4 / 0.00345 = 200000000 / 69``), else the closest fraction that fits."""
    if value.numerator > _RATIONAL_MAX or value.denominator > _RATIONAL_MAX:
        value = value.limit_denominator(max(1, int(_RATIONAL_MAX / max(1.0, float(value)))))
    return value.numerator, value.denominator


def resolution_tags(pixel_size: Sequence[float] | None, unit: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``((x num, den), (y num, den))`` in pixels per centimetre from an ``(x, y, z)`` voxel
    size, or ``None`` when unknown. 1 cm = 10⁴ µm, so pixels/cm = ``1e4 / size_um``."""
    if pixel_size is None:
        return None
    try:
        x_um, y_um = to_um(pixel_size[0], unit), to_um(pixel_size[1], unit)
    except ValueError:
        return None
    if not (x_um > 0 and y_um > 0):
        return None
    return _rational(Fraction(10**4) / Fraction(repr(x_um))), _rational(Fraction(10**4) / Fraction(repr(y_um)))


class MultipageTiffWriter(StackWriter):
    """Writes every slice as one page of a single TIFF / BigTIFF file at ``path``
    (e.g. ``result.tif``); see the module doc for staging and assembly."""

    name = "multipage_tiff"
    description = "one multi-page TIFF / BigTIFF file, a page per slice, assembled at commit"
    Options = MultipageTiffWriterOptions
    suffixes = TIFF_SUFFIXES

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: StackMeta,
        names: Sequence[str],
        options: Any = None,
    ) -> None:
        super().__init__(path, meta, names, options)
        start_writer(self)
        self.staging = staging_dir(self.path)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)

    def _pixels(self, index: int) -> Path:
        return self.staging / f"{index:08d}.npy"

    def _extras(self, index: int) -> Path:
        return self.staging / f"{index:08d}.extras.pkl"

    def write(self, index: int, image: np.ndarray, extras: Mapping[str, Any]) -> None:
        """Stage slice ``index`` (raw ``.npy``) and its TIFF extras."""
        image = check_slice(self.path, self.meta, index, image)
        if not self.staging.is_dir():
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        kept = {k: v for k, v in extras.items() if k.startswith("tiff_")}
        if kept:
            tmp = self._extras(index).with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, self._extras(index))
        else:
            self._extras(index).unlink(missing_ok=True)
        dest = self._pixels(index)
        tmp = dest.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(to_native(image)), allow_pickle=False)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _load_extras(self, index: int) -> dict[str, Any]:
        path = self._extras(index)
        if not path.is_file():
            return {}
        return pickle.loads(path.read_bytes())  # written by write() above, never user input

    def _use_bigtiff(self, extras0: Mapping[str, Any]) -> bool:
        if self.options.bigtiff != "auto":
            return self.options.bigtiff == "always"
        rows, cols = self.meta.shape
        pixels = self.meta.n * rows * cols * np.dtype(self.meta.dtype).itemsize
        tags = sum(p.stat().st_size for p in self.staging.glob("*.extras.pkl"))
        return pixels * 1.01 + tags + self.meta.n * _PAGE_OVERHEAD > _CLASSIC_LIMIT

    def commit(self) -> None:
        """Assemble the staged slices into one file, page by page, and publish it."""
        import tifffile

        if not self.staging.is_dir():
            raise RuntimeError(f"{self.path}: nothing staged (already committed or aborted?)")
        missing = [i for i in range(self.meta.n) if not self._pixels(i).is_file()]
        if missing:
            raise RuntimeError(
                f"{self.path}: {len(missing)} of {self.meta.n} slices were never written (first: {missing[0]})"
            )
        extras0 = self._load_extras(0)
        if self.options.compression is not None:
            code = compression_code(self.options.compression)
        else:
            code = compression_code(extras0.get("tiff_compression"))
        if not can_encode(code):
            name = tifffile.COMPRESSION(code).name
            raise ValueError(
                f"{self.path}: cannot write TIFF compression {name} (code {code}) of slice 0 without the "
                "'imagecodecs' package; install it or set the writer option compression (e.g. \"zlib\")"
            )
        byteorder = ">" if extras0.get("tiff_byteorder") == ">" else "<"
        from_size = resolution_tags(self.meta.pixel_size, self.meta.unit)
        out = self.staging / "assembled.tif"
        with tifffile.TiffWriter(out, bigtiff=self._use_bigtiff(extras0), byteorder=byteorder) as tw:
            for i in range(self.meta.n):
                image = np.load(self._pixels(i), allow_pickle=False)
                extras = extras0 if i == 0 else self._load_extras(i)
                kwargs: dict[str, Any] = {}
                if from_size is not None:
                    kwargs["resolution"], kwargs["resolutionunit"] = from_size, 3
                elif extras.get("tiff_resolution") is not None:
                    res = extras["tiff_resolution"]
                    kwargs["resolution"] = (tuple(res[0]), tuple(res[1]))
                    kwargs["resolutionunit"] = int(res[2])
                tags = [tuple(t) for t in extras.get("tiff_extratags", ()) if int(t[0]) > PRIVATE_TAG_MIN]
                tw.write(
                    image,
                    photometric="minisblack",
                    compression=code,
                    metadata=None,
                    software=False,
                    extratags=tags,
                    **kwargs,
                )
                del image
        publish(out, self.path)
        shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self) -> None:
        """Remove the staging folder; :attr:`path` is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)
