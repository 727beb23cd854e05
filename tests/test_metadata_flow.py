"""Stack metadata (pixel size, z positions, instrument) flows through every step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stack3d_core import ConfigError, PluginHost, parse_config, run

from .conftest import make_stack, write_slices


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


def saved_meta(folder: Path, step: str) -> dict:
    return json.loads((folder / "process" / step / "outputs" / "stack_meta.json").read_text())


def test_pixel_size_override_and_z_flow_through_the_chain(tmp_path: Path, host: PluginHost) -> None:
    folder = tmp_path / "p"
    write_slices(folder, make_stack(n=6, rows=40, cols=56, dtype="uint16"), z_step=0.012)
    data = {"process_steps": ["cropping", "resampling", "cropping_final"],
            "input": {"pixel_size": [0.005, 0.006, 0.012]},
            "cropping": {"area": [0, 40, 0, 30]},
            "resampling": {"dz": 0.02},
            "cropping_final": {"area": [0, 20, 0, 20]}}
    run(parse_config(data, host, project_dir=folder), host=host)
    crop = saved_meta(folder, "cropping")
    assert crop["shape"] == [30, 40] and crop["pixel_size"] == [0.005, 0.006, 0.012]
    assert crop["z_positions"] == pytest.approx([0.012 * k for k in range(6)])
    assert crop["instrument"]["pixel_size_source"] == "[input]"
    res = saved_meta(folder, "resampling")
    assert res["z_positions"] == pytest.approx([0.0, 0.02, 0.04, 0.06])
    assert res["pixel_size"][:2] == [0.005, 0.006] and res["pixel_size"][2] == pytest.approx(0.02)
    final = saved_meta(folder, "cropping_final")  # read back from the resampled TIFFs + JSON
    assert final["shape"] == [20, 20] and final["z_positions"] == pytest.approx([0.0, 0.02, 0.04, 0.06])
    assert final["pixel_size"][2] == pytest.approx(0.02)


def test_bad_pixel_size_is_named(tmp_path: Path, host: PluginHost) -> None:
    with pytest.raises(ConfigError, match=r"input.pixel_size"):
        parse_config({"input": {"pixel_size": [0.01, -1]}}, host, project_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"input.pixel_size"):
        parse_config({"input": {"pixel_size": "5nm"}}, host, project_dir=tmp_path)


def test_a_damaged_meta_file_falls_back_to_the_files(tmp_path: Path, host: PluginHost) -> None:
    folder = tmp_path / "p"
    write_slices(folder, make_stack(n=3))
    config = parse_config({"process_steps": ["cropping", "cropping_final"]}, host, project_dir=folder)
    run(config, host=host, steps=["cropping"])
    (folder / "process/cropping/outputs/stack_meta.json").write_text("{not json")
    run(config, host=host, steps=["cropping_final"])
    assert saved_meta(folder, "cropping_final")["n"] == 3
    assert np.asarray(saved_meta(folder, "cropping_final")["shape"]).tolist() == [40, 56]
