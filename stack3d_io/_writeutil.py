"""Helpers shared by the single-file and single-group writers (MRC, OME-Zarr, multi-page
TIFF) and their readers: length units, slice checks, default slice names, JSON-safe
metadata and publishing a staged result by renaming.

Staging convention of these writers: everything is prepared in the hidden sibling folder
``path.parent / ".<name>.partial"``; :func:`publish` moves the finished file or folder to
``path`` with :func:`os.replace` (an older result is moved aside to ``.<name>.old`` first
and deleted last), so an interrupted run never leaves a complete-looking ``path``.
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from stack3d_core.stackio import StackMeta

__all__ = [
    "check_meta",
    "check_slice",
    "default_names",
    "jsonable",
    "length_factor",
    "publish",
    "require",
    "staging_dir",
    "to_um",
    "um_to",
]

# length unit -> (multiply, divide) to get micrometres. Conversions are done in decimal on
# the shortest repr of the value, so decimal values stay exact (3.45 nm -> 0.00345 um).
_LENGTH_UNITS: dict[str, tuple[float, float]] = {
    "um": (1.0, 1.0), "µm": (1.0, 1.0), "μm": (1.0, 1.0), "micrometer": (1.0, 1.0),
    "micrometre": (1.0, 1.0), "micron": (1.0, 1.0),
    "nm": (1.0, 1e3), "nanometer": (1.0, 1e3), "nanometre": (1.0, 1e3),
    "a": (1.0, 1e4), "å": (1.0, 1e4), "angstrom": (1.0, 1e4),
    "pm": (1.0, 1e6), "picometer": (1.0, 1e6),
    "mm": (1e3, 1.0), "millimeter": (1e3, 1.0), "millimetre": (1e3, 1.0),
    "cm": (1e4, 1.0), "centimeter": (1e4, 1.0),
    "dm": (1e5, 1.0), "decimeter": (1e5, 1.0),
    "m": (1e6, 1.0), "meter": (1e6, 1.0), "metre": (1e6, 1.0),
    "inch": (25400.0, 1.0),
}


def length_factor(unit: str) -> tuple[float, float] | None:
    """``(multiply, divide)`` turning a length in ``unit`` into micrometres, or ``None``
    for an unknown unit. Accepts stack3d's short names (``"um"``, ``"nm"``) and the
    UDUNITS names of OME-Zarr (``"micrometer"``, ``"nanometer"``, ``"angstrom"``)."""
    key = str(unit).strip()
    return _LENGTH_UNITS.get(key if key in ("Å", "µm", "μm") else key.lower())


def _convert(value: float, mul: float, div: float) -> float:
    return float(Decimal(repr(float(value))) * Decimal(repr(mul)) / Decimal(repr(div)))


def to_um(value: float, unit: str) -> float:
    """``value`` (in ``unit``) in micrometres, computed in decimal on the shortest repr of
    ``value`` (3.45 nm gives exactly ``0.00345``). :raises ValueError: unknown unit."""
    factor = length_factor(unit)
    if factor is None:
        raise ValueError(f"unknown length unit {unit!r}")
    return _convert(value, factor[0], factor[1])


def um_to(value: float, unit: str) -> float:
    """``value`` in micrometres converted to ``unit`` (decimal, as :func:`to_um`).
    :raises ValueError: unknown unit."""
    factor = length_factor(unit)
    if factor is None:
        raise ValueError(f"unknown length unit {unit!r}")
    return _convert(value, factor[1], factor[0])


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise an ImportError saying which format needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"the {what} format needs the '{module}' package: pip install {module}") from exc


def default_names(n: int) -> tuple[str, ...]:
    """``slice_0000.tif`` ... (at least 4 digits, enough for every index): sortable names
    for formats that do not store slice names."""
    digits = max(4, len(str(max(n - 1, 0))))
    return tuple(f"slice_{i:0{digits}d}.tif" for i in range(n))


def staging_dir(path: Path) -> Path:
    """The hidden staging folder of an output ``path``: ``.<name>.partial`` beside it."""
    return path.parent / f".{path.name}.partial"


def check_slice(path: Path, meta: StackMeta, index: int, image: np.ndarray) -> np.ndarray:
    """``image`` as an array after checking ``index``, shape and dtype against ``meta``.

    :raises IndexError: index outside ``0 .. n-1``.
    :raises ValueError: shape or dtype differ from the stack's (the message names ``path``).
    """
    if not 0 <= index < meta.n:
        raise IndexError(f"{path}: slice index {index} out of range 0..{meta.n - 1}")
    image = np.asarray(image)
    if tuple(image.shape) != tuple(meta.shape):
        raise ValueError(
            f"{path}: slice {index}: image shape {tuple(image.shape)} != stack shape "
            f"{tuple(meta.shape)} (rows, columns)"
        )
    if image.dtype.name != np.dtype(meta.dtype).name:
        raise ValueError(f"{path}: slice {index}: image dtype {image.dtype.name} != stack dtype {meta.dtype}")
    return image


def start_writer(writer: Any) -> None:
    """The common start of a writer's ``__init__``: absolute ``path``, validated options
    and checked metadata, each failure a ``ValueError`` naming the path."""
    writer.path = Path(os.path.abspath(writer.path))
    issues = writer.options.validate()
    if issues:
        raise ValueError(f"{writer.path}: " + "; ".join(issues))
    check_meta(writer.path, writer.meta, writer.names)


def check_meta(path: Path, meta: StackMeta, names: Sequence[str]) -> None:
    """Refuse an empty stack or a names list of the wrong length (ValueError)."""
    if meta.n < 1:
        raise ValueError(f"{path}: cannot write an empty stack (n = {meta.n})")
    if len(meta.shape) != 2 or min(meta.shape) < 1:
        raise ValueError(f"{path}: invalid slice shape {tuple(meta.shape)}")
    if len(names) != meta.n:
        raise ValueError(f"{path}: {len(names)} slice names for {meta.n} slices")


def jsonable(value: Any) -> Any:
    """``value`` turned into plain JSON types: mappings with string keys, lists, str, int,
    finite floats, bools and None. numpy scalars and arrays become numbers and lists,
    ``bytes`` are decoded as latin-1, non-finite floats and anything else become strings."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return str(value)


