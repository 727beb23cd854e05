"""The run record: ``process/stack3d_run.json``.

stack3d never rewrites the user's TOML (PyStack3D rewrites it after every step to keep
``history``, losing its comments). The history of completed steps, the effective
parameters, the package and plugin versions, the executor and the timings are kept in
this JSON file instead, written atomically after each step.

A history entry carries a fingerprint of the step's parameters and of its input, so a
step whose parameters changed is run again (with the steps after it) rather than
skipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs

__all__ = ["RECORD_NAME", "RunRecord", "fingerprint", "write_atomic"]

RECORD_NAME = "stack3d_run.json"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (parameters, input identity)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@attrs.define
class RunRecord:
    """In-memory view of ``process/stack3d_run.json``."""

    path: Path
    history: list[dict[str, Any]] = attrs.field(factory=list)
    runs: list[dict[str, Any]] = attrs.field(factory=list)

    @classmethod
    def load(cls, process_dir: Path) -> RunRecord:
        path = process_dir / RECORD_NAME
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, list(data.get("history", [])), list(data.get("runs", [])))
        except (OSError, ValueError):
            # unreadable record: start a fresh history rather than trust it
            return cls(path)

    def names(self) -> list[str]:
        return [h["step"] for h in self.history]

    def truncate_at(self, step: str) -> None:
        """Forget ``step`` and every step recorded after it."""
        names = self.names()
        if step in names:
            del self.history[names.index(step):]

    def save(self) -> None:
        data = {"format": 1, "history": self.history, "runs": self.runs[-50:]}
        write_atomic(self.path, json.dumps(data, indent=2, default=str) + "\n")
