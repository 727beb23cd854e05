"""The engine: identical results on every executor, prompt failures that name the slice and
file, atomic step folders, untouched inputs, history and re-runs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import PluginHost, StepError, parse_config, run
from stack3d_core.testing import check_step

from . import steps_for_tests as tsteps
from .conftest import make_stack, tree_digest, write_slices


@pytest.fixture(scope="module")
def host() -> PluginHost:
    host = PluginHost()
    host.register(tsteps.PLUGIN, "teststeps")
    return host


def project(tmp_path: Path, stack: np.ndarray | None = None, channels: tuple[str, ...] = (".",)) -> Path:
    folder = tmp_path / "project"
    stack = make_stack() if stack is None else stack
    for i, ch in enumerate(channels):
        write_slices(folder if ch == "." else folder / ch, stack + i if i else stack)
    return folder


def config_for(folder: Path, host: PluginHost, steps: list[str], **tables: dict) -> object:
    channels = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "process") or ["."]
    data = {"channels": channels, "process_steps": steps, **tables}
    return parse_config(data, host, project_dir=folder)


def test_test_steps_honour_the_contract() -> None:
    for cls in tsteps.STEPS:
        check_step(cls)


ALL_KINDS = ["cropping", "equalise_mean", "cumulative_difference", "count_only", "pair_average", "add_offset",
             "stretch_histogram", "long_range_pairs"]


@pytest.mark.slow
def test_serial_processes_and_dask_give_identical_files(tmp_path: Path, host: PluginHost) -> None:
    digests = {}
    for executor in ("serial", "processes", "dask"):
        folder = project(tmp_path / executor, make_stack(n=9, dtype="uint16"), channels=("SE2", "ESB"))
        config = config_for(folder, host, ALL_KINDS, cropping={"area": [3, 50, 2, 33]},
                            engine={"keep_intermediates": True})
        result = run(config, host=host, executor=executor, workers=2)
        assert result.ran == tuple(ALL_KINDS)
        digests[executor] = tree_digest(folder / "process")
    assert digests["serial"], "nothing was written"
    # per channel: 9 slices + stats.npy for cropping, equalise_mean (+ means.npy) and
    # cumulative_difference; pair_average and add_offset have 4 slices + stats.npy
    assert len(digests["serial"]) == 2 * (3 * (9 + 1) + 1 + 2 * (4 + 1) + 2 * (4 + 1 + 1))
    assert digests["processes"] == digests["serial"]
    assert digests["dask"] == digests["serial"]


def test_each_kind_computes_the_right_thing(tmp_path: Path, host: PluginHost) -> None:
    stack = make_stack(n=6, dtype="uint16")
    folder = project(tmp_path, stack)
    config = config_for(folder, host, ["equalise_mean", "cumulative_difference", "count_only", "pair_average"],
                        engine={"keep_intermediates": True})
    run(config, host=host)
    means = stack.reshape(6, -1).mean(1)
    eq = np.stack([tifffile.imread(p) for p in sorted((folder / "process/equalise_mean").glob("*.tif"))])
    expected = np.clip(np.rint(stack * (means.mean() / means)[:, None, None]), 0, 65535)
    np.testing.assert_array_equal(eq, expected)
    np.testing.assert_allclose(np.load(folder / "process/equalise_mean/outputs/means.npy"), means)
    avg = sorted((folder / "process/pair_average").glob("*.tif"))
    assert [p.name for p in avg] == ["avg_0000.tif", "avg_0001.tif", "avg_0002.tif"]
    assert (folder / "process/count_only/count.txt").read_text() == "6"
    stats = np.load(folder / "process/equalise_mean/outputs/stats.npy")
    assert stats.shape == (6, 3, 3)
    np.testing.assert_allclose(stats[:, 0, 2], means)  # input mean
    np.testing.assert_allclose(stats[:, 2, 2], eq.reshape(6, -1).mean(1))  # cast output mean


def test_cast_rounds_and_clips_and_zeroes_nan(tmp_path: Path, host: PluginHost) -> None:
    stack = np.array([[[0, 1, 2, 254, 255, 100]]], dtype=np.uint8).repeat(2, 0)
    folder = project(tmp_path, stack)
    config = config_for(folder, host, ["add_offset"], add_offset={"value": 0.6})
    run(config, host=host)
    out = tifffile.imread(folder / "process/add_offset/slice_0000_z=0.0000um.tif")
    np.testing.assert_array_equal(out[0], [1, 2, 3, 255, 255, 101])  # rounded (PyStack3D truncates)
    result = run(config_for(folder, host, ["make_nan"]), host=host)
    out = tifffile.imread(folder / "process/make_nan/slice_0000_z=0.0000um.tif")
    assert out[0, 0] == 0
    assert any("NaN" in w for w in result.warnings)


@pytest.mark.parametrize("executor", ["serial", "processes", "dask"])
def test_a_failing_slice_fails_promptly_naming_step_slice_and_file(
    tmp_path: Path, host: PluginHost, executor: str
) -> None:
    folder = project(tmp_path, make_stack(n=12))
    before = tree_digest(folder, ("*",))
    config = config_for(folder, host, ["cropping", "fail_at"], fail_at={"at": 7})
    t0 = time.perf_counter()
    with pytest.raises(StepError) as info:
        run(config, host=host, executor=executor, workers=2)
    assert time.perf_counter() - t0 < 60
    err = info.value
    assert err.step == "fail_at" and err.index == 7
    assert "slice_0007_z=0.0700um.tif" in str(err)
    assert "deliberate failure" in str(err)
    # cropping finished and was published (computed: fused into fail_at's pass, so its
    # images are not stored); the failed step left nothing that looks complete
    assert (folder / "process/cropping/recompute.pickle").exists()
    assert not list((folder / "process/cropping").glob("*.tif"))
    assert not (folder / "process/fail_at").exists()
    assert not list((folder / "process").glob(".*partial*"))
    assert tree_digest(folder, ("*.tif",)) == {k: v for k, v in tree_digest(folder, ("*.tif",)).items()}
    assert {k: v for k, v in tree_digest(folder, ("*",)).items() if not k.startswith("process")} == before


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_a_dying_worker_fails_the_run_instead_of_hanging(tmp_path: Path, host: PluginHost, executor: str) -> None:
    folder = project(tmp_path, make_stack(n=8))
    config = config_for(folder, host, ["fail_at"], fail_at={"at": 3, "hard": True})
    t0 = time.perf_counter()
    with pytest.raises(StepError, match="fail_at"):
        run(config, host=host, executor=executor, workers=2)
    assert time.perf_counter() - t0 < 120
    assert not (folder / "process/fail_at").exists()


def test_corrupt_tiff_is_named_and_inputs_stay_intact(tmp_path: Path, host: PluginHost) -> None:
    folder = project(tmp_path, make_stack(n=5))
    bad = folder / "slice_0003_z=0.0300um.tif"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    before = tree_digest(folder, ("*",))
    with pytest.raises(StepError) as info:
        run(config_for(folder, host, ["cropping"]), host=host)
    assert bad.name in str(info.value) and info.value.index == 3
    assert tree_digest(folder, ("*",)) == {**before, **tree_digest(folder, ("process/*",))}
    assert not (folder / "process/cropping").exists()


def test_slice_of_another_shape_is_named(tmp_path: Path, host: PluginHost) -> None:
    folder = project(tmp_path, make_stack(n=4))
    odd = folder / "slice_0002_z=0.0200um.tif"
    tifffile.imwrite(odd, np.zeros((10, 10), np.uint8))
    with pytest.raises(StepError, match="slice_0002"):
        run(config_for(folder, host, ["cropping"]), host=host)


def test_history_skips_done_steps_and_reruns_changed_ones(tmp_path: Path, host: PluginHost) -> None:
    folder = project(tmp_path)
    steps = ["add_offset", "cropping"]
    first = run(config_for(folder, host, steps, add_offset={"value": 1.0}), host=host)
    assert first.ran == tuple(steps)
    again = run(config_for(folder, host, steps, add_offset={"value": 1.0}), host=host)
    assert again.ran == () and again.skipped == tuple(steps)
    # new parameters for the first step: it runs again, and so does the step after it
    changed = run(config_for(folder, host, steps, add_offset={"value": 2.0}), host=host)
    assert changed.ran == tuple(steps)
    # new parameters for the last step only: the first is skipped
    last = run(config_for(folder, host, steps, add_offset={"value": 2.0}, cropping={"area": [0, 20, 0, 20]}), host=host)
    assert last.skipped == ("add_offset",) and last.ran == ("cropping",)
    redo = run(config_for(folder, host, steps, add_offset={"value": 2.0}, cropping={"area": [0, 20, 0, 20]}),
               host=host, redo=True)
    assert redo.ran == tuple(steps)
    # the chain: cropping read add_offset's output
    out = tifffile.imread(folder / "process/cropping/slice_0000_z=0.0000um.tif")
    raw = tifffile.imread(folder / "slice_0000_z=0.0000um.tif")
    np.testing.assert_array_equal(out, np.clip(raw[-20:, :20].astype(int) + 2, 0, 255))


def test_ind_min_ind_max_select_slices(tmp_path: Path, host: PluginHost) -> None:
    folder = project(tmp_path, make_stack(n=8))
    config = parse_config({"ind_min": 2, "ind_max": 4, "process_steps": ["cropping"]}, host, project_dir=folder)
    run(config, host=host)
    names = sorted(p.name for p in (folder / "process/cropping").glob("*.tif"))
    assert names == [f"slice_000{k}_z=0.0{k}00um.tif" for k in (2, 3, 4)]


def test_unchained_steps_all_read_the_input(tmp_path: Path, host: PluginHost) -> None:
    from stack3d_core.engine.pipeline import run_pipeline

    folder = project(tmp_path)
    config = config_for(folder, host, ["add_offset", "cropping"], add_offset={"value": 3.0})
    result = run_pipeline(config, host, chain=False)
    assert result.ran == ("add_offset", "cropping")
    out = tifffile.imread(folder / "process/cropping/slice_0000_z=0.0000um.tif")
    np.testing.assert_array_equal(out, tifffile.imread(folder / "slice_0000_z=0.0000um.tif"))
    assert not (folder / "process/stack3d_run.json").exists() or "add_offset" not in \
        (folder / "process/stack3d_run.json").read_text().split('"history"')[1].split('"runs"')[0]


def test_export_to_output_writer(tmp_path: Path, host: PluginHost) -> None:
    folder = project(tmp_path)
    data = {"process_steps": ["cropping"], "cropping": {"area": [0, 30, 0, 20]},
            "output": {"writer": "tiff_folder", "path": "exported"}}
    run(parse_config(data, host, project_dir=folder), host=host)
    exported = sorted((folder / "exported").glob("*.tif"))
    assert len(exported) == 6
    np.testing.assert_array_equal(tifffile.imread(exported[0]),
                                  tifffile.imread(folder / "process/cropping" / exported[0].name))


def test_hook_stack3d_before_step(tmp_path: Path) -> None:
    calls = []

    class Observer:
        from stack3d_core import hookimpl

        @hookimpl
        def stack3d_before_step(self, step, context):
            calls.append((step.name, context.channel, context.meta.n, any(context.image_dir.glob("*.tif"))))

    host = PluginHost()
    host.register(Observer(), "observer")
    folder = project(tmp_path, channels=("A", "B"))
    run(config_for(folder, host, ["cropping"]), host=host)
    assert calls == [("cropping", "A", 6, False), ("cropping", "B", 6, False)]


def test_hook_stack3d_after_step(tmp_path: Path) -> None:
    calls = []

    class Observer:
        from stack3d_core import hookimpl

        @hookimpl
        def stack3d_after_step(self, step, context, stats, seconds):
            calls.append((step.name, stats.shape, (context.outputs_dir / "stats.npy").exists(), seconds >= 0))

    host = PluginHost()
    host.register(Observer(), "observer")
    folder = project(tmp_path)
    run(config_for(folder, host, ["cropping"]), host=host)
    assert calls == [("cropping", (6, 3, 3), True, True)]
    assert (folder / "process/cropping/outputs/stats.png").stat().st_size > 1000  # the built-in plots plugin


def test_hook_stack3d_on_step_error(tmp_path: Path) -> None:
    calls = []

    class Observer:
        from stack3d_core import hookimpl

        @hookimpl
        def stack3d_on_step_error(self, step, context, error):
            calls.append((step.name, type(error).__name__, getattr(error, "index", None)))
            raise RuntimeError("an observer failing must not mask the error")

    host = PluginHost()
    host.register(tsteps.PLUGIN, "teststeps")
    host.register(Observer(), "observer")
    folder = project(tmp_path)
    with pytest.raises(StepError, match="deliberate"):
        run(config_for(folder, host, ["fail_at"], fail_at={"at": 1}), host=host)
    assert calls == [("fail_at", "StepError", 1)]


def test_an_observer_failure_names_its_plugin(tmp_path: Path) -> None:
    from stack3d_core import Stack3dError, hookimpl

    class Broken:
        @hookimpl
        def stack3d_before_step(self):
            raise KeyError("oops")

    host = PluginHost()
    host.register(Broken(), "broken_observer")
    folder = project(tmp_path)
    with pytest.raises(Stack3dError, match="plugin 'broken_observer' failed in stack3d_before_step"):
        run(config_for(folder, host, ["cropping"]), host=host)
    assert not (folder / "process/cropping").exists()


@pytest.mark.slow
def test_dask_scheduler_address(tmp_path: Path, host: PluginHost) -> None:
    """A running cluster given by its address (as `--scheduler tcp://...`): same files as serial."""
    from distributed import LocalCluster

    serial = project(tmp_path / "serial", make_stack(n=6))
    run(config_for(serial, host, ["cropping", "equalise_mean"]), host=host)
    remote = project(tmp_path / "remote", make_stack(n=6))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        config = parse_config({"process_steps": ["cropping", "equalise_mean"],
                               "engine": {"scheduler": cluster.scheduler_address}}, host, project_dir=remote)
        assert config.executor == "dask"
        result = run(config, host=host)
    assert result.ran == ("cropping", "equalise_mean")
    assert tree_digest(remote / "process") == tree_digest(serial / "process")


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path, host: PluginHost) -> None:
    from stack3d_core import Stack3dError

    folder = project(tmp_path)
    with pytest.raises(Stack3dError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run(config_for(folder, host, ["cropping"]), host=host, scheduler="tcp://127.0.0.1:9")


def test_multipass_reduce_and_long_range_pairs(tmp_path: Path, host: PluginHost) -> None:
    stack = make_stack(n=5, dtype="uint16")
    folder = project(tmp_path, stack)
    run(config_for(folder, host, ["stretch_histogram"]), host=host)
    expected = sum(np.histogram(s, bins=16, range=(stack.min(), stack.max()))[0] for s in stack)
    np.testing.assert_array_equal(np.load(folder / "process/stretch_histogram/outputs/histogram.npy"), expected)
    run(config_for(folder, host, ["long_range_pairs"]), host=host, redo=True)
    pairs = np.load(folder / "process/long_range_pairs/outputs/pairs.npy")
    # the input of this step is stretch_histogram's output (constant slices): check the pairs only
    assert [tuple(map(int, p[:2])) for p in pairs] == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]


def test_measure_slices_limits_what_is_read(tmp_path: Path, host: PluginHost) -> None:
    """A REDUCE step that needs every 3rd slice reads only those (a corrupt unread slice is harmless)."""
    from stack3d_core import hookimpl

    class EveryThird(tsteps.EqualiseMean):
        name = "every_third"

        def measure_slices(self, ctx):
            return range(0, ctx.meta.n, 3)

        def combine(self, ctx, measures):
            assert [m is None for m in measures] == [k % 3 != 0 for k in range(len(measures))]
            return 1.0, np.ones(len(measures))

        def apply(self, image, index, state):
            return image

    class P:
        @hookimpl
        def stack3d_register_steps(self):
            return [EveryThird]

    local = PluginHost()
    local.register(P(), "every_third")
    folder = project(tmp_path, make_stack(n=7))
    config = config_for(folder, local, ["every_third"])
    from stack3d_core.engine.executors import SerialExecutor
    from stack3d_core.engine.runner import execute_step
    from stack3d_core.step import StepContext

    reader = local.readers.get("tiff_folder")(folder)
    read = []
    original = reader.read
    reader.read = lambda ch, i: (read.append(i), original(ch, i))[1]  # type: ignore[method-assign]
    step = config.steps["every_third"]
    ctx = StepContext(step="every_third", channel=".", channels=(".",), project_dir=folder, image_dir=tmp_path / "o",
                      outputs_dir=tmp_path / "o", names=reader.names("."), meta=reader.meta("."),
                      process_dir=tmp_path)
    from stack3d_core.testing import MemoryWriter

    execute_step(step, ctx, reader, lambda meta, names: MemoryWriter(None, meta, names), SerialExecutor(), 1)
    assert read[:3] == [0, 3, 6]  # the measure pass; then every slice for apply


def test_prepare_refuses_before_any_slice_is_read(tmp_path: Path, host: PluginHost) -> None:
    from stack3d_core import hookimpl

    class Picky(tsteps.AddOffset):
        name = "picky"

        def prepare(self, ctx):
            raise ValueError(f"picky.value: {ctx.meta.shape} is too small")

        def apply(self, image, index, state):
            raise AssertionError("no slice may be read")

    class P:
        @hookimpl
        def stack3d_register_steps(self):
            return [Picky]

    local = PluginHost()
    local.register(P(), "picky")
    folder = project(tmp_path)
    with pytest.raises(StepError, match=r"picky.value: \(40, 56\) is too small"):
        run(config_for(folder, local, ["picky"]), host=local)


def test_state_from_first_channel_is_applied_to_every_channel(tmp_path: Path, host: PluginHost) -> None:
    """A REDUCE step with state_from = "first" measures channel A only and applies its state to B."""
    from stack3d_core import hookimpl

    class FromFirst(tsteps.EqualiseMean):
        name = "from_first"
        state_from = "first"

        def combine(self, ctx, measures):
            assert ctx.channel == "A"
            assert ctx.project_params["process_steps"] == ["from_first"]
            return super().combine(ctx, measures)

    class P:
        @hookimpl
        def stack3d_register_steps(self):
            return [FromFirst]

    local = PluginHost()
    local.register(P(), "from_first")
    stack = make_stack(n=4, dtype="uint16")
    folder = project(tmp_path, stack, channels=("A", "B"))
    run(config_for(folder, local, ["from_first"]), host=local)
    means = stack.reshape(4, -1).mean(1)
    factors = (means.mean() / means)[:, None, None]
    for channel, data in (("A", stack), ("B", stack + 1)):
        out = np.stack([tifffile.imread(p) for p in sorted((folder / "process/from_first" / channel).glob("*.tif"))])
        np.testing.assert_array_equal(out, np.clip(np.rint(data * factors), 0, 65535))


def test_slice_stats_ignore_nan_and_infinities() -> None:
    from stack3d_core.engine.casting import slice_stats

    np.testing.assert_array_equal(slice_stats(np.array([[1, 5], [3, 7]], dtype=np.uint16)), [1, 7, 4])
    np.testing.assert_array_equal(slice_stats(np.array([[1.0, np.nan], [np.inf, 3.0]])), [1, 3, 2])
    np.testing.assert_array_equal(slice_stats(np.array([[-np.inf, 2.0]], dtype=np.float32)), [2, 2, 2])
    assert np.isnan(slice_stats(np.full((2, 2), np.nan))).all()
    assert np.isnan(slice_stats(np.zeros((0, 3)))).all()


def _spawn_environment(_: int) -> dict[str, str]:
    raw = Path("/proc/self/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="Linux /proc only")
def test_worker_processes_start_with_one_native_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """BLAS / OpenMP read their thread count when the worker loads them, before any
    initializer: the variables must be in the environment the worker is started with."""
    import os

    from stack3d_core.engine.executors import open_executor

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the user's own choice is kept
    with open_executor("processes", 1) as (pool, _):
        env = pool.submit(_spawn_environment, 0).result()
    assert env.get("OPENBLAS_NUM_THREADS") == "1" and env.get("OMP_NUM_THREADS") == "1"
    assert env.get("MKL_NUM_THREADS") == "3"
    assert "OPENBLAS_NUM_THREADS" not in os.environ  # the driver's environment is restored


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="Linux /proc only")
def test_local_dask_workers_start_without_the_malloc_trim_threshold(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Dask's nannies set MALLOC_TRIM_THRESHOLD_, which makes glibc page-fault every large
    temporary: the local cluster's workers start without it; a running cluster whose
    workers have it gets a warning."""
    from distributed import LocalCluster

    from stack3d_core.engine.executors import open_executor

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with open_executor("dask", 1) as (pool, _):
        env = pool.submit(_spawn_environment, 0).result()
    assert "MALLOC_TRIM_THRESHOLD_" not in env and env.get("OMP_NUM_THREADS") == "1"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with caplog.at_level("WARNING", logger="stack3d.engine"):
            with open_executor("dask", scheduler=cluster.scheduler_address) as (pool, _):
                assert pool.submit(_spawn_environment, 0).result()["MALLOC_TRIM_THRESHOLD_"] == "65536"
    assert "MALLOC_TRIM_THRESHOLD_" in caplog.text and cluster.scheduler_address in caplog.text


