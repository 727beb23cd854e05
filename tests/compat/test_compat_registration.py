"""registration_calculation + registration_transformation run through PyStack3D 2026.2 and
through stack3d on the same project.

Skipped unless PyStack3D is available (``STACK3D_PYSTACK3D_PYTHON``, see
``test_pystack3d_compat.py``).

Tolerances (docs/steps/registration_transformation.md):

* ``tmats.npy``: the same pystackreg calls, equal within 1e-6 (method = "chain");
* ``tmats_cumul.npy``, ``inds_crop.txt``, ``img_crop.npy``: equal for translations;
* slices: ``0 <= stack3d - PyStack3D <= 1`` gray level (stack3d rounds, PyStack3D truncates;
  both interpolate bilinearly with the same formula: scipy ``affine_transform`` on float32
  versus scikit-image ``warp`` on float64); NaN (``mode = "constant"``) is 0 in both;
* ``stats.npy``: the input column equal; the cast output within one gray level;
* the warp alone, every ``mode``, affine and blocks, against PyStack3D's
  ``img_transformation``: within 2e-4 gray level, NaN at the same pixels.

Where PyStack3D is wrong (asserted as differences):

* rotations are composed as ``T_(k-1) @ M_k``; stack3d's ``M_k @ T_(k-1)`` follows the truth;
* matrices registered on an ``area`` are used as if the area's top-left pixel were the
  image's; stack3d converts them to full-image coordinates;
* block (piecewise) warps lose border pixels to round-off in scikit-image's per-triangle
  estimate; stack3d uses each block's matrix exactly.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import Stack3d
from stack3d_core.testing.pystack3d import require_pystack3d, run_pystack3d
from stack3d_core.testing.synth import SyntheticStack, SynthSpec, make_stack

from ..conftest import steps_host

pytestmark = [pytest.mark.compat, pytest.mark.slow]

PYTHON = require_pystack3d()

CALC, TRANS = "registration_calculation", "registration_transformation"


def synth(rotation: float = 0.0, n: int = 12, shape: tuple[int, int] = (80, 96), seed: int = 3) -> SyntheticStack:
    return make_stack(SynthSpec(n_slices=n, shape=shape, seed=seed, gains=False, background=False, stripes=False,
                                noise_sigma=0.01, nonuniform_z=False, rotation_deg_max=rotation, dz_um=1e-6,
                                name_pattern="slice_{index:04d}_z={z:.8f}um.tif"))


def twin_run(tmp_path: Path, stack: SyntheticStack, calc: str, trans: str) -> tuple[Path, Path]:
    ours = tmp_path / "ours"
    ours.mkdir(parents=True)
    for name, image in stack.iter_observed():
        tifffile.imwrite(ours / name, image, photometric="minisblack")
    (ours / "params.toml").write_text(
        'ind_min = 0\nind_max = 99999\nchannels = ["."]\nnproc = 1\n'
        f'process_steps = ["{CALC}", "{TRANS}"]\nhistory = []\n\n[{CALC}]\n{calc}\n\n[{TRANS}]\n{trans}\n')
    theirs = tmp_path / "theirs"
    shutil.copytree(ours, theirs)
    run_pystack3d(theirs, [CALC, TRANS], python=PYTHON, ignore_warnings=True)
    Stack3d(ours, host=steps_host()).eval(show_pbar=False)
    return ours, theirs


def load(folder: Path, rel: str) -> np.ndarray:
    path = folder / "process" / rel
    return np.loadtxt(path) if path.suffix == ".txt" else np.load(path)


def compare_slices(ours: Path, theirs: Path) -> np.ndarray:
    sub = Path("process") / TRANS
    names = sorted(p.name for p in (ours / sub).glob("*.tif"))
    assert names == sorted(p.name for p in (theirs / sub).glob("*.tif")) and names
    diffs = []
    for name in names:
        a = tifffile.imread(ours / sub / name).astype(np.int64)
        b = tifffile.imread(theirs / sub / name).astype(np.int64)
        assert a.shape == b.shape, name
        diffs.append(a - b)
    return np.stack(diffs)


def compare_stats(ours: Path, theirs: Path) -> None:
    a, b = load(ours, f"{TRANS}/outputs/stats.npy"), load(theirs, f"{TRANS}/outputs/stats.npy")
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    assert np.abs(a[:, 2] - b[:, 2]).max() <= 1.0


def test_translation_chain_matches_pystack3d(tmp_path: Path) -> None:
    ours, theirs = twin_run(tmp_path, synth(), 'transformation = "TRANSLATION"\nnb_blocks = [1, 1]', "cropping = true")
    np.testing.assert_allclose(load(ours, f"{CALC}/tmats.npy"), load(theirs, f"{CALC}/tmats.npy"), atol=1e-6)
    np.testing.assert_allclose(load(ours, f"{TRANS}/outputs/tmats_cumul.npy"),
                               load(theirs, f"{TRANS}/outputs/tmats_cumul.npy"), atol=1e-6)
    np.testing.assert_array_equal(load(ours, f"{TRANS}/outputs/inds_crop.txt"),
                                  load(theirs, f"{TRANS}/outputs/inds_crop.txt"))
    np.testing.assert_array_equal(load(ours, f"{TRANS}/outputs/img_crop.npy"),
                                  load(theirs, f"{TRANS}/outputs/img_crop.npy"))
    diff = compare_slices(ours, theirs)
    assert diff.min() >= 0 and diff.max() <= 1  # rounding versus truncation
    compare_stats(ours, theirs)


def test_options_match_pystack3d(tmp_path: Path) -> None:
    calc = 'transformation = "TRANSLATION"\nnb_blocks = [1, 1]\narea = [4, 90, 6, 76]\nthreshold = 120'
    trans = ('mode = "edge"\nsubpixel = false\nbox_size_averaging = 5\nconstant_drift = [0.3, -0.2]')
    ours, theirs = twin_run(tmp_path, synth(seed=8), calc, trans)
    np.testing.assert_allclose(load(ours, f"{CALC}/tmats.npy"), load(theirs, f"{CALC}/tmats.npy"), atol=1e-6)
    np.testing.assert_allclose(load(ours, f"{TRANS}/outputs/tmats_cumul.npy"),
                               load(theirs, f"{TRANS}/outputs/tmats_cumul.npy"), atol=1e-6)
    diff = compare_slices(ours, theirs)
    assert diff.min() >= 0 and diff.max() <= 1
    compare_stats(ours, theirs)


@pytest.mark.parametrize("mode", ["reflect", "wrap"])
def test_blocks_match_pystack3d(tmp_path: Path, mode: str) -> None:
    calc = 'transformation = "TRANSLATION"\nnb_blocks = [2, 2]'
    ours, theirs = twin_run(tmp_path, synth(seed=9), calc, f'nb_blocks = [2, 2]\nmode = "{mode}"')
    np.testing.assert_allclose(load(ours, f"{CALC}/tmats.npy"), load(theirs, f"{CALC}/tmats.npy"), atol=1e-6)
    diff = compare_slices(ours, theirs)
    assert diff.min() >= 0 and diff.max() <= 1


def test_block_crop_mask_round_off_is_where_pystack3d_is_wrong(tmp_path: Path) -> None:
    calc = 'transformation = "TRANSLATION"\nnb_blocks = [2, 2]'
    ours, theirs = twin_run(tmp_path, synth(seed=3), calc, "nb_blocks = [2, 2]\ncropping = true")
    mine, pys = load(ours, f"{TRANS}/outputs/img_crop.npy"), load(theirs, f"{TRANS}/outputs/img_crop.npy")
    assert np.all(mine >= pys)  # every pixel PyStack3D keeps is kept
    lost = np.argwhere(mine > pys)  # valid on every slice, but NaN somewhere in PyStack3D: round-off
    h, w = mine.shape
    assert len(lost) > 0
    assert (np.isin(lost[:, 0], [0, h - 1]) | np.isin(lost[:, 1], [0, w - 1])).all()  # the image border only
    a, b = load(ours, f"{TRANS}/outputs/inds_crop.txt"), load(theirs, f"{TRANS}/outputs/inds_crop.txt")
    assert (a[1] - a[0]) * (a[3] - a[2]) >= (b[1] - b[0]) * (b[3] - b[2])


def _grid_error(cumulative: np.ndarray, stack: SyntheticStack) -> float:
    h, w = stack.shape
    yy, xx = np.meshgrid(np.linspace(0, h - 1, 16), np.linspace(0, w - 1, 16), indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    truth = np.stack([stack.matrix(k) for k in range(len(stack))])
    d = np.einsum("kab,bp->kap", cumulative[:, 0, :2] - truth[:, :2], pts)
    return float(np.sqrt((d**2).sum(axis=1).mean(axis=1)).max())


def test_rigid_composition_order_is_where_pystack3d_is_wrong(tmp_path: Path) -> None:
    stack = synth(rotation=3.0, n=16)
    ours, theirs = twin_run(tmp_path, stack, 'transformation = "RIGID_BODY"\nnb_blocks = [1, 1]', "")
    np.testing.assert_allclose(load(ours, f"{CALC}/tmats.npy"), load(theirs, f"{CALC}/tmats.npy"), atol=1e-6)
    err_ours = _grid_error(load(ours, f"{TRANS}/outputs/tmats_cumul.npy"), stack)
    err_theirs = _grid_error(load(theirs, f"{TRANS}/outputs/tmats_cumul.npy"), stack)
    assert err_ours < 0.1 and err_theirs > 3 * err_ours, (err_ours, err_theirs)


def test_rigid_area_matrices_in_full_image_coordinates_is_where_pystack3d_is_wrong(tmp_path: Path) -> None:
    stack = synth(rotation=3.0, n=8, seed=5)
    calc = 'transformation = "RIGID_BODY"\nnb_blocks = [1, 1]\narea = [10, 90, 4, 70]'
    ours, theirs = twin_run(tmp_path, stack, calc, "")
    s = np.eye(3)
    s[:2, 2] = [10, 80 - 70]  # the area's top-left pixel: column xmin, row H - ymax
    mine, pys = load(ours, f"{CALC}/tmats.npy")[:, 0], load(theirs, f"{CALC}/tmats.npy")[:, 0]
    np.testing.assert_allclose(mine, s @ pys @ np.linalg.inv(s), atol=1e-6)
    err_ours = _grid_error(load(ours, f"{TRANS}/outputs/tmats_cumul.npy"), stack)
    err_theirs = _grid_error(load(theirs, f"{TRANS}/outputs/tmats_cumul.npy"), stack)
    assert err_ours < 0.1 and err_theirs > 3 * err_ours, (err_ours, err_theirs)


SKIMAGE_WARPS = """
import sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from pystack3d.registration_transformation import img_transformation
data = np.load(sys.argv[1])
out = {}
for mode in ("constant", "edge", "symmetric", "reflect", "wrap"):
    out["affine_" + mode] = img_transformation(data["img"], data["affine"], nb_blocks=None, mode=mode)
    out["blocks_" + mode] = img_transformation(data["img"], data["blocks"], nb_blocks=(2, 3), mode=mode)
