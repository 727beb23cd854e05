"""Helpers shared by the SEM metadata parsers (:mod:`stack3d_io.sem_metadata`).

* :class:`SemMetadataWarning`: the warning category of every metadata problem (a tag that
  does not parse, a setup file that cannot be read, slices without a z position). A
  problem never stops reading: the field it concerns is left out and the reader falls back.
* :func:`plain`: JSON-friendly copies of vendor values (tuples to lists, bytes to text), so
  that ``StackMeta.instrument`` survives the engine's ``stack_meta.json`` unchanged.
* :func:`number`: a finite ``float`` or ``None`` from whatever a vendor field holds.
* :func:`length_um`, :func:`voltage_kv`, :func:`time_us`, :func:`current_na`: unit strings
  of Zeiss SmartSEM fields (``"nm"``, ``"µm"``, ``"kV"``, ``"ns"``, ``"nA"``, ...) to the
  units of the normalised instrument keys.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SemMetadataWarning",
    "current_na",
    "length_um",
    "number",
    "plain",
    "time_us",
    "voltage_kv",
    "warn",
]


class SemMetadataWarning(UserWarning):
    """Instrument metadata of a TIFF could not be used; the message names the file."""


def warn(message: str, problems: list[str] | None = None) -> None:
    """Issue ``message`` as a :class:`SemMetadataWarning` and append it to ``problems``."""
    if problems is not None:
        problems.append(message)
    warnings.warn(message, SemMetadataWarning, stacklevel=3)


def plain(value: Any) -> Any:
    """A JSON-friendly copy of ``value``: mappings to dicts with ``str`` keys, tuples to
    lists, bytes decoded as Latin-1, numpy scalars to Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (text is parsed; bools are not numbers)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(str(value).strip()) if isinstance(value, str | bytes) else float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _unit_key(unit: Any) -> str:
    return str(unit or "").strip().replace("\u03bc", "u").replace("\u00b5", "u")


_LENGTH_UM = {"pm": 1e-6, "nm": 1e-3, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
_VOLTAGE_KV = {"V": 1e-3, "kV": 1.0, "KV": 1.0, "MV": 1e3}
_TIME_US = {"ps": 1e-6, "ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
_CURRENT_NA = {"fA": 1e-6, "pA": 1e-3, "nA": 1.0, "uA": 1e3, "mA": 1e6, "A": 1e9}


def _convert(value: Any, unit: Any, table: Mapping[str, float]) -> float | None:
    x = number(value)
    factor = table.get(_unit_key(unit))
    return None if x is None or factor is None else x * factor


def length_um(value: Any, unit: Any) -> float | None:
    """A length with a unit string (``"nm"``, ``"µm"``, ``"mm"``, ...) in µm."""
    return _convert(value, unit, _LENGTH_UM)


def voltage_kv(value: Any, unit: Any) -> float | None:
    """A voltage (``"V"``, ``"kV"``) in kV."""
    return _convert(value, unit, _VOLTAGE_KV)


def time_us(value: Any, unit: Any) -> float | None:
    """A duration (``"ns"``, ``"µs"``, ``"ms"``, ``"s"``) in µs."""
    return _convert(value, unit, _TIME_US)


def current_na(value: Any, unit: Any) -> float | None:
    """A current (``"pA"``, ``"nA"``, ``"µA"``, ``"A"``) in nA."""
    return _convert(value, unit, _CURRENT_NA)
