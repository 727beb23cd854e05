"""destriping run through PyStack3D 2026.2 and through stack3d on the same project.

Skipped unless PyStack3D is available (``STACK3D_PYSTACK3D_PYTHON``, see
``test_pystack3d_compat.py``).

Tolerances (docs/steps/destriping.md):

* VSNR: the same pyvsnr computation (numpy + pyFFTW, float32); PyStack3D truncates the
  result to the dtype, stack3d rounds it, so ``0 <= ours - theirs <= 1`` on every pixel.
* wavelet–Fourier, when every vertical-coefficient array has an even number of rows:
  ``0 <= ours - theirs <= 1`` as well. Differences where PyStack3D is wrong: an odd image
  size comes out one pixel larger in PyStack3D (stack3d keeps the input shape; the common
  part still agrees within one gray level), and an odd coefficient length shifts
  PyStack3D's Fourier damping by one frequency (the zero frequency is not fully removed):
  larger differences, asserted.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import PluginHost, Stack3d, hookimpl
from stack3d_core.testing.synth import SynthSpec, make_stack
from stack3d_steps.destriping import STEPS

pytestmark = pytest.mark.compat


def _pystack3d_python() -> str | None:
    explicit = os.environ.get("STACK3D_PYSTACK3D_PYTHON")
    if explicit:
        return explicit
    if importlib.util.find_spec("pystack3d") is not None:
        return sys.executable
    return None


PYTHON = _pystack3d_python()
if PYTHON is None:
    pytest.skip("PyStack3D is not installed (set STACK3D_PYSTACK3D_PYTHON to an interpreter that has it)",
                allow_module_level=True)

RUNNER = """
import sys
from pystack3d import Stack3d
Stack3d(sys.argv[1]).eval(process_steps=sys.argv[2].split(","), nproc=1, show_pbar=False)
"""

HEAD = """\
ind_min = 0
ind_max = 99999
channels = ["."]
nproc = 1
process_steps = ["destriping"]
history = []

[destriping]
"""


class _Plugin:
    @hookimpl
    def stack3d_register_steps(self):  # noqa: ANN201
        return STEPS


def twin_projects(tmp_path: Path, table: str, shape: tuple[int, int], n: int = 3) -> tuple[Path, Path, tuple[str, ...]]:
    stack = make_stack(SynthSpec(n_slices=n, shape=shape, dtype="uint8", seed=2, gains=False, background=False,
                                 stripes=True, noise_sigma=0.0, nonuniform_z=False, drift_px_per_slice=(0.0, 0.0),
                                 jitter_px=0.0))
    ours = tmp_path / "ours"
    ours.mkdir(parents=True)
    for name, image in stack.iter_observed():
        tifffile.imwrite(ours / name, image, photometric="minisblack")
    (ours / "params.toml").write_text(HEAD + table)
    theirs = tmp_path / "theirs"
    shutil.copytree(ours, theirs)
    proc = subprocess.run([PYTHON, "-c", RUNNER, str(theirs), "destriping"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"PyStack3D failed:\n{proc.stdout}\n{proc.stderr}"
    host = PluginHost()
    host.register(_Plugin(), "destriping-under-test")
    Stack3d(ours, host=host).eval(["destriping"], show_pbar=False)
    return ours / "process/destriping", theirs / "process/destriping", stack.names


def differences(ours: Path, theirs: Path, names: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    assert sorted(p.name for p in ours.glob("*.tif")) == sorted(p.name for p in theirs.glob("*.tif")) == sorted(names)
    return [(tifffile.imread(ours / n), tifffile.imread(theirs / n)) for n in names]


def assert_rounding_only(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for a, b in pairs:
        d = a.astype(np.int64) - b[: a.shape[0], : a.shape[1]].astype(np.int64)
        assert d.min() >= 0 and d.max() <= 1, (d.min(), d.max())  # rounding vs truncation


def test_vsnr_matches_within_rounding(tmp_path: Path) -> None:
    table = 'maxit = 30\ncvg_threshold = 0.0\nfilters = [{ name = "Gabor", noise_level = 20, sigma = [0.5, 200], theta = 0 }]\n'
    ours, theirs, names = twin_projects(tmp_path, table, (64, 80))
    pairs = differences(ours, theirs, names)
    assert_rounding_only(pairs)
    assert any((a != b).any() for a, b in pairs)  # not trivially equal: rounding really differs
    s_ours, s_theirs = np.load(ours / "outputs/stats.npy"), np.load(theirs / "outputs/stats.npy")
    np.testing.assert_array_equal(s_ours[:, 0], s_theirs[:, 0])  # input statistics
    np.testing.assert_allclose(s_ours[:, 2], s_theirs[:, 2], atol=1.0)  # cast output within a gray level


def test_wavelet_matches_within_rounding_on_even_coefficient_lengths(tmp_path: Path) -> None:
    table = 'wavelet_decomposition = { wavelet = "coif3", level = 4, sigma = 4 }\n'
    ours, theirs, names = twin_projects(tmp_path, table, (80, 96))  # coif3 cV rows: 20, 24, 32, 48
    assert_rounding_only(differences(ours, theirs, names))


def test_wavelet_odd_sizes_grow_in_pystack3d_only(tmp_path: Path) -> None:
    table = 'wavelet_decomposition = { wavelet = "coif3", level = 4, sigma = 4 }\n'
    ours, theirs, names = twin_projects(tmp_path, table, (79, 95))
    pairs = differences(ours, theirs, names)
    for a, b in pairs:
        assert a.shape == (79, 95) and b.shape == (80, 96)  # PyStack3D: one more row and column
    assert_rounding_only(pairs)  # the common part agrees


def test_wavelet_odd_coefficient_lengths_differ(tmp_path: Path) -> None:
    # 64 rows: coif3 cV arrays of 19, 22, 28, 40 rows. PyStack3D's damping uses
    # m = arange(-M//2, M//2) after fftshift, which for odd M is one frequency off: the
    # zero frequency keeps 1 - exp(-1/(2 sigma^2)) (39 % at sigma = 1) of a vertical stripe.
    table = 'wavelet_decomposition = { wavelet = "coif3", level = 4, sigma = 1 }\n'
    ours, theirs, names = twin_projects(tmp_path, table, (64, 96))
    worst = max(int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max()) for a, b in differences(ours, theirs, names))
    assert worst > 1
