"""The step ``quality``: contract, values against the metric functions, outputs, parameters."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SPEC, params
from stack3d_quality import metrics as m
from stack3d_quality.step import Quality, QualityParams, channel_suffix

from stack3d_core import ConfigError, PluginHost, parse_config, run
from stack3d_core.testing import check_step, run_step_on_arrays
from stack3d_core.testing.synth import make_stack


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_contract() -> None:
    check_step(Quality)
    assert Quality.writes_images is False


def test_values_match_the_metric_functions(tmp_path: Path) -> None:
    volume = make_stack(SPEC).volume()[:5]
    step = Quality(QualityParams(frc_smooth=1))
    out, state, stats = run_step_on_arrays(step, volume, workdir=tmp_path)
    assert out.size == 0 and stats is None
    outputs = tmp_path / "quality" / "outputs"
    assert {p.name for p in outputs.iterdir()} >= {"quality.csv", "frc_curves.npz", "quality.png", "frc.png"}
    rows = read_csv(outputs / "quality.csv")
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["ncc"] == "nan" and rows[0]["snr_x"] != "nan"      # row 0: no pair, per-slice metrics
    a, b = volume[2].astype(float), volume[3].astype(float)
    assert float(rows[3]["ncc"]) == pytest.approx(m.ncc(a, b), rel=1e-6)
    assert float(rows[3]["snr_ncc"]) == pytest.approx(m.snr_from_ncc(m.ncc(a, b)), rel=1e-6)
    assert float(rows[3]["nsad"]) == pytest.approx(m.nsad(a, b), rel=1e-6)
    assert float(rows[3]["nmi"]) == pytest.approx(m.nmi(a, b), rel=1e-6)
    assert float(rows[3]["snr_y"]) == pytest.approx(m.single_image_snr(b).y, rel=1e-6)
    assert float(rows[0]["mean"]) == pytest.approx(volume[0].mean(), rel=1e-6)
    frc_px = m.frc_resolution(m.frc(a, b), ("1/7", "half_bit"))
    for key, spec in (("frc_1_7_px", "1/7"), ("frc_half_bit_px", "half_bit")):
        value = float(rows[3][key])
        assert (math.isnan(value) and math.isnan(frc_px[spec])) or value == pytest.approx(frc_px[spec], rel=1e-6)
    curves = np.load(outputs / "frc_curves.npz")
    assert curves["frc"].shape == (4, 48) and curves["pairs"].tolist()[0] == [0, 1]
    np.testing.assert_allclose(curves["frc"][2], m.frc(a, b).frc, rtol=1e-6)


def test_area_uses_the_bottom_left_convention_of_cropping(tmp_path: Path) -> None:
    volume = make_stack(SPEC).volume()[:3]
    area = (10, 70, 5, 55)                         # xmin, xmax, ymin, ymax; origin bottom-left
    run_step_on_arrays(Quality(QualityParams(area=area, metrics=("ncc", "snr"))), volume, workdir=tmp_path)
    rows = read_csv(tmp_path / "quality" / "outputs" / "quality.csv")
    h = volume.shape[1]
    roi = volume[:, h - 55 : h - 5, 10:70].astype(float)
    assert float(rows[2]["ncc"]) == pytest.approx(m.ncc(roi[1], roi[2]), rel=1e-6)
    assert float(rows[1]["mean"]) == pytest.approx(roi[1].mean(), rel=1e-6)
    assert "nmi" not in rows[0] and "dark_offset" not in rows[0] and "snr_r" in rows[0]


def test_runs_in_a_pipeline_with_physical_units_and_processes(project: tuple[Path, object], host: PluginHost) -> None:
    folder, _ = project
    config = parse_config(params(process_steps=["quality"], quality={"frc_thresholds": ["1/7", "0.5"]},
                                 input={"pixel_size": [0.004, 0.004]}, engine={"executor": "processes", "workers": 2}),
                          host, project_dir=folder)
    result = run(config, host=host)
    assert result.ran == ("quality",)
    rows = read_csv(folder / "process" / "quality" / "outputs" / "quality.csv")
    assert len(rows) == SPEC.n_slices
    assert float(rows[4]["z"]) == pytest.approx(4 * SPEC.dz_um)
    for row in rows[1:]:
        px, um = float(row["frc_t0_5_px"]), float(row["frc_t0_5_um"])
        assert px > 2 and um == pytest.approx(px * 0.004, rel=1e-6)
    assert not (folder / "process" / "quality" / "outputs" / "stats.npy").exists()   # no images written


def test_a_single_slice_gets_its_per_slice_metrics(project: tuple[Path, object], host: PluginHost) -> None:
    folder, _ = project
    config = parse_config(params(process_steps=["quality"], ind_min=3, ind_max=3, quality={}), host, project_dir=folder)
    run(config, host=host)
    rows = read_csv(folder / "process" / "quality" / "outputs" / "quality.csv")
    assert len(rows) == 1 and rows[0]["snr_y"] != "nan" and rows[0]["ncc"] == "nan"


def test_bad_parameters_are_refused_before_any_image_is_read(project: tuple[Path, object], host: PluginHost) -> None:
    folder, _ = project
    with pytest.raises(ConfigError) as info:
        parse_config(params(process_steps=["quality"], quality={"metrics": ["ncc", "ssim"], "frc_thresholds": ["2/7"],
                                                                "frc_window": "kaiser", "colour": 1}),
                     host, project_dir=folder)
    text = str(info.value)
    for key in ("quality.metrics", "quality.frc_thresholds", "quality.frc_window", "quality.colour"):
        assert key in text, text
    config = parse_config(params(process_steps=["quality"], quality={"area": [500, 600, 0, 10]}), host,
                          project_dir=folder)
    with pytest.raises(Exception, match="quality.area"):
        run(config, host=host)
    assert not (folder / "process" / "quality").exists()


def test_channel_suffix() -> None:
    assert channel_suffix(".") == ""
    assert channel_suffix("SE2") == "_SE2"
    assert channel_suffix("a/b c") == "_a_b_c"


def test_one_table_per_channel(tmp_path: Path, host: PluginHost) -> None:
    from conftest import write_synthetic_project

    folder = tmp_path / "two_channels"
    for channel in ("SE2", "InLens"):
        write_synthetic_project(folder / channel, SPEC, host)
    config = parse_config(params(channels=["SE2", "InLens"], process_steps=["cropping", "quality"],
                                 cropping={"area": [0, 90, 0, 90]},
                                 quality={"metrics": ["ncc"], "follow": ["cropping"], "observer_slices": 4}),
                          host, project_dir=folder)
    assert not run(config, host=host).warnings
    outputs = folder / "process" / "quality" / "outputs"
    for channel in ("SE2", "InLens"):
        assert len(read_csv(outputs / f"quality_{channel}.csv")) == SPEC.n_slices
        assert (outputs / f"quality_{channel}.png").is_file()
        observed = read_csv(folder / "process" / "cropping" / channel / "outputs" / "quality_cropping.csv")
        assert {r["stack"] for r in observed} == {"input", "output"}
