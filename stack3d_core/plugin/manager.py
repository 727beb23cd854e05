"""Loading plugins from the ``stack3d`` entry-point group.

pluggy's own ``load_setuptools_entrypoints`` stops at the first broken plugin with an
error that names neither the plugin nor its distribution. This module loads each entry
point itself: a plugin that fails to import or register is recorded as a
:class:`LoadFailure` (name, distribution, version, error) and skipped, and the others
still load. ``strict=True`` (or ``STACK3D_STRICT_PLUGINS=1``) raises instead.

Plugins can be disabled by entry-point name with ``disable=[...]`` or the environment
variable ``STACK3D_DISABLE_PLUGINS=name1,name2``; ``STACK3D_DISABLE_PLUGIN_AUTOLOAD=1``
loads no entry point at all (tests register plugin objects by hand instead).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from collections.abc import Iterable
from typing import Any

import attrs
import pluggy

from ..errors import PluginLoadError
from . import NAME, spec

__all__ = ["LoadFailure", "PluginInfo", "create_manager", "load_entry_points"]

log = logging.getLogger("stack3d.plugins")

ENV_DISABLE = "STACK3D_DISABLE_PLUGINS"
ENV_NO_AUTOLOAD = "STACK3D_DISABLE_PLUGIN_AUTOLOAD"
ENV_STRICT = "STACK3D_STRICT_PLUGINS"


@attrs.frozen
class PluginInfo:
    """A plugin that loaded: its entry-point name and the distribution that provides it."""

    name: str
    distribution: str
    version: str
    module: str


@attrs.frozen
class LoadFailure:
    """A plugin that could not be loaded or registered, and why."""

    name: str
    distribution: str
    version: str
    error: str

    def __str__(self) -> str:
        return f"plugin '{self.name}' (from {self.distribution} {self.version}): {self.error}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def env_disabled() -> set[str]:
    """Plugin names listed in ``STACK3D_DISABLE_PLUGINS``."""
    return {p.strip() for p in os.environ.get(ENV_DISABLE, "").split(",") if p.strip()}


def create_manager() -> pluggy.PluginManager:
    """A pluggy manager with stack3d's hook specifications and no plugin registered."""
    pm = pluggy.PluginManager(NAME)
    pm.add_hookspecs(spec)
    return pm


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown distribution>", "?"
    return dist.metadata["Name"] or "<unnamed>", dist.version or "?"


def _sorted_entry_points(group: str) -> list[md.EntryPoint]:
    """Entry points of ``group``, stack3d's own first, then by distribution and name, so
    that the registration order (and who wins a duplicate name) does not depend on the
    order in which the environment lists distributions."""
    seen: set[tuple[str, str]] = set()
    eps = []
    for ep in md.entry_points(group=group):
        dist, _ = _dist_of(ep)
        key = (dist, ep.name)
        if key in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(key)
        eps.append(ep)
    return sorted(eps, key=lambda ep: (_dist_of(ep)[0] != NAME, _dist_of(ep)[0], ep.name))


def load_entry_points(
    pm: pluggy.PluginManager,
    *,
    disable: Iterable[str] = (),
    strict: bool | None = None,
    group: str = NAME,
) -> tuple[list[PluginInfo], list[LoadFailure]]:
    """Import and register every entry point of ``group`` not disabled.

    :returns: the plugins loaded and the failures (empty in strict mode, which raises
        :class:`~stack3d_core.errors.PluginLoadError` on the first failure instead).
    """
    strict = _env_flag(ENV_STRICT) if strict is None else strict
    blocked = set(disable) | env_disabled()
    loaded: list[PluginInfo] = []
    failures: list[LoadFailure] = []
    if _env_flag(ENV_NO_AUTOLOAD):
        return loaded, failures
    for ep in _sorted_entry_points(group):
        dist, version = _dist_of(ep)
        if ep.name in blocked:
            pm.set_blocked(ep.name)
            continue
        if pm.is_blocked(ep.name):
            continue
        if pm.get_plugin(ep.name) is not None:
            taken = next((p for p in loaded if p.name == ep.name), None)
            owner = f"{taken.distribution} {taken.version}" if taken else "another plugin"
            failure = LoadFailure(ep.name, dist, version,
                                  f"entry-point name '{ep.name}' is already used by {owner}; rename one of them")
            if strict:
                raise PluginLoadError(str(failure))
            log.warning("skipped %s", failure)
            failures.append(failure)
            continue
        try:
            plugin: Any = ep.load()
            pm.register(plugin, name=ep.name)
            try:
                pm.check_pending()  # a misspelled hook name in this plugin
            except pluggy.PluginValidationError:
                pm.unregister(name=ep.name)
                raise
        except Exception as exc:  # noqa: BLE001 - any import-time error is the plugin's
            failure = LoadFailure(ep.name, dist, version, f"{type(exc).__name__}: {exc}")
            if strict:
                raise PluginLoadError(str(failure)) from exc
            log.warning("skipped %s", failure)
            failures.append(failure)
            continue
        loaded.append(PluginInfo(ep.name, dist, version, ep.value))
    return loaded, failures
