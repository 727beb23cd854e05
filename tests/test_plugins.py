"""Plugin discovery through real entry points, broken plugins, disabling, the registry."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest

from stack3d_core import (
    DuplicateNameError,
    PluginHost,
    PluginLoadError,
    Step,
    StepKind,
    UnknownNameError,
    hookimpl,
)
from stack3d_core.registry import Registry
from stack3d_core.testing import check_reader, check_step, check_writer

from .conftest import run_cli, write_slices


def test_builtins_come_through_entry_points() -> None:
    host = PluginHost()
    loaded = {p.name: p for p in host.plugins}
    assert {"steps", "io", "plots"} <= set(loaded)
    assert loaded["steps"].distribution == "stack3d"
    assert host.steps.entry("cropping").plugin == "steps"
    assert host.readers.entry("tiff_folder").plugin == "io"
    assert host.writers.entry("tiff_folder").plugin == "io"
    assert host.failures == []


def test_no_autoload_registers_nothing() -> None:
    host = PluginHost(autoload=False)
    assert host.plugins == [] and len(host.steps) == 0


def test_builtins_honour_the_contracts() -> None:
    host = PluginHost()
    for entry in host.steps:
        check_step(entry.obj)
    for entry in host.readers:
        check_reader(entry.obj)
    for entry in host.writers:
        check_writer(entry.obj)


def test_third_party_plugin_and_broken_plugin(plugin_site: Path) -> None:
    proc = run_cli("plugins", env={"PYTHONPATH": str(plugin_site)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "testplugin   stack3d-testplugin   0.0.1" in out
    assert "invert (testplugin)" in out
    # the broken plugin is reported with its name, distribution, version and error ...
    assert "plugin 'broken' (from stack3d-brokenplugin 0.0.2): ModuleNotFoundError" in out
    assert "stack3d_no_such_dependency" in out
    # ... and the others still loaded
    assert "cropping (steps)" in out


def test_strict_mode_fails_on_a_broken_plugin(plugin_site: Path) -> None:
    proc = run_cli("--strict-plugins", "plugins", env={"PYTHONPATH": str(plugin_site)})
    assert proc.returncode == 1
    assert "stack3d-brokenplugin" in proc.stderr
    proc = run_cli("plugins", env={"PYTHONPATH": str(plugin_site), "STACK3D_STRICT_PLUGINS": "1"})
    assert proc.returncode == 1


def test_disable_plugins_by_option_and_environment(plugin_site: Path) -> None:
    env = {"PYTHONPATH": str(plugin_site)}
    proc = run_cli("--disable-plugin", "broken", "--disable-plugin", "testplugin", "plugins", env=env)
    assert proc.returncode == 0
    assert "testplugin" not in proc.stdout and "broken" not in proc.stdout
    proc = run_cli("plugins", env={**env, "STACK3D_DISABLE_PLUGINS": "broken"})
    assert "load failures" not in proc.stdout and "invert (testplugin)" in proc.stdout
    # strict mode does not mind a disabled broken plugin
    proc = run_cli("--strict-plugins", "--disable-plugin", "broken", "plugins", env=env)
    assert proc.returncode == 0, proc.stderr


def test_third_party_step_runs_from_params_toml(plugin_site: Path, tmp_path: Path) -> None:
    project = tmp_path / "p"
    stack = np.arange(3 * 8 * 10, dtype=np.uint8).reshape(3, 8, 10)
    write_slices(project, stack)
    (project / "params.toml").write_text('channels = ["."]\nprocess_steps = ["invert"]\n[invert]\nmaximum = 200.0\n')
    log = tmp_path / "hooks.log"
    env = {"PYTHONPATH": str(plugin_site), "STACK3D_DISABLE_PLUGINS": "broken", "STACK3D_TESTPLUGIN_LOG": str(log)}
    proc = run_cli("run", str(project), "-q", env=env)
    assert proc.returncode == 0, proc.stderr
    import tifffile

    out = tifffile.imread(project / "process" / "invert" / "slice_0001_z=0.0100um.tif")
    expected = np.clip(200.0 - stack[1].astype(float), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert log.read_text().splitlines() == ["before invert .", "after invert . 3"]


def test_hook_stack3d_register_steps() -> None:
    @attrs.frozen(kw_only=True)
    class P:
        gain: float = attrs.field(default=2.0, metadata={"doc": "factor", "unit": "-"})

    class Double(Step):
        name = "double"
        description = "multiply by a gain"
        Params = P
        kind = StepKind.MAP

        def apply(self, image, index, state):
            return image * self.params.gain

    class Plugin:
        @hookimpl
        def stack3d_register_steps(self):
            return [Double]

    host = PluginHost(autoload=False)
    host.register(Plugin(), "mine")
    assert host.steps.get("double") is Double
    assert host.steps.entry("double").plugin == "mine"
    host.unregister("mine")
    assert "double" not in host.steps


def test_duplicate_step_names_are_refused_naming_both() -> None:
    from stack3d_steps.cropping import Cropping

    class Again(Cropping):
        pass

    class Plugin:
        @hookimpl
        def stack3d_register_steps(self):
            return [Again]

    host = PluginHost()
    host.register(Plugin(), "copycat", distribution="copycat-dist", version="9.9")
    assert host.steps.get("cropping") is Cropping  # the first registration stays
    failure = host.failures[-1]
    assert "cropping" in failure.error and "stack3d" in failure.error and "copycat-dist" in failure.error
    strict = PluginHost(strict=True)
    with pytest.raises(PluginLoadError, match="copycat-dist"):
        strict.register(Plugin(), "copycat", distribution="copycat-dist", version="9.9")


def test_registry_refuses_duplicates_and_suggests() -> None:
    reg: Registry[object] = Registry("step")
    reg.add("bkg_removal", object, plugin="a", distribution="dist-a", version="1")
    with pytest.raises(DuplicateNameError) as info:
        reg.add("bkg_removal", int, plugin="b", distribution="dist-b", version="2")
    assert "dist-a" in str(info.value) and "dist-b" in str(info.value)
    with pytest.raises(UnknownNameError, match="did you mean 'bkg_removal'"):
        reg.get("bkg_remova")
    with pytest.raises(ValueError, match="not valid"):
        reg.add("Bad-Name", object, plugin="a", distribution="d", version="1")


def test_register_hook_returning_garbage_is_reported() -> None:
    class Plugin:
        @hookimpl
        def stack3d_register_steps(self):
            return ["not a class"]

    host = PluginHost(autoload=False)
    host.register(Plugin(), "garbage")
    assert "not a Step subclass" in host.failures[-1].error


def test_check_step_catches_contract_violations() -> None:
    @attrs.define
    class Mutable:
        a: int = attrs.field(default=1, metadata={"doc": "a"})

    class NotFrozen(Step):
        name = "not_frozen"
        description = "x"
        Params = Mutable

        def apply(self, image, index, state):
            return image

    with pytest.raises(AssertionError, match="frozen"):
        check_step(NotFrozen)

    @attrs.frozen
    class Undocumented:
        a: int = 1

    class NoDocs(NotFrozen):
        name = "no_docs"
        Params = Undocumented

    with pytest.raises(AssertionError, match="document"):
        check_step(NoDocs)

    class BadName(NotFrozen):
        name = "Bad Name"

    with pytest.raises(AssertionError, match="invalid name"):
        check_step(BadName)

    @attrs.frozen
    class Lossy:
        a: int = attrs.field(default=1, converter=lambda v: v + 1, metadata={"doc": "a"})

    class NoRoundTrip(NotFrozen):
        name = "no_round_trip"
        Params = Lossy

    with pytest.raises(AssertionError, match="round"):
        check_step(NoRoundTrip)

    class ReduceWithoutMeasure(NotFrozen):
        name = "reduce_without_measure"
        Params = EmptyParams
        kind = StepKind.REDUCE

    with pytest.raises(AssertionError, match="measure"):
        check_step(ReduceWithoutMeasure)

    class LocalParamsStep(NotFrozen):
        name = "local_params"
        Params = attrs.frozen(type("Local", (), {}))

    with pytest.raises(AssertionError, match="cannot be pickled"):
        check_step(LocalParamsStep)


@attrs.frozen
class EmptyParams:
    """Module level, so it pickles."""


def test_steps_and_params_pickle_by_reference() -> None:
    from stack3d_steps.cropping import Cropping, CroppingParams

    step = Cropping(CroppingParams(area=(1, 5, 2, 6)))
    assert pickle.loads(pickle.dumps(step)) == step
    assert len(pickle.dumps(step)) < 400


def test_core_imports_no_heavy_module() -> None:
    code = ("import sys, stack3d_core, stack3d_core.cli, stack3d_core.testing.pytest_plugin; "
            "heavy = {'scipy', 'dask', 'distributed', 'tifffile', 'matplotlib', 'cv2', 'cupy', 'tqdm'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _npy_host():
    from . import steps_for_tests as t

    host = PluginHost()
    host.register(t.IO_PLUGIN, "npyio")
    return host


def test_hook_stack3d_register_readers(tmp_path: Path) -> None:
    from stack3d_core import parse_config, run

    host = _npy_host()
    assert host.readers.entry("npy_stack").plugin == "npyio"
    stack = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)
    np.save(tmp_path / "stack.npy", stack)
    data = {"process_steps": ["cropping"], "cropping": {"area": [0, 4, 0, 3]},
            "input": {"reader": "npy_stack", "path": "stack.npy", "scale": 2}}
    run(parse_config(data, host, project_dir=tmp_path), host=host)
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tmp_path / "process/cropping/z002.tif"), stack[2, 3:, :4] * 2)
    # picked from the path when no reader is named
    assert host.reader_for(tmp_path / "stack.npy").name == "npy_stack"


def test_hook_stack3d_register_writers(tmp_path: Path) -> None:
    from stack3d_core import parse_config, run

    host = _npy_host()
    assert host.writers.entry("npy_stack").plugin == "npyio"
    stack = np.arange(3 * 6 * 8, dtype=np.uint8).reshape(3, 6, 8)
    write_slices(tmp_path, stack)
    data = {"process_steps": ["cropping"], "output": {"path": "result.npy"}}  # writer picked by suffix
    run(parse_config(data, host, project_dir=tmp_path), host=host)
    np.testing.assert_array_equal(np.load(tmp_path / "result.npy"), stack)
    assert not list(tmp_path.glob(".*partial"))


def test_entry_point_name_clash_is_reported(tmp_path: Path) -> None:
    """A third-party distribution whose entry point is also called 'steps' is not silently dropped."""
    dist = tmp_path / "clash-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clash\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[stack3d]\nsteps = clash_module\n")
    (tmp_path / "clash_module.py").write_text("")
    proc = run_cli("plugins", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0
    assert "plugin 'steps' (from clash 0.1): entry-point name 'steps' is already used by stack3d" in proc.stdout
