"""The plugin system of stack3d.

A plugin is a module (or any object) with functions named after the hook specifications
in :mod:`stack3d_core.plugin.spec`, each decorated with :data:`hookimpl`. It is announced
to stack3d through an entry point in the ``stack3d`` group of its distribution::

    [project.entry-points.stack3d]
    myplugin = "my_package.plugin"

The built-in steps and formats are registered exactly this way (``steps`` and ``io`` in
stack3d's own ``pyproject.toml``). :mod:`.manager` loads the entry points; the typed
facade :class:`~stack3d_core.plugin.host.PluginHost` is what the rest of stack3d uses.
"""

from __future__ import annotations

import pluggy

NAME = "stack3d"
"""Project name of the pluggy markers and the entry-point group."""

hookimpl = pluggy.HookimplMarker(NAME)
"""Marker for hook implementations: ``@hookimpl def stack3d_register_steps(): ...``."""

hookspec = pluggy.HookspecMarker(NAME)
"""Marker for hook specifications (used in :mod:`.spec` only)."""

__all__ = ["NAME", "hookimpl", "hookspec"]
