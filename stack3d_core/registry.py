"""Name → class registries of steps, readers and writers.

A name may be registered once: a second registration under the same name is refused
with both providing distributions named. An unknown name is answered with the closest
registered names ("did you mean ...?").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Generic, TypeVar

import attrs

from .errors import DuplicateNameError, UnknownNameError

__all__ = ["NAME_RE", "Entry", "Registry", "suggest"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
"""What a step, reader or writer name must look like."""

T = TypeVar("T")


def suggest(name: str, candidates: list[str] | tuple[str, ...] | set[str], n: int = 3) -> str:
    """A ``" (did you mean 'a' or 'b'?)"`` suffix, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(name, sorted(candidates), n=n, cutoff=0.6)
    if not close:
        return ""
    quoted = [f"'{c}'" for c in close]
    return f" (did you mean {' or '.join(quoted)}?)"


@attrs.frozen
class Entry(Generic[T]):
    """A registered class and where it came from."""

    name: str
    obj: T
    plugin: str
    distribution: str
    version: str

    @property
    def origin(self) -> str:
        return f"plugin '{self.plugin}' from {self.distribution} {self.version}"


class Registry(Generic[T]):
    """Registry of one kind of object (``kind`` is ``"step"``, ``"reader"`` or ``"writer"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, obj: T, *, plugin: str, distribution: str, version: str) -> None:
        """Register ``obj`` under ``name``.

        :raises ValueError: the name is not of the form ``^[a-z][a-z0-9_]*$``.
        :raises DuplicateNameError: the name is taken; the message names both origins.
        """
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(
                f"{self.kind} name {name!r} from plugin '{plugin}' ({distribution}) is not valid:"
                " use lower-case letters, digits and underscores, starting with a letter"
            )
        if name in self._entries:
            old = self._entries[name]
            if old.obj is obj:
                return
            raise DuplicateNameError(
                f"{self.kind} '{name}' is registered twice: by {old.origin} and by plugin "
                f"'{plugin}' from {distribution} {version}; the second is refused "
                "(uninstall or disable one of them)"
            )
        self._entries[name] = Entry(name, obj, plugin, distribution, version)

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        :raises UnknownNameError: with close names suggested and the known names listed.
        """
        try:
            return self._entries[name].obj
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{suggest(name, list(self._entries))}; "
                f"known {self.kind}s: {known}"
            ) from None

    def entry(self, name: str) -> Entry[T]:
        """The :class:`Entry` of ``name`` (same errors as :meth:`get`)."""
        self.get(name)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
