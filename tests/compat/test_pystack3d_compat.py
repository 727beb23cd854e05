"""The same project run through PyStack3D and through stack3d; outputs compared.

PyStack3D is never a dependency of stack3d: it runs in a Python interpreter of its own,
given by ``STACK3D_PYSTACK3D_PYTHON`` (``.ci/run`` makes one with PyStack3D 2026.2), or in
this interpreter if ``pystack3d`` happens to be importable. Skipped otherwise.

Tolerances: cropping is exact (same pixels, same names, same ``stats.npy``), except where
PyStack3D is wrong (documented in docs/pystack3d-differences.md): an ``area`` beyond the
image wraps around in PyStack3D (negative numpy index) and is clamped in stack3d.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import Stack3d
from stack3d_core.testing.pystack3d import require_pystack3d, run_pystack3d

from ..conftest import make_stack, write_slices

pytestmark = pytest.mark.compat

PYTHON = require_pystack3d()


def twin_projects(tmp_path: Path, params: str, channels: tuple[str, ...], dtype: str) -> tuple[Path, Path]:
    base = tmp_path / "ours"
    stack = make_stack(n=7, rows=48, cols=64, dtype=dtype, seed=5)
    for i, ch in enumerate(channels):
        write_slices(base if ch == "." else base / ch, stack // (i + 1))
    (base / "params.toml").write_text(params)
    theirs = tmp_path / "theirs"
    shutil.copytree(base, theirs)
    return base, theirs


def compare_step(ours: Path, theirs: Path, step: str, channel: str) -> None:
    sub = Path("process") / step / ("" if channel == "." else channel)
    names_ours = sorted(p.name for p in (ours / sub).glob("*.tif"))
    names_theirs = sorted(p.name for p in (theirs / sub).glob("*.tif"))
    assert names_ours == names_theirs and names_ours
    for name in names_ours:
        a = tifffile.imread(ours / sub / name)
        b = tifffile.imread(theirs / sub / name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b, err_msg=f"{step}/{channel}/{name}")
    np.testing.assert_array_equal(np.load(ours / sub / "outputs/stats.npy"), np.load(theirs / sub / "outputs/stats.npy"))


PARAMS = """\
ind_min = {ind_min}
ind_max = {ind_max}
channels = {channels}
nproc = 1
process_steps = ["cropping", "cropping_final"]
history = []

[cropping]
area = [5, 60, 3, 40]

[cropping_final]
area = [2, 30, 4, 20]
"""


@pytest.mark.parametrize(("channels", "dtype", "ind"), [((".",), "uint8", (0, 99999)),
                                                         (("SE2", "ESB"), "uint16", (1, 5))])
def test_cropping_matches_pystack3d(tmp_path: Path, channels: tuple[str, ...], dtype: str, ind: tuple[int, int]) -> None:
    params = PARAMS.format(channels=str(list(channels)).replace("'", '"'), ind_min=ind[0], ind_max=ind[1])
    ours, theirs = twin_projects(tmp_path, params, channels, dtype)
    run_pystack3d(theirs, ["cropping", "cropping_final"], python=PYTHON)
    Stack3d(ours).eval(show_pbar=False, keep_intermediates=True)  # PyStack3D's layout
    for step in ("cropping", "cropping_final"):
        for ch in channels:
            compare_step(ours, theirs, step, ch)
    assert "history = []" in (ours / "params.toml").read_text()  # ours never rewrites the file


def test_area_beyond_the_image_is_where_pystack3d_is_wrong(tmp_path: Path) -> None:
    # 48 rows, ymax = 50: PyStack3D computes imin = 48 - 50 = -2, a negative numpy index.
    # With ymin = 0 it keeps the last 2 rows only; stack3d clamps ymax to 48 (all rows).
    params = PARAMS.format(channels='["."]', ind_min=0, ind_max=99999).replace(
        "area = [5, 60, 3, 40]", "area = [5, 60, 0, 50]")
    ours, theirs = twin_projects(tmp_path / "a", params, (".",), "uint8")
    run_pystack3d(theirs, ["cropping"], python=PYTHON)
    Stack3d(ours).eval(["cropping"], show_pbar=False)
    name = sorted((ours / "process/cropping").glob("*.tif"))[0].name
    raw = tifffile.imread(ours / name)
    np.testing.assert_array_equal(tifffile.imread(theirs / "process/cropping" / name), raw[-2:, 5:60])
    np.testing.assert_array_equal(tifffile.imread(ours / "process/cropping" / name), raw[:, 5:60])
    # With ymin = 3 the wrapped range [-2:45] is empty and PyStack3D crashes; stack3d crops.
    params = params.replace("area = [5, 60, 0, 50]", "area = [5, 60, 3, 50]")
    ours, theirs = twin_projects(tmp_path / "b", params, (".",), "uint8")
    failed = run_pystack3d(theirs, ["cropping"], python=PYTHON, check=False)
    assert failed.returncode != 0 and "zero-size array" in failed.stderr
    Stack3d(ours).eval(["cropping"], show_pbar=False)
    np.testing.assert_array_equal(tifffile.imread(ours / "process/cropping" / name), raw[:45, 5:60])
