"""resampling: accuracy against the exact clean volume (linear and cubic), the last slice
kept, names, z from names or metadata, slices going backwards, bad input, local processes.

"Within the interpolation error": each output slice is compared with the exact clean slice
at its z (``stack.clean_at(z)``). The reference is the same interpolation (linear: numpy's
``interp``; cubic: a Vandermonde solve through the 4 neighbouring slices, both written
independently of the step) applied to the float clean slices at the input z; the step's
error must not exceed that reference error by more than the rounding to uint16 (the step
adds no error of its own).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import ConfigError, StepError, parse_config, run
from stack3d_core.testing import check_step, run_step_on_arrays
from stack3d_core.testing.synth import SynthSpec, make_stack
from stack3d_steps._resampling_z import accepted_slices, interpolation_plan, output_grid
from stack3d_steps.resampling import Resampling, ResamplingParams

from ..conftest import steps_host


def nonuniform_stack(n: int = 14, shape: tuple[int, int] = (48, 64), dtype: str = "uint16", seed: int = 4):  # noqa: ANN201
    """Only the non-uniform z defect (clean otherwise)."""
    return make_stack(SynthSpec(n_slices=n, shape=shape, dtype=dtype, seed=seed, gains=False, background=False,
                                stripes=False, noise_sigma=0.0, nonuniform_z=True, drift_px_per_slice=(0.0, 0.0),
                                jitter_px=0.0))


def write_project(folder: Path, volume: np.ndarray, names: list[str] | tuple[str, ...]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, volume):
        tifffile.imwrite(folder / name, image, photometric="minisblack")
    return folder


def run_project(folder: Path, table: dict, **engine: object) -> Path:
    host = steps_host()
    data: dict = {"process_steps": ["resampling"], "resampling": table}
    if engine:
        data["engine"] = engine
    run(parse_config(data, host, project_dir=folder), host=host)
    return folder / "process/resampling"


def reference(clean: np.ndarray, z_in: np.ndarray, z: float, method: str) -> np.ndarray:
    """Independent interpolation of the float clean slices at the input z."""
    if method == "linear":
        from scipy.interpolate import interp1d

        return interp1d(z_in, clean, axis=0, kind="linear")(z)
    i = int(np.clip(np.searchsorted(z_in, z, side="right") - 1, 0, len(z_in) - 2))
    lo = min(max(i - 1, 0), len(z_in) - 4)
    nodes = z_in[lo:lo + 4]
    coef = np.linalg.solve(np.vander(nodes, 4), clean[lo:lo + 4].reshape(4, -1))
    return (np.vander([z], 4) @ coef).reshape(clean.shape[1:])


def test_contract() -> None:
    check_step(Resampling)


@pytest.fixture(scope="module")
def errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[float, float]]:
    """RMS error against the truth of the step and of the reference, per method
    (gray levels of uint16), after checking the per-slice agreement with the reference."""
    stack = nonuniform_stack()
    assert np.ptp(np.diff(stack.z_um)) > 0.005  # really non-uniform (one doubled step at least)
    clean_in = np.stack([stack.clean(k) for k in range(len(stack))]).astype(np.float64)
    found = {}
    for method in ("linear", "cubic"):
        out, state, stats = run_step_on_arrays(Resampling(ResamplingParams(dz=0.01, method=method)),
                                               stack.volume(), workdir=tmp_path_factory.mktemp(method),
                                               z_positions=stack.z_um)
        z_out = np.asarray(state.z_out)
        np.testing.assert_allclose(np.diff(z_out), 0.01, atol=1e-12)
        assert stats.shape == (len(z_out), 3, 3)
        err_step, err_ref = [], []
        for j, z in enumerate(z_out):
            truth = stack.clean_at(float(z)).astype(np.float64)
            ref = reference(clean_in, stack.z_um, float(z), method)
            err_step.append(np.mean((out[j] - truth) ** 2))
            err_ref.append(np.mean((ref - truth) ** 2))
            assert np.sqrt(np.mean((out[j] - ref) ** 2)) < 1.0, (method, j)  # uint16 rounding only
        found[method] = (float(np.sqrt(np.mean(err_step))), float(np.sqrt(np.mean(err_ref))))
    return found


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_uniform_grid_within_the_interpolation_error(errors: dict, method: str) -> None:
    rms_step, rms_ref = errors[method]
    assert rms_ref > 10  # the interpolation error is real, far above the rounding
    assert rms_step <= rms_ref + 0.5, (rms_step, rms_ref)


def test_cubic_beats_linear(errors: dict) -> None:
    assert errors["cubic"][0] < 0.9 * errors["linear"][0], errors


def test_cubic_is_exact_for_a_cubic_in_z(tmp_path: Path) -> None:
    z = np.array([0.0, 0.7, 1.5, 2.0, 3.1, 4.0, 4.4])
    ramp = np.linspace(0.5, 2, 12).reshape(3, 4)
    volume = np.stack([ramp * (1 + zz - 0.3 * zz**2 + 0.05 * zz**3) for zz in z]).astype(np.float64)
    out, state, _ = run_step_on_arrays(Resampling(ResamplingParams(dz=0.25, method="cubic")), volume,
                                       workdir=tmp_path, z_positions=z)
    for j, zz in enumerate(state.z_out):
        np.testing.assert_allclose(out[j], ramp * (1 + zz - 0.3 * zz**2 + 0.05 * zz**3), rtol=1e-12, atol=1e-12)


def test_last_slice_kept_names_and_side_outputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 255, (6, 8, 10), endpoint=True).astype(np.uint8)
    names = [f"slice_{k:04d}_z={0.01 * k:.4f}um.tif" for k in range(6)]
    out_dir = run_project(write_project(tmp_path / "p", volume, names), {"dz": 0.01})
    produced = sorted(p.name for p in out_dir.glob("*.tif"))
    assert produced == [f"slice_{k:04d}_z={0.01 * k:.4f}um.tif" for k in range(6)]  # PyStack3D drops the last
    for k, name in enumerate(produced):  # outputs on input z are the input slices, unchanged
        np.testing.assert_array_equal(tifffile.imread(out_dir / name), volume[k])
    outputs = out_dir / "outputs"
    np.testing.assert_allclose(np.load(outputs / "zpos_out.npy"), 0.01 * np.arange(6), atol=1e-12)
    np.testing.assert_allclose(np.load(outputs / "zpos_in.npy"), 0.01 * np.arange(6))
    for png in ("z_positions.png", "z_increments.png", "stats.png"):
        assert (outputs / png).stat().st_size > 1000
    log = (outputs / "log.txt").read_text()
    assert "Original z-shape: 6" in log and "New z-shape: 6" in log and "z source: names" in log


def test_explicit_positions_from_toml_and_a_custom_policy(tmp_path: Path) -> None:
    volume = np.stack([np.full((4, 5), 10.0 * k) for k in range(5)]).astype(np.uint8)
    names = [f"img{k:03d}-z{0.1 * k:.3f}.tif" for k in range(5)]
    policy = "img{slice_nb}-z{z_coord}.tif"
    out_dir = run_project(write_project(tmp_path / "p", volume, names),
                          {"policy": policy, "zpos_out": [0.05, 0.125, 0.4, 0.9]})
    produced = sorted(p.name for p in out_dir.glob("*.tif"))
    assert produced == ["img0000-z0.0500.tif", "img0001-z0.1250.tif", "img0002-z0.4000.tif"]  # 0.9 dropped
    values = [float(tifffile.imread(out_dir / n).mean()) for n in produced]
    assert values == [5.0, 12.0, 40.0]  # 12.5 rounds to even: the engine rounds half to even


def test_slices_going_backwards_are_skipped(tmp_path: Path) -> None:
    z = np.array([0.0, 1.0, 0.5, 2.0, 2.0, 3.0])
    volume = np.stack([np.full((2, 3), 100.0 * k) for k in range(6)])
    out, state, _ = run_step_on_arrays(Resampling(ResamplingParams(dz=0.5)), volume, workdir=tmp_path, z_positions=z)
    assert state.accepted == (0, 1, 3, 5) and state.skipped == (2, 4)
    # accepted (z, value): (0, 0) (1, 100) (2, 300) (3, 500)
    np.testing.assert_allclose(out[:, 0, 0], [0, 50, 100, 200, 300, 400, 500])
    # slice 0 is not the lowest z: the grid covers the accepted range only (PyStack3D's grid
    # starts at min(z) and leaves the points below z_0 unwritten, with gaps in the numbering)
    out, state, _ = run_step_on_arrays(Resampling(ResamplingParams(dz=0.5)), volume[:3], workdir=tmp_path / "b",
                                       z_positions=[1.0, 0.0, 2.0])
    assert state.accepted == (0, 2) and state.z_out == (1.0, 1.5, 2.0)
    np.testing.assert_allclose(out[:, 0, 0], [0, 100, 200])


def test_z_from_metadata_when_names_do_not_match(tmp_path: Path) -> None:
    volume = np.zeros((3, 2, 2), dtype=np.uint8)  # ArrayReader names: slice_0000.tif, ...
    _, state, _ = run_step_on_arrays(Resampling(ResamplingParams(dz=1.0)), volume, workdir=tmp_path,
                                     z_positions=[0.0, 1.0, 2.0])
    assert state.z_source == "metadata" and state.z_out == (0.0, 1.0, 2.0)
    with pytest.raises(StepError, match=r"slice_0000\.tif.*does not match"):
        run_step_on_arrays(Resampling(ResamplingParams(dz=1.0, z_source="names")), volume,
                           workdir=tmp_path / "b", z_positions=[0.0, 1.0, 2.0])


def test_names_not_matching_the_policy_name_the_file(tmp_path: Path) -> None:
    volume = np.zeros((3, 2, 2), dtype=np.uint8)
    names = ["slice_0000_z=0.0000um.tif", "slice_0001_z=0.0100um.tif", "slice_0002_zz=0.0200um.tif"]
    folder = write_project(tmp_path / "p", volume, names)
    with pytest.raises(StepError) as info:
        run_project(folder, {"dz": 0.01, "z_source": "names"})
    assert info.value.file is not None and info.value.file.endswith("slice_0002_zz=0.0200um.tif")


def config_issues(table: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"process_steps": ["resampling"], "resampling": table}, steps_host(),
                     project_dir=Path("/tmp"))
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize(("table", "expected"), [
    ({"dz": 0}, "resampling.dz"),
    ({"dz": -0.01}, "resampling.dz"),
    ({"zpos_out": [0.1, 0.3, 0.2]}, "resampling.zpos_out"),
    ({"zpos_out": []}, "resampling.zpos_out"),
    ({"dz": 0.01, "method": "spline"}, "resampling.method"),
    ({"dz": 0.01, "policy": "slice_{slice_nb}.tif"}, "resampling.policy"),
    ({"dz": 0.01, "z_source": "header"}, "resampling.z_source"),
    ({"dz": "0.01"}, "resampling.dz"),
])
def test_bad_parameters_are_refused_with_the_key_named(table: dict, expected: str) -> None:
    issues = config_issues(table)
    assert any(expected in issue for issue in issues), issues


def test_no_grid_fails_before_reading_slices(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="dz.*zpos_out"):
        run_step_on_arrays(Resampling(ResamplingParams()), np.zeros((2, 2, 2)), workdir=tmp_path, z_positions=[0, 1])


def test_grid_helpers() -> None:
    np.testing.assert_allclose(output_grid(0.0, 0.63, 0.01), 0.01 * np.arange(64))  # 0.63 included
    assert len(output_grid(0.0, 0.0999, 0.01)) == 10
    assert accepted_slices([0, 2, 1, 2, 3]) == [0, 1, 4]
    plans = interpolation_plan([0.0, 1.0, 2.0, 3.0], [0, 1, 2, 3], [0.5, 1.0, 2.9], "cubic", 1e-9)
    assert plans[0].sources == (0, 1, 2, 3) and plans[1].sources == (1,) and plans[2].sources == (0, 1, 2, 3)
    np.testing.assert_allclose(sum(plans[0].weights), 1.0)


@pytest.mark.slow
def test_project_on_local_processes(tmp_path: Path) -> None:
    stack = nonuniform_stack(n=8, shape=(16, 24), dtype="uint8")
    folder = write_project(tmp_path / "p", stack.volume(), stack.names)
    out_dir = run_project(folder, {"dz": 0.01, "method": "cubic"}, executor="processes", workers=2)
    serial, state, _ = run_step_on_arrays(Resampling(ResamplingParams(dz=0.01, method="cubic")), stack.volume(),
                                          workdir=tmp_path / "serial", z_positions=stack.z_um)
    produced = sorted(out_dir.glob("*.tif"))
    assert len(produced) == len(state.z_out)
    for j, path in enumerate(produced):
        np.testing.assert_array_equal(tifffile.imread(path), serial[j])
