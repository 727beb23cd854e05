"""The fused engine (``[engine] keep_intermediates = false``, the default): identical results
to a run that stores every step, only the last step's images on disk, every step's outputs
written, resumption from computed steps, and errors that name the fused step and its file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from stack3d_core import PluginHost, Stack3d, Stack3dError, StepError, parse_config, run
from stack3d_core.engine.fused import RECOMPUTE_FILE, ComputedReader, Level, plane_picks
from stack3d_core.engine.pipeline import _stored_steps
from stack3d_core.step import SliceJob

from . import steps_for_tests as tsteps
from .conftest import make_stack, tree_digest, write_slices
from .test_full_pipeline import make_project

STEPS = ("cropping", "bkg_removal", "intensity_rescaling", "registration_calculation",
         "registration_transformation", "destriping", "resampling", "cropping_final")


def _images(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tif"))}


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The full PyStack3D-shaped project, run fused and with every step stored."""
    out = {}
    for label, keep in (("fused", False), ("stored", True)):
        folder = tmp_path_factory.mktemp(label) / "p"
        make_project(folder)
        result = Stack3d(folder).eval(show_pbar=False, keep_intermediates=keep)
        assert result.ran == STEPS
        out[label] = folder
    return out


@pytest.mark.slow
def test_fused_run_gives_the_stored_run_s_output_bit_for_bit(twin_runs: dict[str, Path]) -> None:
    fused, stored = (twin_runs[k] / "process" for k in ("fused", "stored"))
    final = _images(fused / "cropping_final")
    assert final and final == _images(stored / "cropping_final")
    # every step's numeric side outputs are the same
    for pattern in ("*.npy", "*.npz", "*.txt", "*.json"):
        a = tree_digest(fused, (pattern,))
        b = tree_digest(stored, (pattern,))
        a = {k: v for k, v in a.items() if not k.endswith("stack3d_run.json")}
        b = {k: v for k, v in b.items() if not k.endswith("stack3d_run.json")}
        assert a.keys() == b.keys()
        differing = [k for k in a if a[k] != b[k] and not k.endswith("stats.npy")]
        assert not differing, differing
    # stats of computed steps come from the final pass: the same numbers wherever a slice was computed
    for step in ("cropping", "bkg_removal", "intensity_rescaling", "registration_transformation", "destriping",
                 "resampling"):
        s_fused = np.load(fused / step / "outputs/stats.npy")
        s_stored = np.load(stored / step / "outputs/stats.npy")
        seen = ~np.isnan(s_fused[:, 0, 0])
        assert seen.sum() >= len(seen) - 1, step  # resampling may skip an input slice at most
        np.testing.assert_allclose(s_fused[seen], s_stored[seen], rtol=1e-12, err_msg=step)


@pytest.mark.slow
def test_fused_run_stores_only_the_last_step_s_images_and_every_step_s_outputs(twin_runs: dict[str, Path]) -> None:
    process = twin_runs["fused"] / "process"
    for step in STEPS:
        folder = process / step
        if step == "registration_calculation":
            assert (folder / "tmats.npy").exists()
            continue
        images = list(folder.glob("*.tif"))
        assert bool(images) == (step == "cropping_final"), step
        assert (folder / RECOMPUTE_FILE).exists() == (step != "cropping_final"), step
        for name in ("stats.npy", "stats.png", "cut_planes.png", "stack_meta.json"):
            assert (folder / "outputs" / name).exists(), f"{step}/outputs/{name}"
    record = (process / "stack3d_run.json").read_text()
    assert '"images": "computed"' in record and '"images": "stored"' in record
    # the stored run has every step's images
    for step in STEPS:
        if step != "registration_calculation":
            assert list((twin_runs["stored"] / "process" / step).glob("*.tif")), step


@pytest.mark.slow
def test_a_later_run_resumes_from_computed_steps(tmp_path: Path, twin_runs: dict[str, Path]) -> None:
    folder = twin_runs["fused"]
    project = Stack3d(folder)
    project.params["cropping_final"]["area"] = [4, 80, 2, 60]
    result = project.eval(show_pbar=False)
    assert result.ran == ("cropping_final",)  # the others are rebuilt from recompute.pickle
    fresh = tmp_path / "fresh"
    make_project(fresh)
    again = Stack3d(fresh)
    again.params["cropping_final"]["area"] = [4, 80, 2, 60]
    again.eval(show_pbar=False)
    assert _images(folder / "process/cropping_final") == _images(fresh / "process/cropping_final")


