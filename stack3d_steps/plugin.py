"""Entry point ``steps``: registers the built-in steps."""

from __future__ import annotations

from stack3d_core import Step, hookimpl

from .cropping import Cropping, CroppingFinal


@hookimpl
def stack3d_register_steps() -> list[type[Step]]:
    """The built-in correction steps."""
    return [Cropping, CroppingFinal]
