"""The typed facade over pluggy that the rest of stack3d uses.

:class:`PluginHost` owns a pluggy manager, loads the entry points, fills the step /
reader / writer registries and calls the observer hooks. Nothing outside
:mod:`stack3d_core.plugin` touches pluggy directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pluggy

from ..errors import DuplicateNameError, PluginLoadError, Stack3dError
from ..registry import Registry
from ..stackio import StackReader, StackWriter
from ..step import Step, StepContext
from .manager import LoadFailure, PluginInfo, create_manager, load_entry_points

__all__ = ["PluginHost", "get_host"]

log = logging.getLogger("stack3d.plugins")

_REGISTER_HOOKS = (
    ("step", "stack3d_register_steps", Step),
    ("reader", "stack3d_register_readers", StackReader),
    ("writer", "stack3d_register_writers", StackWriter),
)


class PluginHost:
    """Plugins, registries and hook calls of one stack3d session.

    :param autoload: load the ``stack3d`` entry points (off in unit tests, which register
        plugin objects with :meth:`register`).
    :param disable: entry-point names not to load (also ``STACK3D_DISABLE_PLUGINS``).
    :param strict: raise on the first plugin that fails to load or register instead of
        reporting it in :attr:`failures` (also ``STACK3D_STRICT_PLUGINS=1``).
    """

    def __init__(
        self,
        *,
        autoload: bool = True,
        disable: Iterable[str] = (),
        strict: bool | None = None,
    ) -> None:
        self._pm = create_manager()
        self.strict = bool(strict)
        self.plugins: list[PluginInfo] = []
        self.failures: list[LoadFailure] = []
        self.steps: Registry[type[Step]] = Registry("step")
        self.readers: Registry[type[StackReader]] = Registry("reader")
        self.writers: Registry[type[StackWriter]] = Registry("writer")
        if autoload:
            loaded, failures = load_entry_points(self._pm, disable=disable, strict=strict)
            self.failures.extend(failures)
            for info in loaded:
                self._collect(info)

    # -- registration -------------------------------------------------------------------
    def register(self, plugin: object, name: str, distribution: str = "<local>", version: str = "") -> None:
        """Register a plugin object by hand (tests, notebooks, inline plugins)."""
        self._pm.register(plugin, name=name)
        self._pm.check_pending()
        self._collect(PluginInfo(name, distribution, version, getattr(plugin, "__name__", repr(plugin))))

    def unregister(self, name: str) -> None:
        """Remove a plugin registered by hand and everything it registered."""
        self._pm.unregister(name=name)
        self.plugins = [p for p in self.plugins if p.name != name]
        for registry in (self.steps, self.readers, self.writers):
            for entry in list(registry):
                if entry.plugin == name:
                    registry._entries.pop(entry.name)

    def _collect(self, info: PluginInfo) -> None:
        """Call the register hooks of one plugin and fill the registries."""
        problems: list[str] = []
        for kind, hook_name, base in _REGISTER_HOOKS:
            hook = getattr(self._pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin_name != info.name:
                    continue
                try:
                    classes = impl.function() or []
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{hook_name} raised {type(exc).__name__}: {exc}")
                    continue
                registry = getattr(self, f"{kind}s")
                for cls in classes:
                    if not (isinstance(cls, type) and issubclass(cls, base)):
                        problems.append(f"{hook_name} returned {cls!r}, not a {base.__name__} subclass")
                        continue
                    try:
                        registry.add(
                            cls.name, cls, plugin=info.name,
                            distribution=info.distribution, version=info.version,
                        )
                    except (DuplicateNameError, ValueError) as exc:
                        problems.append(str(exc))
        if problems:
            failure = LoadFailure(info.name, info.distribution, info.version, "; ".join(problems))
            if self.strict:
                raise PluginLoadError(str(failure))
            log.warning("%s", failure)
            self.failures.append(failure)
        self.plugins.append(info)

    # -- queries ---------------------------------------------------------------------------
    def hooks_of(self, plugin_name: str) -> list[str]:
        """Names of the hooks a loaded plugin implements."""
        plugin = self._pm.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(c.name for c in self._pm.get_hookcallers(plugin) or [])

    def reader_for(self, path: Any) -> type[StackReader]:
        """The first registered reader whose ``can_read(path)`` is true."""
        for entry in self.readers:
            try:
                if entry.obj.can_read(path):
                    return entry.obj
            except Exception:  # noqa: BLE001 - a probing reader must not break the choice
                log.debug("reader %s failed probing %s", entry.name, path, exc_info=True)
        raise Stack3dError(
            f"no reader recognises {path}; name one ([input] reader = ..., or --reader) "
            f"(known readers: {', '.join(self.readers.names()) or 'none'})"
        )

    def writer_for(self, path: Any) -> type[StackWriter]:
        """The first registered writer whose ``can_write(path)`` is true."""
        for entry in self.writers:
            if entry.obj.can_write(path):
                return entry.obj
        raise Stack3dError(
            f"no writer recognises {path}; name one ([output] writer = ..., or --writer) "
            f"(known writers: {', '.join(self.writers.names()) or 'none'})"
        )

    # -- observer hooks ----------------------------------------------------------------------
    def before_step(self, step: Step, context: StepContext) -> None:
        self._call_observers("stack3d_before_step", step=step, context=context)

    def after_step(self, step: Step, context: StepContext, stats: Any, seconds: float) -> None:
        self._call_observers("stack3d_after_step", step=step, context=context, stats=stats, seconds=seconds)

    def on_step_error(self, step: Step, context: StepContext, error: BaseException) -> None:
        try:
            self._call_observers("stack3d_on_step_error", step=step, context=context, error=error)
        except Exception:  # noqa: BLE001 - never mask the original error
            log.exception("an on_step_error observer failed")

    def _call_observers(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation in pluggy's order, naming the plugin that fails."""
        hook = getattr(self._pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # pluggy calls LIFO
            args = {k: v for k, v in kwargs.items() if k in impl.argnames}
            try:
                impl.function(**args)
            except Exception as exc:
                raise Stack3dError(
                    f"plugin '{impl.plugin_name}' failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc

    @property
    def pluggy_manager(self) -> pluggy.PluginManager:
        """The underlying manager (for advanced use: tracing, blocking)."""
        return self._pm


_default: PluginHost | None = None


def get_host(*, refresh: bool = False) -> PluginHost:
    """The process-wide host with every installed plugin loaded (created on first use)."""
    global _default
    if _default is None or refresh:
        _default = PluginHost()
    return _default
