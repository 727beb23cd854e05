"""Plugin distributions for real: `pip install` into a separate environment, discovered
through their entry points, their own test suites run there, then `pip uninstall`.

The separate environment is a virtual environment that sees this one's packages (stack3d,
numpy, opencv, pytest...) through a ``.pth`` file, so installing a plugin there never
touches the environment the tests run in, where the plugins stay absent ("pip install ."
alone gives no contrib plugin).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from stack3d_core.cli.scaffold import scaffold

REPO = Path(__file__).resolve().parents[1]
CONTRIB = sorted(p.parent for p in (REPO / "plugins_contrib").glob("*/pyproject.toml"))

pytestmark = pytest.mark.slow


class PluginEnv:
    """A virtual environment layered on the test environment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        self.python = root / "bin" / "python"
        site = Path(subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        base = sysconfig.get_paths()["purelib"]
        (site / "_stack3d_test_layer.pth").write_text(f"import site; site.addsitedir({base!r})\n")

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STACK3D_DISABLE_PLUGINS")}
        return subprocess.run([str(self.python), *args], capture_output=True, text=True, cwd=cwd, env=env,
                              timeout=timeout)

    def pip(self, *args: str) -> subprocess.CompletedProcess:
        # this environment's pip, driving the layered interpreter (it has no pip of its own)
        cmd = [sys.executable, "-m", "pip", "--python", str(self.python), "--disable-pip-version-check", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def install(self, *dists: Path) -> None:
        self.pip("install", "--quiet", "--no-deps", "--no-build-isolation", *map(str, dists))

    def uninstall(self, *names: str) -> None:
        self.pip("uninstall", "--yes", "--quiet", *names)

    def plugins(self) -> str:
        proc = self.run("-m", "stack3d_core", "plugins")
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> PluginEnv:
    return PluginEnv(tmp_path_factory.mktemp("plugin_env") / "venv")


def dist_name(path: Path) -> str:
    import tomllib

    return tomllib.loads((path / "pyproject.toml").read_text())["project"]["name"]


def test_the_test_environment_has_no_contrib_plugin() -> None:
    from stack3d_core import PluginHost

    host = PluginHost()
    distributions = {p.distribution for p in host.plugins}
    assert distributions == {"stack3d"}, distributions


@pytest.mark.parametrize("dist", CONTRIB, ids=lambda p: p.name)
def test_contrib_plugin_installs_passes_its_tests_and_uninstalls(plugin_env: PluginEnv, dist: Path) -> None:
    name = dist_name(dist)
    assert name not in plugin_env.plugins()
    plugin_env.install(dist)
    try:
        assert name in plugin_env.plugins()
        proc = plugin_env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(dist / "tests"), cwd=dist)
        assert proc.returncode == 0, f"{name}'s own tests failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]  # entry-point tests ran too
    finally:
        plugin_env.uninstall(name)
    assert name not in plugin_env.plugins()


@pytest.mark.parametrize("kind", ["step", "reader", "writer"])
def test_scaffolded_plugin_installs_and_passes_its_own_tests(plugin_env: PluginEnv, tmp_path: Path, kind: str) -> None:
    root = scaffold(tmp_path, f"scaffold_{kind}", kind)
    plugin_env.install(root)
    try:
        assert f"stack3d-scaffold-{kind}" in plugin_env.plugins()
        proc = plugin_env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests"), cwd=root)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
    finally:
        plugin_env.uninstall(f"stack3d-scaffold-{kind}")
    assert f"stack3d-scaffold-{kind}" not in plugin_env.plugins()


def test_scaffold_refuses_bad_names_and_existing_folders(tmp_path: Path) -> None:
    from stack3d_core import Stack3dError

    with pytest.raises(Stack3dError, match="lower-case"):
        scaffold(tmp_path, "Bad-Name")
    scaffold(tmp_path, "twice")
    with pytest.raises(Stack3dError, match="exists"):
        scaffold(tmp_path, "twice")


def test_contrib_plugins_run_from_a_params_toml(plugin_env: PluginEnv, tmp_path: Path) -> None:
    """Both contrib plugins installed: a project's params.toml uses their steps through the CLI."""
    names = {p.name: p for p in CONTRIB}
    if not {"stack3d-sift", "stack3d-quality"} <= set(names):
        pytest.skip("plugins_contrib/stack3d-sift and stack3d-quality are needed")
    project = tmp_path / "p"
    proc = plugin_env.run("-m", "stack3d_core", "synth", str(project), "--slices", "6", "--shape", "96", "128")
    assert proc.returncode == 0, proc.stderr
    (project / "params.toml").write_text(
        'channels = ["."]\nprocess_steps = ["sift_registration", "quality"]\n\n'
        '[sift_registration]\nmodel = "shift"\n\n[quality]\nmetrics = ["ncc", "nsad"]\n'
        'follow = ["sift_registration"]\n')
    plugin_env.install(names["stack3d-sift"], names["stack3d-quality"])
    try:
        proc = plugin_env.run("-m", "stack3d_core", "run", str(project), "-q")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(list((project / "process" / "sift_registration").glob("*.tif"))) == 6
        assert (project / "process" / "sift_registration" / "outputs" / "tmats_cumul.npy").exists()
        assert list((project / "process" / "quality" / "outputs").glob("quality*.csv"))
        assert list((project / "process" / "sift_registration" / "outputs").glob("quality_sift_registration*.csv"))
    finally:
        plugin_env.uninstall("stack3d-sift", "stack3d-quality")
    proc = plugin_env.run("-m", "stack3d_core", "validate", str(project))
    assert proc.returncode == 1 and "unknown step 'sift_registration'" in proc.stderr
