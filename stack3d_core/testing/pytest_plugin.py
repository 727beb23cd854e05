"""pytest fixtures for stack3d plugin authors (entry point ``pytest11``: active wherever
stack3d is installed).

Imports happen inside the fixtures, so merely having stack3d installed costs other test
suites nothing.

* ``stack3d_host``: a :class:`~stack3d_core.PluginHost` with every installed plugin.
* ``stack3d_empty_host``: a host that loaded no entry point; ``register()`` your plugin
  module on it to test it in isolation.
* ``synthetic_stack``: a small :class:`~stack3d_core.testing.synth.SyntheticStack`
  (24 slices of 64×80 uint8 with every defect) with its ground truth.
* ``synthetic_project``: that stack written as a PyStack3D project folder (slices,
  ``params.toml`` running ``cropping``, ``ground_truth/``); returns the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def stack3d_host() -> Any:
    from stack3d_core.plugin.host import PluginHost

    return PluginHost()


@pytest.fixture
def stack3d_empty_host() -> Any:
    from stack3d_core.plugin.host import PluginHost

    return PluginHost(autoload=False)


@pytest.fixture
def synthetic_stack() -> Any:
    from stack3d_core.testing.synth import SynthSpec, make_stack

    return make_stack(SynthSpec(n_slices=24, shape=(64, 80), dtype="uint8", seed=1))


@pytest.fixture
def synthetic_project(tmp_path: Path, synthetic_stack: Any) -> Path:
    from stack3d_core.demo import write_synthetic_project
    from stack3d_core.plugin.host import PluginHost

    folder = tmp_path / "project"
    write_synthetic_project(folder, synthetic_stack.spec, PluginHost(), stack=synthetic_stack)
    return folder