def test_a_missing_recompute_file_names_the_step_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write_slices(folder, make_stack(n=4, dtype="uint16"))
    host = PluginHost()
    data = {"process_steps": ["cropping", "cropping_final"], "cropping": {"area": [0, 40, 0, 30]},
            "cropping_final": {"area": [0, 20, 0, 20]}}
    run(parse_config(data, host, project_dir=folder), host=host)
    (folder / "process/cropping" / RECOMPUTE_FILE).unlink()
    data["cropping_final"] = {"area": [0, 10, 0, 10]}
    with pytest.raises(Stack3dError, match=r"cropping.*recompute\.pickle.*--redo"):
        run(parse_config(data, host, project_dir=folder), host=host)


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_a_failure_in_a_fused_step_names_that_step_and_the_file(tmp_path: Path, executor: str) -> None:
    folder = tmp_path / "p"
    write_slices(folder, make_stack(n=12))
    host = PluginHost()
    host.register(tsteps.PLUGIN, "teststeps")
    config = parse_config({"process_steps": ["fail_at", "add_offset"], "fail_at": {"at": 7},
                           "add_offset": {"value": 1.0}}, host, project_dir=folder)
    with pytest.raises(StepError) as info:
        run(config, host=host, executor=executor, workers=2)
    text = str(info.value)
    assert "fail_at" in text and "deliberate failure" in text and "slice_0007_z=0.0700um.tif" in text
    assert not (folder / "process/add_offset").exists()
    assert not list((folder / "process").glob(".*partial*"))


@pytest.mark.parametrize("executor", ["serial", "processes", "dask"])
def test_fused_runs_are_identical_on_every_executor_and_to_stored_runs(tmp_path: Path, executor: str) -> None:
    host = PluginHost()
    host.register(tsteps.PLUGIN, "teststeps")
    steps = ["cropping", "equalise_mean", "cumulative_difference", "pair_average", "add_offset"]
    finals = {}
    for keep in (True, False):
        folder = tmp_path / f"keep{keep}" / "p"
        write_slices(folder, make_stack(n=11, dtype="uint16"))
        config = parse_config({"process_steps": steps, "cropping": {"area": [3, 50, 2, 33]},
                               "engine": {"keep_intermediates": keep}}, host, project_dir=folder)
        run(config, host=host, executor="serial" if keep else executor, workers=2)
        finals[keep] = (_images(folder / "process/add_offset"),
                        np.load(folder / "process/equalise_mean/outputs/stats.npy"),
                        np.load(folder / "process/pair_average/outputs/stats.npy"))
    assert finals[True][0] and finals[True][0] == finals[False][0]
    # pair_average uses slices 0-9 of 11: the fused pass never computes slice 10 of
    # equalise_mean (and cumulative_difference), so its statistics are NaN there
    stored_eq, fused_eq = finals[True][1], finals[False][1]
    assert np.isnan(fused_eq[10]).all() and not np.isnan(fused_eq[:10]).any()
    np.testing.assert_array_equal(fused_eq[:10], stored_eq[:10])
    np.testing.assert_array_equal(finals[True][2], finals[False][2])


def test_which_steps_store_their_images(tmp_path: Path) -> None:
    import tomllib

    from .test_full_pipeline import PARAMS

    config = parse_config(tomllib.loads(PARAMS), PluginHost(), project_dir=tmp_path)
    steps = {name: config.steps[name] for name in STEPS}
    ordered = [steps[name] for name in STEPS]
    assert _stored_steps(ordered, keep=False) == {"cropping_final"}
    assert _stored_steps(ordered, keep=True) == set(STEPS) - {"registration_calculation"}
    # destriping is too costly to recompute for a later global phase: then it is stored
    later = [steps["cropping"], steps["destriping"], steps["intensity_rescaling"], steps["cropping_final"]]
    assert _stored_steps(later, keep=False) == {"destriping", "cropping_final"}


