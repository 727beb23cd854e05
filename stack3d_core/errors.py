"""Exception types of stack3d.

Every error a user can cause derives from :class:`Stack3dError`; the CLI turns these into
exit code 1 with the message, which always names the file, key, slice or plugin involved.
Anything else reaching the CLI is a bug and is shown with its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "DuplicateNameError",
    "InputError",
    "PluginLoadError",
    "Stack3dError",
    "StepError",
    "UnknownNameError",
]


class Stack3dError(Exception):
    """Base class of every error caused by user input (config, data, plugins)."""


class ConfigIssue:
    """One problem found in a configuration file.

    :param path: dotted key path inside the file, e.g. ``"bkg_removal.orders[1]"``;
        empty for the file as a whole.
    :param message: what is wrong, in words (suggestions included).
    """

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __repr__(self) -> str:
        return f"ConfigIssue({self.path!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigIssue) and (self.path, self.message) == (
            other.path,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.path, self.message))


class ConfigError(Stack3dError):
    """A configuration file (or dict) holds one or more mistakes.

    All mistakes found are collected in :attr:`issues`, so the user fixes them in one go.
    """

    def __init__(self, issues: Sequence[ConfigIssue], source: str | Path | None = None) -> None:
        self.issues = list(issues)
        self.source = str(source) if source is not None else None
        where = f" in {self.source}" if self.source else ""
        lines = [f"{len(self.issues)} problem(s){where}:"]
        lines += [f"  - {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))


class InputError(Stack3dError):
    """An input file cannot be used (unreadable, corrupt, wrong shape or dtype).

    :param path: the offending file (or folder).
    :param message: what is wrong with it.
    """

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


class StepError(Stack3dError):
    """A step failed while processing the stack.

    Names the step, the channel, the slice index and file when known, and keeps the
    original exception as ``__cause__``.
    """

    def __init__(
        self,
        step: str,
        message: str,
        *,
        channel: str | None = None,
        index: int | None = None,
        file: str | Path | None = None,
    ) -> None:
        self.step = step
        self.channel = channel
        self.index = index
        self.file = None if file is None else str(file)
        self.message = message
        where = [f"step '{step}'"]
        if channel is not None:
            where.append(f"channel '{channel}'")
        if index is not None:
            where.append(f"slice {index}")
        if file is not None:
            where.append(f"file {file}")
        super().__init__(f"{', '.join(where)}: {message}")


class PluginLoadError(Stack3dError):
    """A plugin could not be loaded or registered (raised in strict mode only)."""


class DuplicateNameError(Stack3dError):
    """Two plugins register a step, reader or writer under the same name."""


class UnknownNameError(Stack3dError, KeyError):
    """A step, reader or writer name is not registered; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
