"""Zeiss SmartSEM metadata: the ``CZ_SEM`` TIFF tag 34118, as parsed by tifffile.

tifffile turns the tag into a dict keyed by the lower-cased SmartSEM parameter IDs
(``ap_*`` analogue, ``dp_*`` digital, ``sv_*`` string parameters), each value a tuple
``(label, value[, unit])``; the key ``""`` holds an unnamed block of full-precision SI
numbers. See :mod:`stack3d_io.sem_metadata` for the normalised keys this module fills.

Stored-image pixel size
-----------------------
``ap_pixel_size`` ("Pixel Size") refers to a 1024-pixel-wide *display*, not to the stored
image: it is the stored pixel only when the image is 1024 pixels wide (a 2048-wide Auriga
image says 24.65 nm for a 12.33 nm pixel; a 512-wide Ultra image says 5.825 nm for an
11.65 nm pixel). The x pixel size is the first of these that exists (``width`` = stored
image columns):

1. ``ap_image_pixel_size`` ("Image Pixel Size"): the stored-image pixel (newer SmartSEM);
2. ``[""][3] * 1024 / width``: item 3 of the unnamed block is the display pixel in metres
   (the rule of hyperspy/rosettasciio);
3. ``ap_width / width``: the field of view ("Width") over the stored columns;
4. ``ap_pixel_size``, only when ``width == 1024``.

Every candidate found is recorded (µm) in ``instrument["pixel_size_candidates_um"]``; a
candidate (other than ``ap_pixel_size``) that differs from the chosen value by more than
1 % gives a warning. The y pixel size equals x (SmartSEM stores square pixels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._sem_common import current_na, length_um, number, plain, time_us, voltage_kv

__all__ = ["SOURCE_PREFIX", "zeiss_instrument", "zeiss_pixel_size", "zeiss_raw"]

SOURCE_PREFIX = "CZ_SEM"
"""Prefix of ``pixel_size_source`` values set by this module."""

DISPLAY_WIDTH = 1024
"""Width (pixels) of the display that ``ap_pixel_size`` and ``[""][3]`` refer to."""

AGREEMENT = 0.01
"""Relative difference above which two pixel-size candidates are said to disagree."""


def _entry(md: Mapping[str, Any], key: str) -> tuple[Any, Any]:
    """``(value, unit)`` of a SmartSEM parameter, ``(None, None)`` when absent."""
    item = md.get(key)
    if isinstance(item, list | tuple):
        value = item[1] if len(item) > 1 else None
        unit = item[2] if len(item) > 2 else None
        return value, unit
    return None, None


def _text(md: Mapping[str, Any], key: str) -> str | None:
    value, unit = _entry(md, key)
    if value is None or isinstance(value, bool):
        return None
    text = f"{value} {unit}".strip() if unit else str(value).strip()
    return text or None


def zeiss_pixel_size(
    md: Mapping[str, Any], width: int
) -> tuple[float | None, str | None, dict[str, float], list[str]]:
    """Stored-image x pixel size (µm) by the rule of the module doc.

    :param md: tifffile's ``sem_metadata`` dict.
    :param width: columns of the stored image.
    :returns: ``(pixel_um, source, candidates_um, disagreements)``; ``pixel_um`` is None
        when no candidate exists.
    """
    candidates: dict[str, float] = {}
    if width <= 0:
        return None, None, candidates, []
    image = length_um(*_entry(md, "ap_image_pixel_size"))
    if image is not None and image > 0:
        candidates["ap_image_pixel_size"] = image
    block = md.get("")
    if isinstance(block, list | tuple) and len(block) > 3:
        display_m = number(block[3])
        if display_m is not None and display_m > 0:
            candidates["[''][3]*1024/width"] = display_m * 1e6 * DISPLAY_WIDTH / width
    fov = length_um(*_entry(md, "ap_width"))
    if fov is not None and fov > 0:
        candidates["ap_width/width"] = fov / width
    display = length_um(*_entry(md, "ap_pixel_size"))
    if display is not None and display > 0:
        candidates["ap_pixel_size"] = display
    order = ["ap_image_pixel_size", "[''][3]*1024/width", "ap_width/width"]
    if width == DISPLAY_WIDTH:
        order.append("ap_pixel_size")
    chosen = next((k for k in order if k in candidates), None)
    if chosen is None:
        return None, None, candidates, []
    value = candidates[chosen]
    disagree = [
        f"{k} = {v:.6g} um"
        for k, v in candidates.items()
        if k != "ap_pixel_size" and abs(v - value) > AGREEMENT * value
    ]
    return value, f"{SOURCE_PREFIX}:{chosen}", candidates, disagree


def zeiss_instrument(md: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised instrument keys from tifffile's ``sem_metadata`` dict (absent fields are
    left out): microscope, detector, eht_kv, wd_mm, dwell_us, probe_current_na,
    magnification, field_of_view_um, stage_tilt_deg, tilt_correction, scan_rotation_deg,
    acquired."""
    out: dict[str, Any] = {"vendor": "Zeiss"}
    microscope = _text(md, "sv_serial_number")
    if microscope:
        out["microscope"] = microscope
    detector = _text(md, "dp_detector_type") or _text(md, "dp_detector_channel")
    if detector:
        out["detector"] = detector
    values = {
        "eht_kv": voltage_kv(*_entry(md, "ap_actualkv")),
        "wd_mm": _mm(length_um(*_entry(md, "ap_wd"))),
        "dwell_us": time_us(*_entry(md, "dp_dwell_time")),
        "probe_current_na": current_na(*_entry(md, "ap_iprobe")),
    }
    out.update({k: v for k, v in values.items() if v is not None})
    mag = _text(md, "ap_mag")
    if mag:
        out["magnification"] = mag
    fov = [length_um(*_entry(md, "ap_width")), length_um(*_entry(md, "ap_height"))]
    if all(v is not None for v in fov):
        out["field_of_view_um"] = fov
    tilt, unit = _entry(md, "ap_stage_at_t")
    if number(tilt) is not None and str(unit or "°").strip() in ("°", "deg"):
        out["stage_tilt_deg"] = number(tilt)
    correction, _ = _entry(md, "dp_tilt_correction")
    if isinstance(correction, bool):
        out["tilt_correction"] = correction
    rotation, unit = _entry(md, "ap_scanrotation")
    if number(rotation) is not None and str(unit or "°").strip() in ("°", "deg"):
        out["scan_rotation_deg"] = number(rotation)
    when = " ".join(t for t in (_text(md, "ap_date"), _text(md, "ap_time")) if t)
    if when:
        out["acquired"] = when
    return out


def _mm(um: float | None) -> float | None:
    return None if um is None else um * 1e-3


def zeiss_raw(md: Mapping[str, Any]) -> dict[str, Any]:
    """Every CZ_SEM parameter, JSON-friendly (``{"ap_wd": ["WD", 4.5, "mm"], ...}``)."""
    return plain(md)
