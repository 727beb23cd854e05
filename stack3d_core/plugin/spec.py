"""Hook specifications: every hook a stack3d plugin can implement.

Each hook is documented here, where it is declared; ``tests/test_hooks_contract.py`` fails
if a hook lacks a docstring, is missing from ``docs/plugins.md`` or has no test named
``test_hook_<name>``.

Implementations may accept fewer arguments than the specification (pluggy's opt-in
arguments), so new arguments can be added without breaking plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import hookspec

if TYPE_CHECKING:
    from ..stackio import StackReader, StackWriter
    from ..step import Step, StepContext


@hookspec
def stack3d_register_steps() -> list[type[Step]]:
    """Return the step classes this plugin provides.

    Each class subclasses :class:`stack3d_core.Step`, has a unique ``name`` (the TOML
    table name, ``^[a-z][a-z0-9_]*$``) and a frozen attrs ``Params`` class. A name
    already registered by another distribution is refused and reported with both
    distributions named.

    Example::

        @hookimpl
        def stack3d_register_steps():
            return [MyStep]

    .. versionadded:: 0.1
    """


@hookspec
def stack3d_register_readers() -> list[type[StackReader]]:
    """Return the reader classes this plugin provides.

    Each class subclasses :class:`stack3d_core.StackReader`. A reader is chosen by name
    (``[input] reader = "name"``, ``stack3d convert --reader``) or, when no name is
    given, by the first registered reader whose ``can_read(path)`` is true.

    .. versionadded:: 0.1
    """


@hookspec
def stack3d_register_writers() -> list[type[StackWriter]]:
    """Return the writer classes this plugin provides.

    Each class subclasses :class:`stack3d_core.StackWriter` and follows its staging /
    commit life cycle, so that an interrupted run never leaves a complete-looking output.

    .. versionadded:: 0.1
    """


@hookspec
def stack3d_before_step(step: Step, context: StepContext) -> None:
    """Called on the driver before a step processes a channel.

    :param step: the step instance (its parameters are ``step.params``).
    :param context: the step's context: channel, folders, input names and metadata.

    Observers use it to start timers or take a "before" snapshot. Exceptions raised here
    abort the run, attributed to the plugin that raised.

    .. versionadded:: 0.1
    """


@hookspec
def stack3d_after_step(step: Step, context: StepContext, stats: Any, seconds: float) -> None:
    """Called on the driver after a step finished a channel and its outputs are written.

    :param step: the step instance.
    :param context: the step's context; ``context.outputs_dir`` holds ``stats.npy``.
    :param stats: the ``(n, 3, 3)`` per-slice statistics array (input / raw output /
        cast output × min / max / mean), or ``None`` for steps that write no images.
    :param seconds: wall time the step took for this channel.

    The built-in plots (``stats.png``) are drawn by an implementation of this hook, and a
    quality plugin can evaluate the step's output here.

    .. versionadded:: 0.1
    """


@hookspec
def stack3d_on_step_error(step: Step, context: StepContext, error: BaseException) -> None:
    """Called on the driver when a step fails, before the error propagates.

    :param step: the step instance.
    :param context: the step's context.
    :param error: the exception (a :class:`stack3d_core.StepError` naming the slice and
        file when the failure happened on one slice).

    For logging or notifications; the run fails whatever the hook does, and exceptions
    raised inside this hook are logged, not propagated.

    .. versionadded:: 0.1
    """
