"""Zeiss Atlas 5 / Fibics metadata: the per-slice XML of TIFF tag 51023 and the run's
``Atlas3D.a3d-setup`` file. Paths are ElementTree paths from the root element.

Per-slice XML (tag 51023, ``FibicsXML``; ASCII text starting with an XML declaration):

* ``Scan/Ux``, ``Scan/Uy``, ``Scan/Vx``, ``Scan/Vy``: the column and row step vectors of
  the stored image, µm; x pixel size = ``hypot(Ux, Uy)``, y = ``hypot(Vx, Vy)``, used only
  when all four elements are numbers;
* ``Scan/Dwell``: dwell time, µs;
* ``Image/Width``, ``Image/Height``: raster size; ``Image/BoundingBox.Left`` (``.Right``,
  ``.Top``, ``.Bottom``): the imaged region, pixels;
* ``Image/Detector``: detector name; ``Image/Machine``: microscope;
* ``ATLAS3D/Slice/ZPos``: z position of the slice, µm (absolute);
  ``ATLAS3D/Slice/ZIndex``: slice number; ``ATLAS3D/Slice/SEMCorrectionX`` / ``Y``;
* ``BeamInfo/item[@name]``: beam readings as text, e.g. ``name="Ext I"`` (current,
  ``"2.5 nA"``).

``Atlas3D.a3d-setup`` (XML, ISO-8859-1), in two layouts:

* new (Atlas 5; its root element has attributes): ``Settings/Imaging/DefaultAcquisition/``
  ``PixelSize``, ``FOV`` and ``Interval/Distance/Interval`` (slice thickness), µm;
* old (root without attributes): ``Settings/Imaging/FibicsRasterInfo/PixelSizeX`` (and
  ``PixelSizeY``), ``Settings/Imaging/FOV``, ``Settings/Imaging/Interval``, µm.

Both: detectors ``Settings/Imaging/Detector`` (A) and ``Settings/Imaging/DetectorB`` (B),
``JobName``, raster ``Settings/Imaging/FibicsRasterInfo/Dwell`` (µs) and ``LineAveraging``.
The layout is told by which elements exist (new paths first, old ones for what is missing),
not by the root's attributes, and is recorded as ``"new"`` or ``"old"``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._sem_common import current_na, number

__all__ = [
    "FIBICS_TAG",
    "SETUP_NAME",
    "find_setup",
    "flatten",
    "parse_xml",
    "read_setup",
    "slice_fields",
    "slice_zpos",
]

FIBICS_TAG = 51023
"""TIFF tag of the per-slice Fibics XML."""

SETUP_NAME = "Atlas3D.a3d-setup"
"""File name of the Atlas 3D run setup, in the project folder."""

_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.ASCII)


def parse_xml(value: str | bytes) -> ET.Element:
    """The root element of a tag or file holding XML (its declaration is dropped).

    :raises ET.ParseError: the text is not well-formed XML.
    """
    if isinstance(value, bytes | bytearray):
        try:
            return ET.fromstring(bytes(value))  # honours the declared encoding
        except ET.ParseError:
            value = bytes(value).decode("latin-1")
    text = _DECLARATION.sub("", str(value).lstrip("\ufeff"), count=1).strip("\x00 \t\r\n")
    return ET.fromstring(text)


def _float(root: ET.Element, path: str) -> float | None:
    return number(root.findtext(path))


def _int(root: ET.Element, path: str) -> int | None:
    value = _float(root, path)
    return int(value) if value is not None and value.is_integer() else None


def _str(root: ET.Element, path: str) -> str | None:
    text = root.findtext(path)
    return text.strip() if text and text.strip() else None


def slice_zpos(root: ET.Element) -> float | None:
    """``ATLAS3D/Slice/ZPos`` in µm, or None."""
    return _float(root, "ATLAS3D/Slice/ZPos")


def _scan_steps(root: ET.Element) -> tuple[float, float] | None:
    """``(hypot(Ux, Uy), hypot(Vx, Vy))`` in µm when all four elements are numbers (Atlas
    writes the four; a partial set is not trusted) and both lengths are positive."""
    values = [_float(root, f"Scan/{k}") for k in ("Ux", "Uy", "Vx", "Vy")]
    if any(v is None for v in values):
        return None
    ux, uy, vx, vy = values  # type: ignore[misc]
    x, y = math.hypot(ux, uy), math.hypot(vx, vy)
    return (x, y) if x > 0 and y > 0 else None


def _value_unit(text: str) -> float | None:
    """``"1.5 nA"`` -> 1.5 (nA); None when the text is not a number with a current unit."""
    parts = text.split()
    if len(parts) == 2:
        return current_na(parts[0], parts[1])
    return None


def slice_fields(root: ET.Element) -> dict[str, Any]:
    """Normalised fields of one slice's Fibics XML (absent ones are left out):
    ``pixel_xy_um``, ``dwell_us``, ``image_size_px``, ``bounding_box_px``, ``detector``,
    ``microscope``, ``zpos_um``, ``zindex``, ``sem_correction``, ``beam_info``,
    ``probe_current_na``."""
    out: dict[str, Any] = {}
    steps = _scan_steps(root)
    if steps is not None:
        out["pixel_xy_um"] = steps
    dwell = _float(root, "Scan/Dwell")
    if dwell is not None:
        out["dwell_us"] = dwell
    size = [_int(root, "Image/Width"), _int(root, "Image/Height")]
    if all(v is not None for v in size):
        out["image_size_px"] = size
    box = {k.lower(): _int(root, f"Image/BoundingBox.{k}") for k in ("Left", "Right", "Top", "Bottom")}
    if all(v is not None for v in box.values()):
        out["bounding_box_px"] = box
    for key, path in (("detector", "Image/Detector"), ("microscope", "Image/Machine")):
        text = _str(root, path)
        if text:
            out[key] = text
    z = slice_zpos(root)
    if z is not None:
        out["zpos_um"] = z
    zindex = _int(root, "ATLAS3D/Slice/ZIndex")
    if zindex is not None:
        out["zindex"] = zindex
    correction = [_float(root, f"ATLAS3D/Slice/SEMCorrection{a}") for a in "XY"]
    if all(v is not None for v in correction):
        out["sem_correction"] = correction
    items = {item.get("name", ""): (item.text or "").strip() for item in root.findall("BeamInfo/item")}
    items.pop("", None)
    if items:
        out["beam_info"] = items
        current = _value_unit(items.get("Ext I", ""))
        if current is not None:
            out["probe_current_na"] = current
    return out


def flatten(element: ET.Element, prefix: str = "") -> dict[str, str]:
    """Leaf texts keyed by their path (``"Image/Width"``; ``item`` elements as
    ``"BeamInfo/item[Ext I]"``; a repeated path gets ``#2``, ``#3`` ... appended)."""
    out: dict[str, str] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        name = child.tag
        if child.get("name") is not None:
            name = f"{name}[{child.get('name')}]"
        path = f"{prefix}{name}"
        if len(child):
            for key, value in flatten(child, path + "/").items():
                _put(out, key, value)
        else:
            _put(out, path, (child.text or "").strip())
    return out


def _put(out: dict[str, str], key: str, value: str) -> None:
    if key not in out:
        out[key] = value
        return
    k = 2
    while f"{key}#{k}" in out:
        k += 1
    out[f"{key}#{k}"] = value


def find_setup(folders: Iterable[Path]) -> Path | None:
    """The first ``Atlas3D.a3d-setup`` file found in ``folders`` (in order)."""
    for folder in folders:
        candidate = Path(folder) / SETUP_NAME
        if candidate.is_file():
            return candidate
    return None


def read_setup(path: Path) -> dict[str, Any]:
    """Normalised fields of an ``Atlas3D.a3d-setup`` file: ``atlas_setup_layout``,
    ``job_name``, ``detectors``, ``pixel_xy_um``, ``fov_um``, ``slice_interval_um``,
    ``dwell_us``, ``line_averaging``, ``mill_to_image_angle_deg``, and ``raw`` (the leaves
    of ``Settings/Imaging`` and ``JobName``).

    :raises OSError: the file cannot be read.
    :raises ET.ParseError: it is not well-formed XML.
    """
    root = parse_xml(Path(path).read_bytes())
    imaging = "Settings/Imaging"
    new = root.find(f"{imaging}/DefaultAcquisition") is not None
    out: dict[str, Any] = {"atlas_setup_layout": "new" if new else "old"}
    job = _str(root, "JobName")
    if job:
        out["job_name"] = job
    detectors = [d for d in (_str(root, f"{imaging}/Detector"), _str(root, f"{imaging}/DetectorB")) if d]
    if detectors:
        out["detectors"] = detectors
    raster = f"{imaging}/FibicsRasterInfo"
    pixel = _pick(root, [f"{imaging}/DefaultAcquisition/PixelSize", f"{raster}/PixelSizeX"])
    if pixel is not None and pixel > 0:
        pixel_y = _float(root, f"{raster}/PixelSizeY") if not new else None
        out["pixel_xy_um"] = (pixel, pixel_y if pixel_y and pixel_y > 0 else pixel)
    fov = _pick(root, [f"{imaging}/DefaultAcquisition/FOV", f"{imaging}/FOV"])
    if fov is not None and fov > 0:
        out["fov_um"] = fov
    interval = _pick(root, [f"{imaging}/DefaultAcquisition/Interval/Distance/Interval", f"{imaging}/Interval"])
    if interval is not None and interval > 0:
        out["slice_interval_um"] = interval
    dwell = _pick(root, [f"{imaging}/DefaultAcquisition/Dwell", f"{raster}/Dwell"])
    if dwell is not None:
        out["dwell_us"] = dwell
    averaging = _pick(root, [f"{imaging}/DefaultAcquisition/LineAveraging", f"{raster}/LineAveraging"])
    if averaging is not None:
        out["line_averaging"] = averaging
    angle = _float(root, "Settings/Options/MillToImgAngle")
    if angle is not None:
        out["mill_to_image_angle_deg"] = angle
    raw = {"JobName": job or ""}
    section = root.find(imaging)
    if section is not None:
        raw.update(flatten(section, f"{imaging}/"))
    out["raw"] = raw
    return out


def _pick(root: ET.Element, paths: list[str]) -> float | None:
    return next((v for v in (_float(root, p) for p in paths) if v is not None), None)
