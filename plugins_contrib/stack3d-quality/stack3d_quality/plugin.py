"""Entry point ``quality`` (group ``stack3d``): the step ``quality`` and the observer."""

from __future__ import annotations

import logging

from stack3d_core import Step, StepContext, hookimpl

from .step import STEPS

log = logging.getLogger("stack3d.quality")


@hookimpl
def stack3d_register_steps() -> list[type[Step]]:
    """The step ``quality``."""
    return list(STEPS)


@hookimpl
def stack3d_after_step(step: Step, context: StepContext) -> None:
    """Evaluate the output of the steps named in ``[quality] follow``; never fails the run."""
    try:
        from .observer import observe

        observe(step, context)
    except Exception as exc:  # noqa: BLE001 - an observer must not break the pipeline
        log.debug("quality observer failed", exc_info=True)
        try:
            context.warn(f"quality observer failed on step '{step.name}': {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001
            log.warning("quality observer failed on step %r: %s", getattr(step, "name", step), exc)
