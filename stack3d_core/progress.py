"""Progress events. The engine never prints: it calls a callback with :class:`ProgressEvent`
objects, which the CLI renders as tqdm bars (quiet when stderr is not a terminal) and a
GUI or a log can render its own way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["ProgressCallback", "ProgressEvent", "TqdmProgress"]


@attrs.frozen
class ProgressEvent:
    """One progress report.

    :param kind: ``"start"`` (a phase begins; ``total`` is known), ``"advance"`` (``done``
        more units finished) or ``"end"``.
    :param step: step name.
    :param channel: channel name.
    :param phase: ``"measure"``, ``"pairs"``, ``"apply"`` or ``"export"``.
    :param done: units finished by this event (``advance``) or so far.
    :param total: units in the phase (slices, or pairs).
    """

    kind: str
    step: str
    channel: str
    phase: str
    done: int = 0
    total: int = 0


ProgressCallback = Callable[[ProgressEvent], None]


class TqdmProgress:
    """Renders events as one tqdm bar per step, channel and phase on stderr.

    :param enabled: ``None`` shows bars only when stderr is a terminal (tqdm's
        ``disable=None``), ``False`` never, ``True`` always.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def __call__(self, event: ProgressEvent) -> None:
        if self.enabled is False:
            return
        if event.kind == "start":
            self.close()
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional for the core: fall back to nothing
                return
            label = event.step if event.channel == "." else f"{event.step} [{event.channel}]"
            self._bar = tqdm(
                total=event.total, desc=f"{label} {event.phase}", unit="slice",
                disable=None if self.enabled is None else not self.enabled,
                file=sys.stderr, leave=True, dynamic_ncols=True,
            )
        elif event.kind == "advance" and self._bar is not None:
            self._bar.update(event.done)
        elif event.kind == "end":
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
