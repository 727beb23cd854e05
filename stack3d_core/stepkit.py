"""Small helpers for step authors: atomic writes of side outputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .engine.record import write_atomic

__all__ = ["save_array", "write_text"]


def write_text(path: Path, text: str) -> None:
    """Write a text side output atomically (temporary file, then rename)."""
    write_atomic(Path(path), text)


def save_array(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically: a reader never sees a half-written ``.npy``."""
    path = Path(path)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
