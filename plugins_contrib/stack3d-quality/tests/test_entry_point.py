"""Discovery through the real entry point (runs where the distribution is installed)."""

from __future__ import annotations

import importlib.metadata

import pytest

from stack3d_core import PluginHost


def test_found_through_its_entry_point() -> None:
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="stack3d")}
    if "quality" not in names:
        pytest.skip("stack3d-quality is not installed (pip install plugins_contrib/stack3d-quality)")
    assert names["quality"] == "stack3d_quality.plugin"
    host = PluginHost()
    entry = host.steps.entry("quality")
    assert entry.distribution == "stack3d-quality"
    assert set(host.hooks_of("quality")) == {"stack3d_register_steps", "stack3d_after_step"}
    assert not [f for f in host.failures if f.name == "quality"]


def test_the_core_does_not_import_this_plugin() -> None:
    import subprocess
    import sys

    code = ("import sys, stack3d_core, stack3d_steps.plugin, stack3d_io.plugin; "
            "stack3d_core.PluginHost(autoload=False); print('stack3d_quality' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
