"""resampling run through PyStack3D 2026.2 and through stack3d on the same project.

Skipped unless PyStack3D is available (``STACK3D_PYSTACK3D_PYTHON``, see
``test_pystack3d_compat.py``).

Tolerances (docs/steps/resampling.md), linear method:

* same output names (``policy.format(slice_nb=f"{j:04d}", z_coord=f"{z:.4f}")``) and the
  same slices within one gray level (PyStack3D truncates, stack3d rounds; an output on an
  input z is that input exactly in stack3d, ``I_a + (z_b - z_a) (I_b - I_a) / (z_b - z_a)``
  truncated in PyStack3D);
* ``zpos_in.npy`` equal; ``zpos_out.npy`` equal except its end;
* where PyStack3D is wrong: when the last input z lies on the grid, stack3d writes that
  last slice and PyStack3D (``np.arange`` without the end point) does not;
* ``stats.npy``: PyStack3D pads to ``max(n_in, n_out)`` rows and its "input" column holds
  the input slices; stack3d has one row per output, "input" being the upper source slice.
  The output columns agree (raw within 1e-9, cast within one gray level).
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


PARAMS = """\
ind_min = 0
ind_max = 99999
channels = ["."]
nproc = 1
process_steps = ["resampling"]
history = []

[resampling]
policy = "slice_{slice_nb}_z={z_coord}um.tif"
dz = 0.01
"""


def twin_run(tmp_path: Path, nonuniform: bool, dtype: str) -> tuple[Path, Path, np.ndarray]:
    stack = make_stack(SynthSpec(n_slices=12, shape=(24, 32), dtype=dtype, seed=6, gains=False, background=False,
                                 stripes=False, noise_sigma=0.01, nonuniform_z=nonuniform,
                                 drift_px_per_slice=(0.0, 0.0), jitter_px=0.0))
    ours = tmp_path / "ours"
    ours.mkdir(parents=True)
    for name, image in stack.iter_observed():
        tifffile.imwrite(ours / name, image, photometric="minisblack")
    (ours / "params.toml").write_text(PARAMS)
    theirs = tmp_path / "theirs"
    shutil.copytree(ours, theirs)
    run_pystack3d(theirs, ["resampling"], python=PYTHON)
    Stack3d(ours, host=steps_host()).eval(["resampling"], show_pbar=False)
    return ours / "process/resampling", theirs / "process/resampling", stack.z_um


@pytest.mark.parametrize(("nonuniform", "dtype"), [(True, "uint8"), (False, "uint16")])
def test_linear_matches_pystack3d(tmp_path: Path, nonuniform: bool, dtype: str) -> None:
    ours, theirs, z_in = twin_run(tmp_path, nonuniform, dtype)
    names_ours = sorted(p.name for p in ours.glob("*.tif"))
    names_theirs = sorted(p.name for p in theirs.glob("*.tif"))
    last_on_grid = abs(round(z_in[-1] / 0.01) * 0.01 - z_in[-1]) < 1e-9
    assert last_on_grid == (not nonuniform)  # uniform z: 0 .. 0.11, the end point lies on the grid
    if last_on_grid:  # PyStack3D's np.arange drops it
        assert names_ours[:-1] == names_theirs and names_ours[-1].endswith(f"z={z_in[-1]:.4f}um.tif")
    else:
        assert names_ours == names_theirs
    for name in names_theirs:
        a = tifffile.imread(ours / name).astype(np.int64)
        b = tifffile.imread(theirs / name).astype(np.int64)
        assert np.abs(a - b).max() <= 1, name
    zo, zt = np.load(ours / "outputs/zpos_out.npy"), np.load(theirs / "outputs/zpos_out.npy")
    np.testing.assert_array_equal(zo[: len(zt)], zt)
    assert len(zo) == len(zt) + int(last_on_grid)
    np.testing.assert_array_equal(np.load(ours / "outputs/zpos_in.npy"), np.load(theirs / "outputs/zpos_in.npy"))
    s_ours, s_theirs = np.load(ours / "outputs/stats.npy"), np.load(theirs / "outputs/stats.npy")
    m = len(zt)
    assert s_theirs.shape == (max(len(z_in), m), 3, 3) and s_ours.shape == (len(zo), 3, 3)
    np.testing.assert_allclose(s_ours[:m, 1], s_theirs[:m, 1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s_ours[:m, 2], s_theirs[:m, 2], rtol=0, atol=1.0)