np.savez(sys.argv[2], **out)
"""


def test_warp_matches_scikit_image_for_every_mode(tmp_path: Path) -> None:
    """PyStack3D's own img_transformation (skimage.warp, float64) against stack3d's warp
    (scipy, float32 input): the same bilinear values for every mode, NaN at the same pixels."""
    from stack3d_steps._registration_warp import warp

    rng = np.random.default_rng(11)
    img = (rng.random((46, 61)) * 255).astype(np.float32)
    th = np.deg2rad(4.0)
    affine = np.array([[[np.cos(th), -np.sin(th), 3.3], [np.sin(th), np.cos(th), -4.6], [0, 0, 1]]])
    blocks = np.tile(np.eye(3), (6, 1, 1))
    blocks[:, :2, 2] = rng.normal(0, 2.0, (6, 2))
    np.savez(tmp_path / "in.npz", img=img.astype(np.float64), affine=affine, blocks=blocks)
    proc = subprocess.run([PYTHON, "-c", SKIMAGE_WARPS, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ref = np.load(tmp_path / "out.npz")
    for mode in ("constant", "edge", "symmetric", "reflect", "wrap"):
        for kind, mats, grid in (("affine", affine, (1, 1)), ("blocks", blocks, (2, 3))):
            theirs, ours = ref[f"{kind}_{mode}"], warp(img, mats, grid, mode=mode)
            nan_t, nan_o = np.isnan(theirs), np.isnan(ours)
            if kind == "blocks" and mode == "constant":  # round-off NaN on PyStack3D's border (see above)
                assert not (nan_o & ~nan_t).any()
            else:
                np.testing.assert_array_equal(nan_o, nan_t, err_msg=f"{kind} {mode}")
            both = ~nan_t & ~nan_o
            np.testing.assert_allclose(ours[both], theirs[both], atol=2e-4, err_msg=f"{kind} {mode}")
