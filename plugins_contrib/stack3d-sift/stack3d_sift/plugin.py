"""Entry point ``sift`` (group ``stack3d``): registers the step ``sift_registration``."""

from __future__ import annotations

from stack3d_core import Step, hookimpl

from .step import STEPS


@hookimpl
def stack3d_register_steps() -> list[type[Step]]:
    """``sift_registration``."""
    return list(STEPS)