class _Twice:
    """A stand-in step: doubles its input (float), one-to-one."""

    name = "twice"

    def apply_job(self, images, job, state):
        return images[0] * 2.0


class _ListReader:
    path = Path(".")

    def __init__(self, stack: np.ndarray) -> None:
        self.stack, self.reads = stack, 0

    def read_with_extras(self, channel, index):
        self.reads += 1
        return self.stack[index], {"i": index}

    def describe(self, channel, index):
        return f"slice {index}"


def test_computed_reader_caches_taps_and_pickles_without_them() -> None:
    from stack3d_core.stackio import StackMeta

    stack = np.arange(5 * 4 * 6, dtype=np.uint16).reshape(5, 4, 6)
    upstream = _ListReader(stack)
    meta = StackMeta(n=5, shape=(4, 6), dtype="uint16")
    jobs = tuple(SliceJob(i, f"s{i}", (i,), i) for i in range(5))
    reader = ComputedReader(_Twice(), upstream, {".": Level(None, jobs, meta)})  # type: ignore[arg-type]
    for i in (0, 1, 1, 2, 1):
        np.testing.assert_array_equal(reader.read(".", i), stack[i] * 2)
    assert upstream.reads == 3  # the last 3 slices are cached
    assert reader.extras(".", 2) == {"i": 2}
    taps = reader.drain()["."]
    assert sorted(taps.stats) == [0, 1, 2]
    np.testing.assert_allclose(taps.stats[2][2], [stack[2].min() * 2, stack[2].max() * 2, stack[2].mean() * 2])
    assert taps.middle is not None and np.array_equal(taps.middle, stack[2] * 2)
    assert taps.planes(5) is None  # slices 3 and 4 were not seen
    reader.reset()  # forget the cache and the taps, as before the engine's final pass
    for i in range(5):
        reader.read(".", i)
    assert upstream.reads == 8
    planes = reader.drain()["."].planes(5)
    assert planes is not None and list(planes["z_index"]) == list(plane_picks(5))
    np.testing.assert_array_equal(planes["xz"], stack[:, 2, :] * 2)
    clone = pickle.loads(pickle.dumps(reader))
    assert not clone.drain() and not clone._cache
    np.testing.assert_array_equal(clone.read(".", 4), stack[4] * 2)


def test_fused_cut_planes_are_the_stored_stack_s_cut_planes(tmp_path: Path) -> None:
    """Observers of a computed step get ``context.output_planes`` from the final pass: the
    very planes ``plots.cut_planes`` reads from the stored images."""
    from stack3d_core import hookimpl
    from stack3d_steps.plots import cut_planes

    seen: dict[str, object] = {}

    class Recorder:
        @hookimpl
        def stack3d_after_step(self, step, context, stats):
            seen[step.name] = (context.input_planes, context.output_planes)

    planes = {}
    for keep in (True, False):
        folder = tmp_path / f"keep{keep}"
        write_slices(folder, make_stack(n=70, rows=30, cols=40, dtype="uint16"))
        host = PluginHost()
        host.register(tsteps.PLUGIN, "teststeps")
        host.register(Recorder(), "recorder")
        config = parse_config({"process_steps": ["cropping", "equalise_mean", "add_offset"],
                               "cropping": {"area": [1, 38, 2, 27]}, "add_offset": {"value": 2.0},
                               "engine": {"keep_intermediates": keep}}, host, project_dir=folder)
        run(config, host=host)
        if keep:
            reader = host.readers.get("tiff_folder")(folder / "process/equalise_mean")
            planes["stored"] = cut_planes(reader, ".")
    fused_in, fused_out = seen["equalise_mean"]
    assert fused_out is not None and fused_in is not None
    assert len(fused_out["z_index"]) == 64  # 70 slices, 64 sampled
    for key in ("xy", "xz", "yz", "z_index"):
        np.testing.assert_array_equal(fused_out[key], planes["stored"][key], err_msg=key)
    assert seen["add_offset"][0] is not None  # the stored step's input planes came from the pass
