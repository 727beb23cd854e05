"""destriping run through PyStack3D 2026.2 and through stack3d on the same project.

Skipped unless PyStack3D is available (``STACK3D_PYSTACK3D_PYTHON``, see
``test_pystack3d_compat.py``).

Tolerances (docs/steps/destriping.md):

* VSNR: PyStack3D truncates the result to the dtype, stack3d rounds it, so
  ``0 <= ours - theirs <= 1`` on every pixel. With ``backend = "pyvsnr"`` it is the same
  pyvsnr computation (numpy + pyFFTW, float32); with ``backend = "stack3d"`` (the CPU
  default) the float results differ from pyvsnr's by float32 rounding only (at most 1e-5 of
  the slice maximum, tests/steps/test_vsnr_fast.py), far below the half gray level that
  could move a rounded value out of that range. ``backend`` is a stack3d key: it goes into
  stack3d's params.toml only (PyStack3D refuses unknown keys).
* wavelet–Fourier, when every vertical-coefficient array has an even number of rows:
  ``0 <= ours - theirs <= 1`` as well. Differences where PyStack3D is wrong: an odd image
  size comes out one pixel larger in PyStack3D (stack3d keeps the input shape; the common
  part still agrees within one gray level), and an odd coefficient length shifts
  PyStack3D's Fourier damping by one frequency (the zero frequency is not fully removed):
  larger differences, asserted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import Stack3d
from stack3d_core.testing.pystack3d import require_pystack3d, run_pystack3d
from stack3d_core.testing.synth import SynthSpec, make_stack

from ..conftest import steps_host

pytestmark = pytest.mark.compat

PYTHON = require_pystack3d()


HEAD = """\
ind_min = 0
ind_max = 99999
channels = ["."]
nproc = 1
process_steps = ["destriping"]
history = []

[destriping]
"""


def twin_projects(tmp_path: Path, table: str, shape: tuple[int, int], n: int = 3,
                  ours_only: str = "") -> tuple[Path, Path, tuple[str, ...]]:
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
    if ours_only:  # stack3d-only keys, after the copy
        (ours / "params.toml").write_text(HEAD + table + ours_only)
    run_pystack3d(theirs, ["destriping"], python=PYTHON)
    Stack3d(ours, host=steps_host()).eval(["destriping"], show_pbar=False)
    return ours / "process/destriping", theirs / "process/destriping", stack.names


def differences(ours: Path, theirs: Path, names: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    assert sorted(p.name for p in ours.glob("*.tif")) == sorted(p.name for p in theirs.glob("*.tif")) == sorted(names)
    return [(tifffile.imread(ours / n), tifffile.imread(theirs / n)) for n in names]


def assert_rounding_only(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for a, b in pairs:
        d = a.astype(np.int64) - b[: a.shape[0], : a.shape[1]].astype(np.int64)
        assert d.min() >= 0 and d.max() <= 1, (d.min(), d.max())  # rounding vs truncation


@pytest.mark.parametrize("backend", ["pyvsnr", "stack3d"])
def test_vsnr_matches_within_rounding(tmp_path: Path, backend: str) -> None:
    table = 'maxit = 30\ncvg_threshold = 0.0\nfilters = [{ name = "Gabor", noise_level = 20, sigma = [0.5, 200], theta = 0 }]\n'
    ours, theirs, names = twin_projects(tmp_path, table, (64, 80), ours_only=f'backend = "{backend}"\n')
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
