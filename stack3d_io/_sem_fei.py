"""FEI / Thermo Fisher metadata: TIFF tags 34682 (``FEI_HELIOS``) and 34680 (``FEI_SFEG``).

tifffile parses both into a dict of INI sections (``"Scan"``, ``"EBeam"``, ``"IBeam"``,
``"Beam"``, ``"System"``, ``"Stage"``, ``"Detectors"``, ``"Image"``, ...) holding SI values:
lengths in metres, voltages in volts, currents in amperes, times in seconds, stage angles
in radians. The imaging beam is ``Beam.Beam`` (``"EBeam"`` or ``"IBeam"``); its section
holds HV, WD and the beam current.

Pixel size: ``Scan.PixelWidth`` (x, column spacing) and ``Scan.PixelHeight`` (y), in m;
the beam's scan section (``Beam.Scan``, e.g. ``"EScan"``) when ``Scan`` lacks them.
FEI images usually carry a data bar below the image: its height (rows of the stored image
beyond ``Image.ResolutionY``) is recorded as ``databar_rows``; it is not cropped here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._sem_common import number

__all__ = ["SOURCE_PREFIX", "fei_instrument", "fei_pixel_size"]

SOURCE_PREFIX = "FEI"
"""Prefix of ``pixel_size_source`` values set by this module."""


def _section(md: Mapping[str, Any], name: Any) -> Mapping[str, Any]:
    section = md.get(str(name)) if name else None
    return section if isinstance(section, Mapping) else {}


def _first(*values: Any) -> float | None:
    return next((v for v in (number(x) for x in values) if v is not None), None)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).replace('"', "").strip()
    return text or None


def fei_pixel_size(md: Mapping[str, Any]) -> tuple[tuple[float, float] | None, str | None]:
    """``((x, y) in µm, source)`` from ``Scan.PixelWidth/PixelHeight`` (or the beam's scan
    section), or ``(None, None)``."""
    beam_scan = _section(md, _section(md, "Beam").get("Scan"))
    for name, section in (("Scan", _section(md, "Scan")), (_section(md, "Beam").get("Scan"), beam_scan)):
        x = number(section.get("PixelWidth"))
        if x is None or x <= 0:
            continue
        y = number(section.get("PixelHeight"))
        y = y if y is not None and y > 0 else x
        return (x * 1e6, y * 1e6), f"{SOURCE_PREFIX}:{name}.PixelWidth/PixelHeight"
    return None, None


def fei_instrument(md: Mapping[str, Any], rows: int) -> dict[str, Any]:
    """Normalised instrument keys (absent fields are left out): microscope, serial_number,
    beam, detector, detector_mode, eht_kv, wd_mm, dwell_us, probe_current_na,
    field_of_view_um, stage_tilt_deg, databar_rows, acquired.

    :param rows: rows of the stored image (to measure the data bar).
    """
    out: dict[str, Any] = {"vendor": "FEI"}
    system, beam_info = _section(md, "System"), _section(md, "Beam")
    named_beam = _text(beam_info.get("Beam"))
    beam_name = named_beam or "EBeam"
    beam = _section(md, beam_name)
    scan = _section(md, "Scan")
    beam_scan = _section(md, beam_info.get("Scan"))
    stage, image = _section(md, "Stage"), _section(md, "Image")
    detectors, user = _section(md, "Detectors"), _section(md, "User")
    for key, value in (("microscope", system.get("SystemType")), ("serial_number", system.get("Dnumber")),
                       ("detector", detectors.get("Name")), ("detector_mode", detectors.get("Mode"))):
        text = _text(value)
        if text:
            out[key] = text
    if named_beam:
        out["beam"] = named_beam
    hv = _first(beam.get("HV"), beam_info.get("HV"))
    wd = _first(beam.get("WD"), stage.get("WorkingDistance"))
    dwell = _first(scan.get("Dwelltime"), beam_scan.get("Dwell"))
    current = _first(beam.get("BeamCurrent"))
    values = {
        "eht_kv": None if hv is None else hv * 1e-3,
        "wd_mm": None if wd is None else wd * 1e3,
        "dwell_us": None if dwell is None else dwell * 1e6,
        "probe_current_na": None if current is None else current * 1e9,
    }
    out.update({k: v for k, v in values.items() if v is not None})
    fov = [_first(scan.get("HorFieldsize"), beam.get("HFW")), _first(scan.get("VerFieldsize"), beam.get("VFW"))]
    if all(v is not None for v in fov):
        out["field_of_view_um"] = [v * 1e6 for v in fov]  # type: ignore[operator]
    tilt = _first(stage.get("StageT"))
    if tilt is not None:
        out["stage_tilt_deg"] = math.degrees(tilt)
    image_rows = number(image.get("ResolutionY"))
    if image_rows is not None and 0 < image_rows < rows:
        out["databar_rows"] = int(rows - image_rows)
    when = " ".join(t for t in (_text(user.get("Date")), _text(user.get("Time"))) if t)
    if when:
        out["acquired"] = when
    return out
