"""OME-Zarr (NGFF) metadata of :mod:`stack3d_io.ome_zarr`: written for version 0.5, read
for 0.5 (Zarr v3, ``attributes.ome`` in ``zarr.json``) and 0.4 (Zarr v2, ``multiscales``
in ``.zattrs``), with plain ``json`` (no zarr import needed).

What stack3d writes in the image group's ``zarr.json``::

    "attributes": {
      "ome": {"version": "0.5", "multiscales": [{
        "name": "<image name>",
        "axes": [{"name": "z", "type": "space", "unit": "micrometer"}, ... y, x],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [z, y, x]},                 # voxel size, µm
            {"type": "translation", "translation": [z0, 0, 0]}]}]  # when z is known
      }]},
      "stack3d": {"format": 1, "dtype": ..., "names": [...], "z_positions": [...] | null,
                  "instrument": {...}, "one_chunk_per_slice": true, "complete": true}
    }

Without a known pixel size the axes carry no unit and the scale is ``[1, 1, 1]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from stack3d_core.errors import InputError

from ._writeutil import jsonable, length_factor, to_um

__all__ = ["ImageLayout", "image_attributes", "is_image_group", "multiscales_of", "parse_image", "read_group_attributes"]

NGFF_VERSION = "0.5"
DATASET = "s0"
STACK3D_KEY = "stack3d"
SPACE = ("z", "y", "x")


def image_attributes(
    name: str,
    pixel_size_um: Sequence[float] | None,
    z_positions_um: Sequence[float] | None,
    stack3d: Mapping[str, Any],
) -> dict[str, Any]:
    """The group attributes of a single-scale NGFF 0.5 image (module doc).

    :param pixel_size_um: ``(x, y, z)`` voxel size in µm, or ``None``.
    :param z_positions_um: slice positions in µm; the first one becomes the z translation.
    """
    unit = {"unit": "micrometer"} if pixel_size_um is not None else {}
    axes = [{"name": a, "type": "space", **unit} for a in SPACE]
    if pixel_size_um is not None:
        x, y, z = (float(v) for v in pixel_size_um)
        scale = [z, y, x]
    else:
        scale = [1.0, 1.0, 1.0]
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
    if pixel_size_um is not None and z_positions_um:
        transforms.append({"type": "translation", "translation": [float(z_positions_um[0]), 0.0, 0.0]})
    multiscale = {"name": name, "axes": axes, "datasets": [{"path": DATASET, "coordinateTransformations": transforms}]}
    return {"ome": {"version": NGFF_VERSION, "multiscales": [multiscale]}, STACK3D_KEY: jsonable(stack3d)}


def read_group_attributes(path: Path) -> dict[str, Any]:
    """Attributes of the zarr group at ``path`` (v3 ``zarr.json`` or v2 ``.zattrs``).

    :raises InputError: missing folder or metadata file, invalid JSON, not a group.
    """
    if not path.is_dir():
        raise InputError(path, "OME-Zarr image folder does not exist or is not a folder")
    v3, v2 = path / "zarr.json", path / ".zattrs"
    if v3.is_file():
        doc = _load_json(v3)
        if doc.get("node_type") != "group":
            raise InputError(v3, f"expected a zarr group, got node_type {doc.get('node_type')!r}")
        attributes = doc.get("attributes", {})
    elif v2.is_file():
        attributes = _load_json(v2)
    else:
        raise InputError(path, "not a zarr group: zarr.json (Zarr v3) and .zattrs (Zarr v2) are missing")
    if not isinstance(attributes, dict):
        raise InputError(path, "zarr group attributes are not a JSON object")
    return attributes


def _load_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable zarr metadata ({type(exc).__name__}: {exc})") from exc
    if not isinstance(doc, dict):
        raise InputError(path, "zarr metadata is not a JSON object")
    return doc


def multiscales_of(attributes: Mapping[str, Any]) -> list[Any] | None:
    """The ``multiscales`` list (0.5: under ``ome``; 0.4: top level), or ``None``."""
    ome = attributes.get("ome")
    if isinstance(ome, Mapping) and isinstance(ome.get("multiscales"), list):
        return list(ome["multiscales"])
    if isinstance(attributes.get("multiscales"), list):
        return list(attributes["multiscales"])
    return None


def is_image_group(path: Path) -> bool:
    """Whether ``path`` holds an OME-Zarr image group (quiet, for discovery)."""
    try:
        return multiscales_of(read_group_attributes(path)) is not None
    except InputError:
        return False


@attrs.frozen
class ImageLayout:
    """Where a stack lies in an OME-Zarr image and what the metadata say (picklable).

    ``selection[k]`` is the fixed index (0) of array axis ``k`` for a squeezed non-spatial
    axis (``t``, ``c`` of length 1), or ``None`` for z, y and x.
    """

    dataset: str
    ndim: int
    selection: tuple[int | None, ...]
    scale: tuple[float, float, float] | None  # x, y, z in µm
    stack3d: Mapping[str, Any]
    version: str


def parse_image(path: Path, attributes: Mapping[str, Any], level: int) -> ImageLayout:
    """Read the first multiscale of an image group: dataset ``level``, axes and scale.

    Axes must end with the spatial axes ``z, y, x`` (names compared case-insensitively);
    earlier axes (time, channel) are accepted and read at index 0, and checked to have
    length 1 against the array by the caller. :raises InputError: naming ``path``.
    """
    multiscales = multiscales_of(attributes)
    if not multiscales or not isinstance(multiscales[0], Mapping):
        raise InputError(path, "no OME-Zarr 'multiscales' metadata in the group attributes")
    ms = multiscales[0]
    ome = attributes.get("ome")
    version = str(ome.get("version", "")) if isinstance(ome, Mapping) else str(ms.get("version", ""))
    axes = ms.get("axes")
    if not isinstance(axes, list) or not axes:
        raise InputError(path, "multiscales[0] has no 'axes' (NGFF >= 0.4 is required)")
    names = [str(a.get("name", "")).lower() if isinstance(a, Mapping) else str(a).lower() for a in axes]
    if len(names) < 3 or tuple(names[-3:]) != SPACE:
        raise InputError(path, f"axes {names}: the last three must be z, y, x (only 3D stacks are read)")
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InputError(path, "multiscales[0] has no 'datasets'")
    if not 0 <= level < len(datasets):
        raise InputError(path, f"resolution level {level} requested, the image has {len(datasets)}")
    dataset = datasets[level]
    if not isinstance(dataset, Mapping) or not isinstance(dataset.get("path"), str):
        raise InputError(path, f"datasets[{level}] has no 'path'")
    ndim = len(names)
    scale = _scale(dataset.get("coordinateTransformations"), ndim)
    top = _scale(ms.get("coordinateTransformations"), ndim)
    units = [a.get("unit") if isinstance(a, Mapping) else None for a in axes[-3:]]
    pixel: tuple[float, float, float] | None = None
    if scale is not None and all(u is not None and length_factor(str(u)) for u in units):
        values = [
            to_um(scale[k] * (top[k] if top is not None else 1.0), str(u))
            for k, u in zip(range(ndim - 3, ndim), units, strict=True)
        ]
        z, y, x = values
        if all(math.isfinite(v) and v > 0 for v in values):
            pixel = (x, y, z)
    selection = tuple([0] * (ndim - 3) + [None, None, None])
    info = attributes.get(STACK3D_KEY)
    return ImageLayout(
        dataset=dataset["path"],
        ndim=ndim,
        selection=selection,
        scale=pixel,
        stack3d=dict(info) if isinstance(info, Mapping) else {},
        version=version,
    )


def _scale(transforms: Any, ndim: int) -> list[float] | None:
    """The ``scale`` vector of a coordinateTransformations list, or ``None``."""
    if not isinstance(transforms, list):
        return None
    for t in transforms:
        if isinstance(t, Mapping) and t.get("type") == "scale" and isinstance(t.get("scale"), list):
            values = t["scale"]
            if len(values) == ndim and all(isinstance(v, int | float) for v in values):
                return [float(v) for v in values]
    return None