def test_fused_two_channel_run_of_every_kind_equals_the_stored_run(tmp_path: Path, host: PluginHost) -> None:
    """Every step kind, two channels, fused (default) against keep_intermediates: the last
    step's images and every step's side outputs are identical."""
    digests = {}
    for keep in (True, False):
        folder = project(tmp_path / f"keep{keep}", make_stack(n=9, dtype="uint16"), channels=("SE2", "ESB"))
        config = config_for(folder, host, ALL_KINDS, cropping={"area": [3, 50, 2, 33]},
                            engine={"keep_intermediates": keep})
        result = run(config, host=host)
        assert result.ran == tuple(ALL_KINDS)
        digests[keep] = tree_digest(folder / "process", ("*.tif", "*.npy", "*.txt"))
    stored, fused = digests[True], digests[False]
    last = "long_range_pairs/"
    assert {k: v for k, v in fused.items() if k.endswith(".tif")} == {
        k: v for k, v in stored.items() if k.endswith(".tif") and k.startswith(last)}
    side = {k: v for k, v in stored.items() if not k.endswith((".tif", "stats.npy"))}
    assert side and all(fused.get(k) == v for k, v in side.items())


def test_chunks_are_short_in_process_and_long_for_pickled_fused_tasks() -> None:
    from stack3d_core.engine.runner import chunked

    items = list(range(100))
    assert max(len(c) for c in chunked(items, 1)) == 5  # in process: about 20 chunks, at most 8
    # one Dask worker: tasks are pickled, so a fused pass gets long runs (fewer recomputed boundaries)
    assert [len(c) for c in chunked(items, 1, fused=True, serial=False)] == [32, 32, 32, 4]
    assert max(len(c) for c in chunked(items, 2, fused=True)) == 25
    assert max(len(c) for c in chunked(items, 2)) == 13
    assert sum(len(c) for c in chunked(items, 3, fused=True, serial=False)) == 100
