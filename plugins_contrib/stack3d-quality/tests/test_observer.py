"""The observer (hook ``stack3d_after_step``): configuration, outputs, and never failing the run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import params
from stack3d_quality.evaluate import sample_pairs

from stack3d_core import ConfigError, PluginHost, parse_config, run

REGISTRATION = {"registration_calculation": {"transformation": "TRANSLATION"},
                "registration_transformation": {"mode": "edge"}}
STEPS = ["registration_calculation", "registration_transformation"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def medians(rows: list[dict[str, str]], stack: str, column: str) -> float:
    values = [float(r[column]) for r in rows if r["stack"] == stack and r[column] != "nan"]
    return float(np.median(values))


def test_follows_registration_and_sees_it_improve_the_alignment(project: tuple[Path, object],
                                                               host: PluginHost) -> None:
    folder, _ = project
    config = parse_config(params(process_steps=STEPS, **REGISTRATION,
                                 quality={"follow": ["registration_transformation"], "observer_slices": 8,
                                          "area": [12, 84, 12, 84]}),
                          host, project_dir=folder)
    result = run(config, host=host)
    assert result.ran == tuple(STEPS) and not result.warnings
    outputs = folder / "process" / "registration_transformation" / "outputs"
    assert (outputs / "quality_registration_transformation.png").is_file()
    rows = read_csv(outputs / "quality_registration_transformation.csv")
    assert {r["stack"] for r in rows} == {"input", "output"}
    pairs = sample_pairs(10, 8)                       # 4 pairs, at most 8 slices read per stack
    assert pairs == [1, 4, 6, 9]
    out_rows = [r for r in rows if r["stack"] == "output"]
    assert sorted({int(r["index"]) for r in out_rows}) == sorted({j for i in pairs for j in (i - 1, i)})
    assert medians(rows, "output", "ncc") > medians(rows, "input", "ncc") + 0.02
    assert medians(rows, "output", "nsad") < medians(rows, "input", "nsad")
    assert not (folder / "process" / "quality").exists()                  # the step itself did not run
    assert not (folder / "process" / "registration_calculation" / "outputs" / "quality_registration_calculation.csv").exists()


def test_problems_become_warnings_and_never_fail_the_run(project: tuple[Path, object], host: PluginHost) -> None:
    folder, _ = project
    config = parse_config(params(process_steps=STEPS, **REGISTRATION,
                                 quality={"follow": ["registration_calculation", "registration_transformation", "destriping"],
                                          "area": [500, 600, 0, 10], "observer_input": False}),
                          host, project_dir=folder)
    result = run(config, host=host)                                       # the area lies outside every slice
    assert result.ran == tuple(STEPS)
    text = "\n".join(result.warnings)
    assert "['destriping'], not in process_steps" in text
    assert "'registration_calculation' writes no images" in text
    assert "could not evaluate the output of 'registration_transformation'" in text and "area" in text


def test_without_follow_nothing_is_evaluated(project: tuple[Path, object], host: PluginHost) -> None:
    folder, _ = project
    config = parse_config(params(process_steps=["cropping"], cropping={"area": [0, 90, 0, 90]}, quality={}),
                          host, project_dir=folder)
    result = run(config, host=host)
    assert not result.warnings
    assert not list((folder / "process").rglob("quality_*"))


def test_observer_settings_live_in_the_quality_table_which_the_core_validates(project: tuple[Path, object],
                                                                              host: PluginHost) -> None:
    """A separate ``[quality_observer]`` table is refused by the core (unknown table), so the
    observer reads ``[quality] follow``; unknown keys there are configuration errors."""
    folder, _ = project
    with pytest.raises(ConfigError, match=r"unknown table \[quality_observer\]"):
        parse_config(params(process_steps=["cropping"], cropping={}, quality_observer={"follow": ["cropping"]}),
                     host, project_dir=folder)
    with pytest.raises(ConfigError, match=r"quality\.folow.*follow"):
        parse_config(params(process_steps=["cropping"], cropping={}, quality={"folow": ["cropping"]}),
                     host, project_dir=folder)
    with pytest.raises(ConfigError, match=r"quality\.follow"):
        parse_config(params(process_steps=["cropping"], cropping={}, quality={"follow": ["Cropping!"]}),
                     host, project_dir=folder)


def test_sample_pairs_reads_at_most_the_requested_slices() -> None:
    assert sample_pairs(1, 16) == []
    assert sample_pairs(5, 16) == [1, 2, 3, 4]
    for n in (17, 100, 1000):
        pairs = sample_pairs(n, 16)
        assert len({j for i in pairs for j in (i - 1, i)}) <= 16
        assert pairs[0] == 1 and pairs[-1] == n - 1
