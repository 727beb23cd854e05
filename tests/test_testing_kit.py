"""The plugin author's kit: the pytest11 fixtures and helpers work as documented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stack3d_core import PluginHost, Stack3d


def test_synthetic_stack_fixture(synthetic_stack) -> None:
    volume = synthetic_stack.volume()
    assert volume.shape == (24, 64, 80) and volume.dtype == np.uint8
    assert len(synthetic_stack.truth["slices"]["dx_px"]) == 24


def test_synthetic_project_fixture_runs(synthetic_project: Path) -> None:
    result = Stack3d(synthetic_project).eval(show_pbar=False)
    assert "cropping" in result.ran
    truth = json.loads((synthetic_project / "ground_truth/truth.json").read_text())
    assert truth["names"] == sorted(p.name for p in synthetic_project.glob("slice_*.tif"))


def test_host_fixtures(stack3d_host: PluginHost, stack3d_empty_host: PluginHost) -> None:
    assert "cropping" in stack3d_host.steps
    assert len(stack3d_empty_host.steps) == 0 and stack3d_empty_host.plugins == []
    import stack3d_steps.plugin

    stack3d_empty_host.register(stack3d_steps.plugin, "steps_again")
    assert stack3d_empty_host.steps.entry("cropping").plugin == "steps_again"