def publish(staged: Path, path: Path, carry: Callable[[Path], bool] | None = None) -> None:
    """Move the finished ``staged`` file or folder to ``path`` (same file system).

    An existing ``path`` (file or folder) is first renamed to ``.<name>.old`` and removed
    after the new result is in place; a file replacing a file is a single atomic
    :func:`os.replace`.

    :param carry: for folders: entries of the old folder for which it is true are moved
        into the new one when it has no entry of that name (e.g. an ``outputs/`` folder
        next to the slices).
    """
    old = path.parent / f".{path.name}.old"
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    elif old.exists() or old.is_symlink():
        old.unlink()
    if staged.is_file() and path.is_file() and not path.is_symlink():
        os.replace(staged, path)
        return
    had_old = path.exists() or path.is_symlink()
    if had_old:
        os.replace(path, old)
    os.replace(staged, path)
    if had_old:
        if old.is_dir() and not old.is_symlink():
            if carry is not None and path.is_dir():
                for entry in old.iterdir():
                    target = path / entry.name
                    if carry(entry) and not target.exists() and not target.is_symlink():
                        os.replace(entry, target)
            shutil.rmtree(old)
        else:
            old.unlink()


def commit_folder(staging: Path, path: Path, files: Sequence[str], is_slice: Callable[[str], bool]) -> None:
    """Publish a staged folder of one file per slice at ``path``.

    Refuses (RuntimeError) when the staging folder is gone or any of ``files`` was never
    written; drops leftover ``*.tmp`` files; keeps the entries of an older ``path`` that are
    not slices (``is_slice(name)`` false for files, e.g. an ``outputs/`` folder) and were not
    written again.
    """
    if not staging.is_dir():
        raise RuntimeError(f"{path}: nothing staged (already committed or aborted?)")
    missing = [f for f in files if not (staging / f).is_file()]
    if missing:
        raise RuntimeError(f"{path}: {len(missing)} of {len(files)} slices were never written (first: {missing[0]})")
    for leftover in staging.glob("*.tmp"):
        leftover.unlink(missing_ok=True)
    publish(staging, path, carry=lambda entry: not (entry.is_file() and is_slice(entry.name)))
