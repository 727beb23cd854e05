"""Shared fixtures: a host with the built-in steps and this plugin, a small synthetic project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import stack3d_quality.plugin

from stack3d_core import PluginHost
from stack3d_core.demo import write_synthetic_project
from stack3d_core.testing.synth import SyntheticStack, SynthSpec


def quality_host() -> PluginHost:
    """Every installed plugin but ``plots`` (faster), plus this one when it is not installed."""
    host = PluginHost(disable=("plots",))
    if "quality" not in host.steps:
        host.register(stack3d_quality.plugin, "quality", distribution="stack3d-quality (not installed)")
    return host


@pytest.fixture
def host() -> PluginHost:
    return quality_host()


SPEC = SynthSpec(n_slices=10, shape=(96, 96), dtype="uint8", seed=3, drift_px_per_slice=(1.5, -1.0),
                 jitter_px=1.0, gains=False, background=False, stripes=False, noise_sigma=0.03,
                 nonuniform_z=False, pixel_size_um=0.005, dz_um=0.005)
"""Drifting slices (1.5, −1 px per slice) without background, gains or curtains."""


@pytest.fixture
def project(tmp_path: Path, host: PluginHost) -> tuple[Path, SyntheticStack]:
    folder = tmp_path / "project"
    stack = write_synthetic_project(folder, SPEC, host)
    return folder, stack


def params(**tables: Any) -> dict[str, Any]:
    """A params.toml dict: top-level keys and tables given as keyword arguments."""
    base: dict[str, Any] = {"channels": ["."], "nproc": 1, "history": []}
    base.update(tables)
    return base
