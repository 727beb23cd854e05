"""A third-party plugin: one step (``invert``) and the three observer hooks.

The observers append a line per call to the file named by ``STACK3D_TESTPLUGIN_LOG`` (if
set), so tests running in a subprocess can see that they were called.
"""

from __future__ import annotations

import os

import attrs
import numpy as np

from stack3d_core import Step, StepKind, hookimpl


@attrs.frozen(kw_only=True)
class InvertParams:
    maximum: float = attrs.field(default=255.0, metadata={"doc": "value mapped to 0", "unit": "gray level"})


class Invert(Step):
    """``maximum - image``."""

    name = "invert"
    description = "invert gray levels (test plugin)"
    Params = InvertParams
    kind = StepKind.MAP

    def apply(self, image, index, state):
        if os.environ.get("STACK3D_TESTPLUGIN_FAIL_AT") == str(index):
            raise RuntimeError(f"deliberate failure at slice {index}")
        return self.params.maximum - image.astype(np.float64)


def _log(line: str) -> None:
    path = os.environ.get("STACK3D_TESTPLUGIN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


@hookimpl
def stack3d_register_steps():
    return [Invert]


@hookimpl
def stack3d_before_step(step, context):
    _log(f"before {step.name} {context.channel}")


@hookimpl
def stack3d_after_step(step, context, stats, seconds):
    _log(f"after {step.name} {context.channel} {None if stats is None else len(stats)}")


@hookimpl
def stack3d_on_step_error(step, context, error):
    _log(f"error {step.name} {context.channel} {type(error).__name__}")
