"""Against the ground truth of synthetic stacks (``stack3d_core.testing.synth`` with its
per-slice scale and shear): the accuracy figures quoted in the README."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from stack3d_core.testing import run_step_on_arrays

from sift_testkit import affine_stack, grid_error, rms
from stack3d_sift import SiftRegistration, SiftRegistrationParams

BOUND = 0.3  # px, RMS over the slices of the grid misplacement


@pytest.fixture(scope="module")
def stack():
    return affine_stack(100, 192, seed=4)


@pytest.fixture(scope="module")
def volume(stack):
    return stack.volume()


def register(volume: np.ndarray, names, workdir: Path, **params):
    step = SiftRegistration(SiftRegistrationParams(**params))
    return run_step_on_arrays(step, volume, workdir=workdir, names=names)


@pytest.mark.parametrize("solve", ["global", "chain"])
def test_affine_drift_over_100_slices_is_recovered(stack, volume, tmp_path: Path, solve: str) -> None:
    out, state, _ = register(volume, stack.names, tmp_path, preserve_scales=False, solve=solve)
    err = grid_error(state.cumulative, stack)
    print(f"\n{solve}: grid error RMS {rms(err):.3f} px, max {err.max():.3f} px over 100 slices of 192 px")
    assert rms(err) <= BOUND and err.max() <= 2 * BOUND
    assert out.dtype == volume.dtype and out.shape == volume.shape
    saved = np.load(tmp_path / "sift_registration/outputs/tmats_cumul.npy")
    assert saved.shape == (100, 1, 3, 3)
    np.testing.assert_array_equal(saved[:, 0], state.cumulative)
    # the registered slices are what the true matrices give (where the slice covers the frame)
    from stack3d_sift.step import warp

    for k in (30, 99):
        ideal = warp(volume[k], stack.matrix(k), stack.shape)
        inner = np.isfinite(ideal)
        inner[:, [0, -1]] = inner[[0, -1], :] = False
        ideal = np.rint(ideal[inner])
        diff = np.abs(out[k][inner].astype(float) - ideal).mean()
        shifted = np.abs(np.roll(out[k], 1, axis=1)[inner].astype(float) - ideal).mean()
        print(f"slice {k}: mean |output - warp with the true matrix| = {diff:.2f} gray levels "
              f"(the output moved by 1 px: {shifted:.2f})")
        assert diff < 0.25 * shifted


def test_a_textureless_slice_is_reported_and_does_not_corrupt_its_neighbours(stack, volume, tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    vol = volume.copy()
    rng = np.random.default_rng(0)
    vol[50] = np.clip(np.rint(128 + 3 * rng.standard_normal(vol.shape[1:])), 0, 255).astype(vol.dtype)
    with caplog.at_level(logging.WARNING, logger="stack3d"):
        _, state, _ = register(vol, stack.names, tmp_path, preserve_scales=False)
    err = grid_error(state.cumulative, stack)
    others = np.delete(err, 50)
    print(f"\nslice 50 blank: RMS {rms(others):.3f} px over the other slices, max after it {err[51:].max():.3f} px")
    assert rms(others) <= BOUND and err[51:].max() <= 2 * BOUND
    # detected, reported by name, flagged; slice 50 keeps slice 49's transform (not the identity)
    assert state.report.flags[50] == "kept_neighbour"
    np.testing.assert_array_equal(state.cumulative[50], state.cumulative[49])
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"slice 50 ({stack.names[50]}) could not be registered" in messages
    rows = list(csv.DictReader(open(tmp_path / "sift_registration/outputs/qc_slices.csv")))
    assert rows[50]["flag"] == "kept_neighbour" and {r["flag"] for r in rows[51:]} == {"ok"}
    pairs = {(int(r["j"]), int(r["i"])): r for r in csv.DictReader(open(tmp_path / "sift_registration/outputs/qc_pairs.csv"))}
    assert pairs[(49, 50)]["ok"] == "0" and pairs[(49, 51)]["ok"] == "1" and pairs[(49, 51)]["used"] == "1"
    assert int(pairs[(49, 50)]["inliers"]) < 10 and int(pairs[(48, 49)]["inliers"]) > 100


def test_without_bridging_pairs_the_break_is_reported(stack, volume, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    vol = volume[:60].copy()
    vol[50] = 128
    with caplog.at_level(logging.WARNING, logger="stack3d"):
        _, state, _ = register(vol, stack.names[:60], tmp_path, preserve_scales=False, pair_offsets=(1,),
                               solve="chain")
    assert state.report.flags[50:52] == ("kept_neighbour", "kept_neighbour")
    assert set(state.report.flags[52:]) == {"after_break"}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "slice 51" in messages and "slices 52-59" in messages


def test_scale_drift_removal_on_a_translation_stack(tmp_path: Path) -> None:
    stack = affine_stack(60, 128, seed=5, rotation_deg_max=0.0, scale_max=0.0, shear_max=0.0)
    _, state, _ = register(stack.volume(), stack.names, tmp_path, preserve_scales=True, sg_window=21)
    err = grid_error(state.cumulative, stack)
    assert rms(err) <= BOUND
    assert np.abs(state.cumulative[:, :2, :2] - np.eye(2)).max() < 2e-3
    np.testing.assert_allclose(state.cumulative[0], np.eye(3), atol=1e-12)
