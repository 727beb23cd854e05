"""Through the real engine and params: two channels registered with the first one's
transforms, the union canvas, the hand-over to ``registration_transformation``, side
outputs, and identical files from the serial and process executors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from stack3d_core import parse_config, run

from sift_testkit import STEP, affine_stack, grid_error, host_with_plugin, write_channels
from stack3d_sift import export_to_registration_calculation

N, SIZE = 24, 128


@pytest.fixture(scope="module")
def stack():
    return affine_stack(N, SIZE, seed=6)


def run_project(folder: Path, table: dict, channels: list[str], **top: object) -> None:
    host = host_with_plugin()
    config = parse_config({"channels": channels, "process_steps": [STEP], STEP: table, **top}, host,
                          project_dir=folder)
    run(config, host=host)


def read(folder: Path) -> np.ndarray:
    return np.stack([tifffile.imread(p) for p in sorted(folder.glob("*.tif"))])


def test_second_channel_is_registered_with_the_first_ones_transforms(stack, tmp_path: Path) -> None:
    # channel B has no texture SIFT could use (a smooth ramp that moves with the sample):
    # with state_from = "first" it is never searched for key points, only warped
    ramp = np.add.outer(np.arange(SIZE) * 0.5, np.arange(SIZE) * 1.0)

    def ramp_slice(k: int, _: np.ndarray) -> np.ndarray:
        from stack3d_sift.step import warp

        moved = warp(ramp, np.linalg.inv(stack.matrix(k)), (SIZE, SIZE), fill=0.0)  # slice k's view of the ramp
        return np.rint(moved * 100).astype(np.uint16)

    folder = write_channels(tmp_path / "p", stack, {"SE2": lambda k, im: im, "ramp": ramp_slice})
    run_project(folder, {"preserve_scales": False}, ["SE2", "ramp"])
    base = folder / "process" / STEP
    a = np.load(base / "SE2/outputs/tmats_cumul.npy")
    b = np.load(base / "ramp/outputs/tmats_cumul.npy")
    np.testing.assert_array_equal(a, b)
    assert grid_error(a[:, 0], stack).max() < 0.3
    info = json.loads((base / "ramp/outputs/sift_registration.json").read_text())
    assert info["computed_on_channel"] == "SE2"
    out = read(base / "ramp")
    assert out.dtype == np.uint16 and out.shape == (N, SIZE, SIZE)
    # registered ramp slices lie on slice 0's ramp (inside the region every slice covers)
    ref = out[0].astype(float)
    for k in (10, 23):
        inner = (slice(40, 88), slice(40, 88))
        assert np.abs(out[k][inner] - ref[inner]).max() < 0.01 * ref[inner].max()
    for ch in ("SE2", "ramp"):
        for f in ("tmats.npy", "qc_pairs.csv", "qc_slices.csv", "tmats_evol.png", "qc_matches.png", "stats.npy"):
            assert (base / ch / "outputs" / f).is_file(), (ch, f)


def test_union_canvas_holds_every_slice(stack, tmp_path: Path) -> None:
    folder = write_channels(tmp_path / "p", stack, {".": lambda k, im: im})
    run_project(folder, {"preserve_scales": False, "canvas": "union", "fill_value": 0.0}, ["."])
    base = folder / "process" / STEP
    out = read(base)
    info = json.loads((base / "outputs/sift_registration.json").read_text())
    ox, oy = info["canvas"]["offset_xy"]
    rows, cols = info["canvas"]["shape"]
    assert out.shape == (N, rows, cols) and rows > SIZE and cols > SIZE
    meta = json.loads((base / "outputs/stack_meta.json").read_text())  # the engine's record of output_meta
    assert tuple(meta["shape"]) == (rows, cols) and meta["n"] == N
    # slice 0 is pasted unchanged at (-ox, -oy); every slice keeps all its pixels on the canvas
    r0, c0 = int(-oy), int(-ox)
    np.testing.assert_array_equal(out[0][r0:r0 + SIZE, c0:c0 + SIZE], stack.observed(0))
    cum = np.load(base / "outputs/tmats_cumul.npy")[:, 0]
    corners = np.array([[0, SIZE - 1, 0, SIZE - 1], [0, 0, SIZE - 1, SIZE - 1], [1, 1, 1, 1]], float)
    for k in range(N):
        pts = np.linalg.inv(cum[k]) @ corners
        assert pts[0].min() >= ox - 1e-6 and pts[0].max() <= ox + cols - 1 + 1e-6
        assert pts[1].min() >= oy - 1e-6 and pts[1].max() <= oy + rows - 1 + 1e-6


def test_matrices_reapplied_by_registration_transformation_give_the_same_slices(stack, tmp_path: Path) -> None:
    folder = write_channels(tmp_path / "p", stack, {".": lambda k, im: im})
    run_project(folder, {"order": 1}, ["."])
    mine = read(folder / "process" / STEP)
    # another project on the same raw slices, registered by the built-in step with our matrices
    other = write_channels(tmp_path / "q", stack, {".": lambda k, im: im})
    path = export_to_registration_calculation(folder, target_dir=other)
    assert path == other / "process/registration_calculation/tmats.npy"
    host = host_with_plugin()
    run(parse_config({"process_steps": ["registration_transformation"]}, host, project_dir=other), host=host)
    theirs = read(other / "process/registration_transformation")
    np.testing.assert_allclose(np.load(other / "process/registration_transformation/outputs/tmats_cumul.npy"),
                               np.load(folder / "process" / STEP / "outputs/tmats_cumul.npy"), atol=1e-9)
    diff = np.abs(mine.astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_qc_tables(stack, tmp_path: Path) -> None:
    folder = write_channels(tmp_path / "p", stack, {".": lambda k, im: im})
    run_project(folder, {"pair_offsets": [1, 2], "solve": "chain"}, ["."])
    out = folder / "process" / STEP / "outputs"
    pairs = list(csv.DictReader(open(out / "qc_pairs.csv")))
    assert len(pairs) == (N - 1) + (N - 2)
    for row in pairs:
        assert int(row["inliers"]) <= int(row["matches"]) <= min(int(row["keypoints_j"]), int(row["keypoints_i"]))
        assert row["ok"] == "1" and float(row["residual_rms_px"]) < 1.5
    used = [(int(r["j"]), int(r["i"])) for r in pairs if r["used"] == "1"]
    assert used == [(i - 1, i) for i in range(1, N)]
    slices = list(csv.DictReader(open(out / "qc_slices.csv")))
    assert [r["flag"] for r in slices] == ["reference"] + ["ok"] * (N - 1)
    assert float(slices[0]["centre_dx_px"]) == 0.0
    tmats = np.load(out / "tmats.npy")[:, 0]
    cum = np.load(out / "tmats_cumul.npy")[:, 0]
    again = [tmats[0]]
    for k in range(1, N):
        again.append(tmats[k] @ again[-1])
    np.testing.assert_allclose(np.stack(again), cum, atol=1e-9)


@pytest.mark.slow
def test_serial_and_processes_write_identical_files(tmp_path: Path) -> None:
    small = affine_stack(10, 96, seed=7)
    files = {}
    for executor in ("serial", "processes"):
        folder = write_channels(tmp_path / executor, small, {".": lambda k, im: im})
        engine = {"executor": executor, "workers": 2} if executor == "processes" else {"executor": "serial"}
        run_project(folder, {"matcher": "flann"}, ["."], engine=engine)
        found = sorted((folder / "process" / STEP).rglob("*"))
        files[executor] = {p.relative_to(folder): p.read_bytes() for p in found
                           if p.is_file() and p.suffix in (".tif", ".npy", ".csv")}
    assert files["serial"].keys() == files["processes"].keys()
    assert files["serial"] == files["processes"]
