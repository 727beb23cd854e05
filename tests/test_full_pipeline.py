"""Every built-in step at once, from a PyStack3D-shaped params.toml, on a synthetic stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import PluginHost, Stack3d, StepError
from stack3d_core.demo import write_synthetic_project
from stack3d_core.testing.synth import SynthSpec

from .conftest import tree_digest

# PyStack3D's key set and table layout (its synthetic-stack template), with areas sized for
# a 96 x 128 stack: not a copy of its file, the same shape of project.
PARAMS = """\
ind_min = 0
ind_max = 99999
channels = ["."]
nproc = 1
process_steps = [
    "cropping",
    "bkg_removal",
    "intensity_rescaling",
    "registration_calculation", "registration_transformation",
    "destriping",
    "resampling",
    "cropping_final",
]
history = []

[cropping]
area = [8, 120, 4, 92]

[bkg_removal]
dim = 3
orders = [1, 2, 1]
cross_terms = true
skip_factors = [4, 4, 2]
threshold_min = 5

[intensity_rescaling]
nbins = 256
filter_size = -1

[destriping]
maxit = 30
cvg_threshold = 1e-2
filters = [{ name = "Gabor", noise_level = 30, sigma = [0.5, 80], theta = 0 }]

[registration_calculation]
nb_blocks = [1, 1]
transformation = "TRANSLATION"

[registration_transformation]
subpixel = true
mode = "edge"
cropping = true

[resampling]
policy = "slice_{slice_nb}_z={z_coord}um.tif"
dz = 0.01

[cropping_final]
area = [2, 90, 2, 70]
"""


def make_project(folder: Path) -> None:
    spec = SynthSpec(n_slices=24, shape=(96, 128), dtype="uint8", seed=4)
    write_synthetic_project(folder, spec, PluginHost())
    (folder / "params.toml").write_text(PARAMS)


@pytest.mark.slow
def test_pystack3d_project_runs_every_step_identically_on_serial_and_processes(tmp_path: Path) -> None:
    digests = {}
    for nproc in (1, 2):
        folder = tmp_path / f"nproc{nproc}"
        make_project(folder)
        result = Stack3d(folder).eval(nproc=nproc, show_pbar=False)
        assert result.ran == ("cropping", "bkg_removal", "intensity_rescaling", "registration_calculation",
                              "registration_transformation", "destriping", "resampling", "cropping_final")
        digests[nproc] = tree_digest(folder / "process")
        assert (folder / "params.toml").read_text() == PARAMS
    assert digests[1] == digests[2]
    final = sorted((tmp_path / "nproc1/process/cropping_final").glob("*.tif"))
    assert final and tifffile.imread(final[0]).shape == (68, 88)
    for side in ("registration_calculation/tmats.npy", "bkg_removal/outputs/coefs.npz",
                 "resampling/outputs/zpos_out.npy", "registration_transformation/outputs/tmats_cumul.npy",
                 "intensity_rescaling/outputs/histos_ref.npy", "destriping/outputs/cut_planes.png"):
        assert (tmp_path / "nproc1/process" / side).exists(), side


def test_a_bad_parameter_stops_before_any_output(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    (folder / "params.toml").write_text(PARAMS.replace("dz = 0.01", "dz = 0.0").replace('"Gabor"', '"Gabbor"'))
    from stack3d_core import ConfigError

    with pytest.raises(ConfigError) as info:
        Stack3d(folder).eval(show_pbar=False)
    paths = [i.path for i in info.value.issues]
    assert "resampling.dz" in paths and any(p.startswith("destriping.filters") for p in paths)
    assert not (folder / "process").exists()


def test_area_outside_the_image_is_refused_naming_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    make_project(folder)
    (folder / "params.toml").write_text(PARAMS.replace("area = [8, 120, 4, 92]", "area = [200, 300, 4, 92]"))
    with pytest.raises(StepError, match="area"):
        Stack3d(folder).eval(["cropping"], show_pbar=False)
    assert not (folder / "process/cropping").exists()
    assert np.load(folder / "ground_truth/clean.npy").shape == (24, 96, 128)
