"""params.toml validation: strict types, every problem at once with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack3d_core import ConfigError, PluginHost, load_config, parse_config

# A project file shaped like PyStack3D's (all of its top-level keys and tables, some of
# its steps not installed in this build), written for these tests.
PYSTACK3D_SHAPED = """\
#dirname = "somewhere"
ind_min = 0
ind_max = 99999
channels = ["."]
nproc = 1
process_steps = ["cropping", "cropping_final"]
history = []

[cropping]
area = [40, 340, 0, 300]

[bkg_removal]
dim = 3
orders = [1, 1, 1]
cross_terms = true
skip_factors = [5, 5, 5]
threshold_min = 5

[intensity_rescaling]
nbins = 256
filter_size = -1

[destriping]
maxit = 50
cvg_threshold = 1e-2
filters = [{ name = "Gabor", noise_level = 200, sigma = [2, 80], theta = 10 }]

[registration_calculation]
threshold = 0.5
nb_blocks = [1, 1]
transformation = "TRANSLATION"

[registration_transformation]
subpixel = false
mode = "edge"
cropping = true

[resampling]
policy = "slice_{slice_nb}_z={z_coord}um.tif"
dz = 0.01

[cropping_final]
area = [2, 38, 4, 30]
"""


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


def issues_of(data: dict, host: PluginHost) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, host, project_dir=Path("/tmp"))
    return [(i.path, i.message) for i in info.value.issues]


def test_pystack3d_shaped_file_is_read_unchanged(tmp_path: Path, host: PluginHost) -> None:
    path = tmp_path / "params.toml"
    path.write_text(PYSTACK3D_SHAPED)
    config = load_config(path, host)
    assert config.process_steps == ("cropping", "cropping_final")
    assert config.steps["cropping"].params.area == (40, 340, 0, 300)
    assert config.project_dir == tmp_path.resolve()
    assert config.executor == "serial" and config.workers == 1
    # tables of PyStack3D steps not installed are kept out of the way, with a warning each
    installed = set(host.steps.names())
    for name in ("bkg_removal", "destriping", "resampling"):
        if name not in installed:
            assert any(f"[{name}]" in w for w in config.warnings)
    assert path.read_text() == PYSTACK3D_SHAPED  # the user's file is never rewritten


def test_three_mistakes_reported_together(host: PluginHost) -> None:
    data = {
        "ind_min": 2.5,                            # not an int
        "process_steps": ["croping"],              # typo
        "cropping": {"area": [0, 10, 0, "20"]},    # a string in the area
    }
    issues = issues_of(data, host)
    paths = [p for p, _ in issues]
    assert "ind_min" in paths
    assert "process_steps[0]" in paths
    assert "cropping.area[3]" in paths
    messages = dict(issues)
    assert "expected an integer" in messages["ind_min"]
    assert "did you mean 'cropping'" in messages["process_steps[0]"]


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"nproc": True}, "nproc", "expected an integer"),
        ({"nproc": "2"}, "nproc", "expected an integer"),
        ({"channels": "SE2"}, "channels", ""),
        ({"cropping": {"area": [0, 10.0, 0, 20]}}, "cropping.area[1]", "expected an integer"),
        ({"cropping": {"aera": [0, 10, 0, 20]}}, "cropping.aera", "did you mean 'area'"),
        ({"cropping": {"area": [10, 5, 0, 20]}}, "cropping.area", "xmin < xmax"),
        ({"cropping": {"area": [-1, 5, 0, 20]}}, "cropping.area", ">= 0"),
        ({"cropping": {"area": [0, 5, 0]}}, "cropping.area", ""),
        ({"nporc": 2}, "nporc", "did you mean 'nproc'"),
        ({"cropping_finl": {}}, "cropping_finl", "did you mean 'cropping_final'"),
        ({"engine": {"executor": "threads"}}, "engine.executor", "not one of"),
        ({"engine": {"workers": 0}}, "engine.workers", ">= 1"),
        ({"engine": {"executor": "serial", "scheduler": "tcp://x:1"}}, "engine", "dask"),
        ({"engine": {"device": "tpu"}}, "engine.device", "not one of"),
        ({"input": {"reader": "tiff_foldr"}}, "input.reader", "did you mean 'tiff_folder'"),
        ({"input": {"reader": "tiff_folder", "z_patern": "x"}}, "input.z_patern", "did you mean 'z_pattern'"),
        ({"input": {"path": "does/not/exist"}}, "input.path", "does not exist"),
        ({"output": {"writer": "tiff_folder"}}, "output.path", "required"),
        ({"ind_min": 5, "ind_max": 2}, "ind_max", ">= ind_min"),
        ({"process_steps": ["cropping", "cropping"]}, "process_steps[1]", "twice"),
        ({"channels": ["../elsewhere"]}, "channels[0]", "not a subfolder"),
    ],
)
def test_each_mistake_is_named(data: dict, path: str, fragment: str, host: PluginHost) -> None:
    issues = issues_of(data, host)
    matching = [m for p, m in issues if p == path]
    assert matching, f"no issue at {path}: {issues}"
    assert any(fragment in m for m in matching), matching


def test_no_silent_coercion_of_booleans_and_floats(host: PluginHost) -> None:
    # "false" is not a bool, 2.5 is not an int, true is not a number
    assert issues_of({"ind_max": 2.5}, host)[0][1].startswith("expected an integer")
    assert "expected an integer" in issues_of({"ind_max": True}, host)[0][1]


def test_toml_syntax_error_names_the_file(tmp_path: Path, host: PluginHost) -> None:
    path = tmp_path / "params.toml"
    path.write_text("[cropping\narea = [1, 2")
    with pytest.raises(ConfigError) as info:
        load_config(path, host)
    assert str(path) in str(info.value) and "not valid TOML" in str(info.value)


def test_project_dir_keys(tmp_path: Path, host: PluginHost) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "params.toml"
    for key in ("project_dir", "dirname", "input_dirname"):
        path.write_text(f'{key} = "data"\n')
        assert load_config(path, host).project_dir == (tmp_path / "data").resolve()


def test_engine_defaults_follow_nproc(host: PluginHost) -> None:
    config = parse_config({"nproc": 3}, host, project_dir=Path("/tmp"))
    assert (config.executor, config.workers) == ("processes", 3)
    config = parse_config({"engine": {"scheduler": "tcp://h:8786"}}, host, project_dir=Path("/tmp"))
    assert config.executor == "dask"
    config = parse_config({"nproc": 3, "engine": {"executor": "dask", "workers": 2}}, host, project_dir=Path("/tmp"))
    assert (config.executor, config.workers) == ("dask", 2)


def test_missing_table_with_defaults_is_fine(host: PluginHost) -> None:
    config = parse_config({"process_steps": ["cropping"]}, host, project_dir=Path("/tmp"))
    assert config.steps["cropping"].params.area is None


def test_init_template_validates(tmp_path: Path, host: PluginHost) -> None:
    from stack3d_core.cli.init_toml import params_template

    path = tmp_path / "params.toml"
    path.write_text(params_template(host))
    config = load_config(path, host)
    assert set(config.process_steps) <= set(host.steps.names())
    assert config.warnings == ()
