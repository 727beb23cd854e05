"""Entry point ``steps``: registers the built-in steps.

Each step module exposes ``STEPS``; add a new module to :data:`MODULES` to register it.
"""

from __future__ import annotations

import importlib

from stack3d_core import Step, hookimpl

MODULES = ("cropping", "bkg_removal", "intensity", "registration", "destriping", "resampling")
"""Modules of :mod:`stack3d_steps` whose ``STEPS`` are registered, in PyStack3D's order."""


@hookimpl
def stack3d_register_steps() -> list[type[Step]]:
    """The built-in correction steps."""
    steps: list[type[Step]] = []
    for module in MODULES:
        steps.extend(importlib.import_module(f"stack3d_steps.{module}").STEPS)
    return steps
