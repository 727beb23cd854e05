"""The reader and writer contracts: how stacks of 2D slices come in and go out.

Coordinate conventions used throughout stack3d:

* A slice is a 2D numpy array indexed ``[row, column]``; row 0 is the top of the image.
* ``x`` is the column index and ``y`` the row index unless a step documents otherwise
  (PyStack3D's ``area`` keys count ``y`` upward from the bottom row; see the cropping step).
* ``z`` is the position of a slice along the milling direction, in ``StackMeta.unit``.

Readers and writers are plain classes registered through the ``stack3d_register_readers`` /
``stack3d_register_writers`` hooks. Instances are sent to worker processes (and Dask
workers) by pickling, so they must hold only picklable state (paths, options, small
tuples) and open files lazily, per call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np

__all__ = [
    "NoOptions",
    "StackMeta",
    "StackReader",
    "StackWriter",
    "SubsetReader",
]


@attrs.frozen(kw_only=True)
class NoOptions:
    """Options class of readers and writers that take no options."""


@attrs.frozen(kw_only=True)
class StackMeta:
    """What is known about one channel of a stack, without its pixels.

    :param n: number of slices.
    :param shape: ``(rows, columns)`` of every slice, in pixels.
    :param dtype: numpy dtype name of the stored pixels, e.g. ``"uint16"``.
    :param pixel_size: ``(x, y, z)`` voxel size in :attr:`unit`, or ``None`` if unknown.
        ``x`` is the column spacing, ``y`` the row spacing, ``z`` the nominal slice spacing.
    :param unit: length unit of :attr:`pixel_size` and :attr:`z_positions` (default µm).
    :param z_positions: position of each slice along z in :attr:`unit` (length ``n``), or
        ``None`` when the source does not say.
    :param instrument: free-form instrument metadata (microscope, detector, EHT, ...).
    """

    n: int
    shape: tuple[int, int]
    dtype: str
    pixel_size: tuple[float, float, float] | None = None
    unit: str = "um"
    z_positions: tuple[float, ...] | None = None
    instrument: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)

    def evolve(self, **changes: Any) -> StackMeta:
        """A copy with some fields replaced (``attrs.evolve``)."""
        return attrs.evolve(self, **changes)


class StackReader:
    """Base class of readers. Subclass it and register the class with the
    ``stack3d_register_readers`` hook.

    Class attributes to set:

    * ``name``: registry name, ``^[a-z][a-z0-9_]*$`` (used by ``[input] reader = ...``).
    * ``description``: one line for ``stack3d plugins`` / docs.
    * ``Options``: frozen attrs class of the options accepted in the ``[input]`` table.

    The constructor must be cheap and must not hold open files: the instance is pickled
    to every worker. Errors about a specific file raise :class:`~stack3d_core.errors.InputError`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, path: str | os.PathLike[str], options: Any = None) -> None:
        self.path = Path(path)
        self.options = options if options is not None else self.Options()

    # -- discovery -----------------------------------------------------------------------
    @classmethod
    def can_read(cls, path: Path) -> bool:
        """Whether this reader recognises ``path`` (used when ``[input] reader`` is unset)."""
        return False

    # -- contents ------------------------------------------------------------------------
    def channels(self) -> tuple[str, ...]:
        """Names of the channels found at :attr:`path` (``"."`` for a single channel)."""
        return (".",)

    def names(self, channel: str) -> tuple[str, ...]:
        """Slice names of ``channel`` in stack order (file names for file-per-slice formats)."""
        raise NotImplementedError

    def meta(self, channel: str) -> StackMeta:
        """Shape, dtype, pixel size and z positions of ``channel``, read without pixels."""
        raise NotImplementedError

    def read(self, channel: str, index: int) -> np.ndarray:
        """The 2D pixels of slice ``index`` (0-based, in :meth:`names` order)."""
        raise NotImplementedError

    def extras(self, channel: str, index: int) -> dict[str, Any]:
        """Per-slice data a writer of the same family may carry along (e.g. private TIFF
        tags and compression). Empty by default."""
        return {}

    def read_with_extras(self, channel: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Pixels and extras in one go; override when one file open can serve both."""
        return self.read(channel, index), self.extras(channel, index)

    def describe(self, channel: str, index: int) -> str:
        """A human name for slice ``index`` used in error messages (its file path)."""
        names = self.names(channel)
        name = names[index] if 0 <= index < len(names) else f"#{index}"
        return str(self.path / channel / name) if channel != "." else str(self.path / name)


class SubsetReader(StackReader):
    """A view of slices ``start .. stop-1`` of another reader (PyStack3D's ``ind_min``/``ind_max``).

    Index 0 of the view is index ``start`` of the wrapped reader.
    """

    name = "subset"

    def __init__(self, inner: StackReader, start: int, stop: int) -> None:
        super().__init__(inner.path, None)
        self.inner = inner
        self.start = start
        self.stop = stop

    def channels(self) -> tuple[str, ...]:
        return self.inner.channels()

    def names(self, channel: str) -> tuple[str, ...]:
        return self.inner.names(channel)[self.start : self.stop]

    def meta(self, channel: str) -> StackMeta:
        meta = self.inner.meta(channel)
        n = len(range(meta.n)[self.start : self.stop])
        z = meta.z_positions[self.start : self.stop] if meta.z_positions is not None else None
        return meta.evolve(n=n, z_positions=z)

    def read(self, channel: str, index: int) -> np.ndarray:
        return self.inner.read(channel, index + self.start)

    def extras(self, channel: str, index: int) -> dict[str, Any]:
        return self.inner.extras(channel, index + self.start)

    def read_with_extras(self, channel: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        return self.inner.read_with_extras(channel, index + self.start)

    def describe(self, channel: str, index: int) -> str:
        return self.inner.describe(channel, index + self.start)


class StackWriter:
    """Base class of writers. Subclass it and register the class with the
    ``stack3d_register_writers`` hook.

    Life cycle, which the engine follows on every executor:

    1. ``__init__(path, meta, names, options)`` on the driver: prepares a *staging*
       destination (nothing at ``path`` changes yet). ``meta`` describes the output stack
       (``n`` slices of ``shape`` and ``dtype``) and ``names`` the slice names.
    2. :meth:`write` in any worker, once per index, possibly concurrently from several
       processes for different indices. It must write only the part belonging to ``index``.
    3. :meth:`commit` on the driver once every slice is written: publishes the result at
       ``path`` atomically (replacing an older result), or :meth:`abort` on failure, which
       removes the staging data. A stack that was not committed never looks complete.

    Class attributes: ``name``, ``description``, ``Options`` as for readers, and
    ``suffixes``: path endings this writer is picked for when no writer is named.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: StackMeta,
        names: Sequence[str],
        options: Any = None,
    ) -> None:
        self.path = Path(path)
        self.meta = meta
        self.names = tuple(names)
        self.options = options if options is not None else self.Options()

    @classmethod
    def can_write(cls, path: Path) -> bool:
        """Whether ``path`` looks like a destination of this writer (by suffix)."""
        return bool(cls.suffixes) and str(path).lower().endswith(cls.suffixes)

    def write(self, index: int, image: np.ndarray, extras: Mapping[str, Any]) -> None:
        """Write slice ``index`` (already of ``meta.dtype`` and ``meta.shape``)."""
        raise NotImplementedError

    def commit(self) -> None:
        """Publish the staged stack at :attr:`path` atomically."""

    def abort(self) -> None:
        """Discard whatever was staged; :attr:`path` is left as it was."""
