"""Instrument metadata of SEM / FIB-SEM TIFFs, for the TIFF readers' ``StackMeta``.

Sources, read from the first slice's tags (no pixels are read):

* Zeiss SmartSEM: tag 34118 ``CZ_SEM`` (:mod:`._sem_zeiss`, incl. the stored-image pixel
  size rule: ``ap_pixel_size`` refers to a 1024-wide display, not to the image);
* Zeiss Atlas 5 / Fibics: the per-slice XML of tag 51023 and the run's
  ``Atlas3D.a3d-setup`` file in the project folder (:mod:`._fibics`);
* FEI / Thermo Fisher: tags 34682 / 34680 (:mod:`._sem_fei`).

What ends up in :class:`~stack3d_core.stackio.StackMeta` (see :func:`stack_fields`):

``pixel_size`` (µm): the reader's ``pixel_size`` option, else the instrument's, else None.
    Instrument x/y precedence: Fibics ``Scan/Ux..Vy`` of the first slice, the setup's
    ``PixelSize``, CZ_SEM, FEI. ``z`` is the Atlas slice interval (setup file) when known,
    else NaN (the instrument gave x and y only; the engine's ``[input] pixel_size`` uses
    NaN the same way). ``instrument["pixel_size_source"]`` names the field used.
``z_positions`` (µm): the Fibics ``ATLAS3D/Slice/ZPos`` of *every* slice (one tag read
    per slice), else the reader's file-name z, else None; ``instrument["z_source"]`` is
    ``"instrument"`` or ``"names"`` (absent when there are none).
``instrument``: normalised keys (``vendor``, ``microscope``, ``detector``, ``eht_kv``,
    ``wd_mm``, ``dwell_us``, ``probe_current_na``, ``field_of_view_um`` ...; see
    ``docs/formats/sem_metadata.md``), ``metadata_formats`` (which sources were found),
    ``raw`` (every vendor field, per source) and ``metadata_warnings``.

A tag or file that cannot be parsed gives a :class:`SemMetadataWarning` naming the file and
is skipped; it never makes ``meta`` fail.
"""

from __future__ import annotations

import math
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import _fibics, _sem_fei, _sem_zeiss
from ._sem_common import SemMetadataWarning, plain, warn

__all__ = [
    "InstrumentMeta",
    "SemMetadataWarning",
    "fibics_z_from_files",
    "fibics_z_from_pages",
    "read_page_metadata",
    "stack_fields",
]

CZ_SEM_TAG = 34118
FEI_TAGS = (34682, 34680)  # FEI_HELIOS, FEI_SFEG
AGREEMENT = 0.01
"""Relative difference above which two pixel sizes of one file are said to disagree."""


@attrs.frozen
class InstrumentMeta:
    """What one TIFF page (the first slice) and the setup file say.

    :param pixel_size: ``(x, y, z)`` in µm (z NaN when unknown), or None.
    :param instrument: normalised keys, ``raw`` and ``metadata_warnings``.
    :param slice_z: the page has a Fibics ``ZPos``: per-slice z is worth reading.
    """

    pixel_size: tuple[float, float, float] | None
    instrument: dict[str, Any] = attrs.field(eq=False)
    slice_z: bool = False


def _tag_value(page: Any, code: int, path: Path, problems: list[str]) -> Any:
    try:
        return page.tags.valueof(code)
    except Exception as exc:  # tifffile raises many kinds on damaged tags
        warn(f"{path}: TIFF tag {code} cannot be read ({type(exc).__name__}: {exc}); ignored", problems)
        return None


