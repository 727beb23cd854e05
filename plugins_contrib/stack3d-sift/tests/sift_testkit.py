"""Shared helpers of the stack3d-sift tests: synthetic stacks with affine drift, the grid
error against the truth, projects on disk, a host with the plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from stack3d_core import PluginHost
from stack3d_core.testing.synth import SyntheticStack, SynthSpec, make_stack

import stack3d_sift.plugin

STEP = "sift_registration"


def affine_stack(n: int = 100, size: int = 192, seed: int = 4, **kw: Any) -> SyntheticStack:
    """Static, texture-rich content (``dz`` 1e-6 µm: the material does not change along z)
    moved by drift + jitter + rotation <= 2 deg + scale +-1 % + shear <= 0.01, noise 1 %."""
    spec = dict(n_slices=n, shape=(size, size), seed=seed, gains=False, background=False, stripes=False,
                noise_sigma=0.01, nonuniform_z=False, rotation_deg_max=2.0, scale_max=0.01, shear_max=0.01,
                dz_um=1e-6, name_pattern="slice_{index:04d}_z={z:.8f}um.tif", jitter_px=0.5,
                drift_px_per_slice=(0.3, -0.2))
    spec.update(kw)
    return make_stack(SynthSpec(**spec))


def grid_error(cumulative: np.ndarray, stack: SyntheticStack) -> np.ndarray:
    """Per slice: RMS distance (px) between a 16 x 16 grid covering the slice mapped by
    ``cumulative[k]`` and by the true ``stack.matrix(k)`` (benchmarks/ACCURACY.md's
    registration measure)."""
    h, w = stack.shape
    yy, xx = np.meshgrid(np.linspace(0, h - 1, 16), np.linspace(0, w - 1, 16), indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    truth = np.stack([stack.matrix(k) for k in range(len(stack))])
    d = np.einsum("kab,bp->kap", np.asarray(cumulative)[:, :2] - truth[:, :2], pts)
    return np.sqrt((d**2).sum(axis=1).mean(axis=1))


def rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def host_with_plugin() -> PluginHost:
    """Every installed plugin (the built-in steps and formats), plus this one when it is not
    installed (source checkout)."""
    host = PluginHost()
    if STEP not in host.steps:
        host.register(stack3d_sift.plugin, "sift", "stack3d-sift")
    return host


def write_channels(folder: Path, stack: SyntheticStack, channels: dict[str, Any]) -> Path:
    """One TIFF folder per channel; ``channels[name](k, observed_k)`` gives its slice."""
    import tifffile

    for ch, make in channels.items():
        sub = folder / ch if ch != "." else folder
        sub.mkdir(parents=True, exist_ok=True)
        for k, (name, image) in enumerate(stack.iter_observed()):
            tifffile.imwrite(sub / name, make(k, image))
    return folder
