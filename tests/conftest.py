"""Shared fixtures of stack3d's own tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import PluginHost

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PLUGINS_SRC = Path(__file__).parent / "plugins"


def write_slices(folder: Path, stack: np.ndarray, *, z_step: float = 0.01, digits: int = 4,
                 compression: str | None = None, extratags: list | None = None) -> list[Path]:
    """Write a stack as PyStack3D-named single-page TIFFs (``slice_0000_z=0.0000um.tif``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(stack):
        path = folder / f"slice_{k:0{digits}d}_z={k * z_step:.4f}um.tif"
        tifffile.imwrite(path, image, compression=compression, extratags=extratags or [],
                         metadata=None, software=False, photometric="minisblack")
        paths.append(path)
    return paths


def tree_digest(folder: Path, patterns: tuple[str, ...] = ("*.tif", "*.npy")) -> dict[str, str]:
    """``relative path -> sha256`` of the files below ``folder`` matching ``patterns``."""
    out = {}
    for pattern in patterns:
        for path in sorted(p for p in folder.rglob(pattern) if p.is_file()):
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def make_stack(n: int = 6, rows: int = 40, cols: int = 56, dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    return rng.integers(0, hi, size=(n, rows, cols), endpoint=True).astype(dtype)


PARAMS_CROP = """\
ind_min = 0
ind_max = 99999
channels = ["."]
nproc = 1
process_steps = ["cropping"]
history = []

[cropping]
area = [10, 50, 5, 35]
"""


def steps_host(*, autoload: bool = True) -> PluginHost:
    """A plugin host with the built-in steps, registered through their ``steps`` entry point.

    :param autoload: load every installed plugin (the ``plots`` observer included), as a
        user's session does; ``False``: only the built-in ``io`` and ``steps`` plugins.

    Asserts that each built-in step name is registered to the class of its
    :mod:`stack3d_steps` module, so a test importing a step class runs that very class.
    """
    import stack3d_io.plugin
    import stack3d_steps.plugin

    if autoload:
        host = PluginHost()
    else:
        host = PluginHost(autoload=False)
        host.register(stack3d_io.plugin, "io")
        host.register(stack3d_steps.plugin, "steps")
    for cls in stack3d_steps.plugin.stack3d_register_steps():
        assert host.steps.get(cls.name) is cls, f"step {cls.name!r} is not registered from stack3d_steps"
    return host


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """:func:`steps_host` shared by a test module (modules may define their own ``host``)."""
    return steps_host()


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A PyStack3D-style project: 6 uint8 slices of 40x56 and a params.toml running cropping."""
    folder = tmp_path / "project"
    write_slices(folder, make_stack())
    (folder / "params.toml").write_text(PARAMS_CROP)
    return folder


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test plugin distributions (one working, one broken) installed by pip into a
    private folder; put it on PYTHONPATH of a subprocess to see them through real entry
    points without touching the test environment."""
    target = tmp_path_factory.mktemp("plugin_site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", "--target", str(target),
           str(PLUGINS_SRC / "stack3d-testplugin"), str(PLUGINS_SRC / "stack3d-brokenplugin")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"installing the test plugins failed:\n{proc.stdout}\n{proc.stderr}"
    return target


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m stack3d_core ARGS`` in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "stack3d_core", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)