def _fibics_page(page: Any, path: Path, problems: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    value = _tag_value(page, _fibics.FIBICS_TAG, path, problems)
    if value is None:
        return {}, {}
    try:
        root = _fibics.parse_xml(value)
    except (ET.ParseError, ValueError) as exc:
        warn(f"{path}: tag 51023 (Fibics XML) is not well-formed XML ({exc}); its metadata are ignored",
             problems)
        return {}, {}
    return _fibics.slice_fields(root), _fibics.flatten(root)


def _setup(setup_dirs: Sequence[Path], problems: list[str]) -> tuple[Path | None, dict[str, Any]]:
    path = _fibics.find_setup(setup_dirs)
    if path is None:
        return None, {}
    try:
        return path, _fibics.read_setup(path)
    except (OSError, ET.ParseError, ValueError) as exc:
        warn(f"{path}: cannot be read as Atlas 3D setup XML ({exc}); ignored", problems)
        return None, {}


def _agree(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(abs(u - v) <= AGREEMENT * max(abs(u), abs(v)) for u, v in zip(a, b, strict=True))


def read_page_metadata(
    page: Any,
    path: Path,
    shape: tuple[int, int],
    setup_dirs: Sequence[Path] = (),
    channel: str | None = None,
) -> InstrumentMeta:
    """Instrument metadata of one TIFF page (``tifffile.TiffPage``) of ``path``.

    :param shape: ``(rows, columns)`` of the stored image (the Zeiss pixel size depends
        on the columns; the FEI data bar on the rows).
    :param setup_dirs: folders searched, in order, for ``Atlas3D.a3d-setup``.
    :param channel: the channel (folder) name; it is the detector when the setup file
        lists it among its detectors and the slice names none.
    """
    path = Path(path)
    rows, cols = shape
    problems: list[str] = []
    formats: list[str] = []
    raw: dict[str, Any] = {}
    instrument: dict[str, Any] = {}
    pixels: list[tuple[tuple[float, float], str]] = []  # in precedence order

    fei = next((v for v in (_tag_value(page, c, path, problems) for c in FEI_TAGS) if v is not None), None)
    if fei is not None and not isinstance(fei, Mapping):
        warn(f"{path}: FEI metadata tag could not be parsed; ignored", problems)
        fei = None
    zeiss = _tag_value(page, CZ_SEM_TAG, path, problems)
    if zeiss is not None and not isinstance(zeiss, Mapping):
        warn(f"{path}: CZ_SEM tag 34118 could not be parsed; ignored", problems)
        zeiss = None
    fib, fib_raw = _fibics_page(page, path, problems)
    setup_path, setup = _setup(setup_dirs, problems)

    if fib_raw:
        formats.append("FibicsXML")
        raw["FibicsXML"] = fib_raw
        if "pixel_xy_um" in fib:
            pixels.append((fib["pixel_xy_um"], "FibicsXML:Scan/Ux,Uy,Vx,Vy"))
    if setup:
        formats.append(_fibics.SETUP_NAME)
        raw[_fibics.SETUP_NAME] = setup.pop("raw", {})
        if "pixel_xy_um" in setup:
            which = "DefaultAcquisition/PixelSize" if setup["atlas_setup_layout"] == "new" else \
                "FibicsRasterInfo/PixelSizeX"
            pixels.append((setup["pixel_xy_um"], f"{_fibics.SETUP_NAME}:{which}"))
    if zeiss is not None:
        formats.append("CZ_SEM")
        raw["CZ_SEM"] = _sem_zeiss.zeiss_raw(zeiss)
        value, source, candidates, disagree = _sem_zeiss.zeiss_pixel_size(zeiss, cols)
        if candidates:
            instrument["pixel_size_candidates_um"] = candidates
        if value is not None and source is not None:
            pixels.append(((value, value), source))
            if disagree:
                warn(f"{path}: CZ_SEM pixel-size fields disagree with {source} = {value:.6g} um: "
                     f"{'; '.join(disagree)}", problems)
    if fei is not None:
        formats.append("FEI")
        raw["FEI"] = plain(fei)
        xy, source = _sem_fei.fei_pixel_size(fei)
        if xy is not None and source is not None:
            pixels.append((xy, source))

    resolution = _resolution_cm(page)
    if resolution is not None:  # lowest precedence: what stack3d's own writers store
        pixels.append((resolution, "TIFF resolution tags (pixels per cm)"))

    # normalised keys: lower precedence first, so that higher precedence overwrites
    if fei is not None:
        instrument.update(_sem_fei.fei_instrument(fei, rows))
    if zeiss is not None:
        instrument.update(_sem_zeiss.zeiss_instrument(zeiss))
    if setup or fib_raw:
        instrument["vendor"] = "Zeiss"
        instrument["acquisition_software"] = "Atlas (Fibics)"
    instrument.update(_setup_keys(setup, setup_path, shape, channel))
    instrument.update(_slice_keys(fib))

    pixel_size: tuple[float, float, float] | None = None
    if pixels:
        (x, y), source = pixels[0]
        z = setup.get("slice_interval_um", math.nan)
        pixel_size = (float(x), float(y), float(z))
        instrument["pixel_size_source"] = source
        others = [f"{s} = {v[0]:.6g} x {v[1]:.6g} um" for v, s in pixels[1:2] if not _agree(v, (x, y))]
        if others:
            warn(f"{path}: pixel size {x:.6g} x {y:.6g} um from {source} differs from {others[0]}; "
                 f"{source} is used", problems)
    if formats:
        instrument["metadata_formats"] = formats
        instrument["raw"] = raw
    if problems:
        instrument["metadata_warnings"] = list(problems)
    return InstrumentMeta(pixel_size, instrument, "zpos_um" in fib)


def _resolution_cm(page: Any) -> tuple[float, float] | None:
    """Pixel size (x, y) in µm from X/YResolution when ResolutionUnit is centimetre (3).

    Inch-based resolutions are ignored: they are usually a display DPI (72, or FEI's 64),
    not a physical pixel size."""
    try:
        if page.tags.valueof(296) != 3:
            return None
        sizes = []
        for code in (282, 283):
            value = page.tags.valueof(code)
            per_cm = value[0] / value[1] if isinstance(value, tuple) else float(value)
            if not per_cm > 0:
                return None
            sizes.append(1e4 / per_cm)
        return sizes[0], sizes[1]
    except (AttributeError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None


def _setup_keys(setup: Mapping[str, Any], path: Path | None, shape: tuple[int, int],
                channel: str | None) -> dict[str, Any]:
    if not setup or path is None:
        return {}
    out: dict[str, Any] = {"atlas_setup_file": str(path)}
    for key in ("atlas_setup_layout", "job_name", "detectors", "slice_interval_um", "dwell_us",
                "line_averaging", "mill_to_image_angle_deg"):
        if key in setup:
            out[key] = setup[key]
    if "fov_um" in setup:
        rows, cols = shape
        fov = float(setup["fov_um"])
        out["field_of_view_um"] = [fov, fov * rows / cols if cols else fov]
    if channel and channel in setup.get("detectors", ()):
        out["detector"] = channel
    return out


def _slice_keys(fib: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("microscope", "detector", "dwell_us", "probe_current_na", "image_size_px", "bounding_box_px")
    return {k: fib[k] for k in keys if k in fib}


def _zpos_of(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return _fibics.slice_zpos(_fibics.parse_xml(value))
    except (ET.ParseError, ValueError):
        return None


def _give_up(where: str, index: int, n: int, problems: list[str] | None) -> None:
    warn(f"{where}: no readable Fibics z position (tag 51023, ATLAS3D/Slice/ZPos) in slice {index} of "
         f"{n}; the instrument z positions are not used", problems)


def fibics_z_from_files(paths: Sequence[Path], problems: list[str] | None = None) -> tuple[float, ...] | None:
    """``ZPos`` (µm) of page 0 of every file, or None (with a warning naming the first
    file without one). Reads the tags only: about 0.2 ms per small file."""
    import tifffile

    out: list[float] = []
    for i, path in enumerate(paths):
        try:
            with tifffile.TiffFile(path) as tif:
                z = _zpos_of(tif.pages.first.tags.valueof(_fibics.FIBICS_TAG))
        except Exception:  # unreadable file: reading its pixels will report it
            z = None
        if z is None:
            _give_up(str(path), i, len(paths), problems)
            return None
        out.append(z)
    return tuple(out)


def fibics_z_from_pages(tif: Any, indices: Sequence[int], path: Path,
                        problems: list[str] | None = None) -> tuple[float, ...] | None:
    """``ZPos`` (µm) of the pages ``indices`` of an open multi-page TIFF, or None."""
    out: list[float] = []
    for i, index in enumerate(indices):
        try:
            z = _zpos_of(tif.pages[index].tags.valueof(_fibics.FIBICS_TAG))
        except Exception:
            z = None
        if z is None:
            _give_up(f"{path} [page {index}]", i, len(indices), problems)
            return None
        out.append(z)
    return tuple(out)


def stack_fields(
    option_pixel_size: tuple[float, float, float] | None,
    info: InstrumentMeta | None,
    instrument_z: Sequence[float] | None,
    names_z: Sequence[float] | None,
    problems: Sequence[str] = (),
) -> tuple[tuple[float, float, float] | None, tuple[float, ...] | None, dict[str, Any]]:
    """``(pixel_size, z_positions, instrument)`` for ``StackMeta`` by the precedence rules.

    :param option_pixel_size: the reader's ``pixel_size`` option (µm), which wins.
    :param info: :func:`read_page_metadata` of the first slice (None: not read).
    :param instrument_z: per-slice Fibics z (µm) of every slice, or None.
    :param names_z: z parsed from the slice names (µm), or None.
    :param problems: warnings raised after ``info`` was made (per-slice z).
    """
    instrument: dict[str, Any] = dict(info.instrument) if info is not None else {}
    if option_pixel_size is not None:
        pixel_size: tuple[float, float, float] | None = tuple(float(v) for v in option_pixel_size)  # type: ignore[assignment]
        instrument["pixel_size_source"] = "option pixel_size"
    else:
        pixel_size = info.pixel_size if info is not None else None
    z_positions: tuple[float, ...] | None = None
    if instrument_z is not None:
        z_positions = tuple(float(v) for v in instrument_z)
        instrument["z_source"] = "instrument"
        steps = [b - a for a, b in zip(z_positions, z_positions[1:])]
        if steps:
            instrument["z_spacing_median_um"] = float(statistics.median(steps))
    elif names_z is not None:
        z_positions = tuple(float(v) for v in names_z)
        instrument["z_source"] = "names"
    if problems:
        instrument["metadata_warnings"] = [*instrument.get("metadata_warnings", ()), *problems]
    return pixel_size, z_positions, instrument
