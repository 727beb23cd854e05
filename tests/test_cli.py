"""The ``stack3d`` command: exit codes, messages, and each subcommand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core.cli import main

from .conftest import run_cli, tree_digest


def test_version_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and "stack3d" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["run"])  # missing argument
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_run_writes_process_folder(tiny_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tiny_project), "-q"]) == 0
    assert "done    cropping" in capsys.readouterr().out
    assert len(list((tiny_project / "process/cropping").glob("*.tif"))) == 6
    record = json.loads((tiny_project / "process/stack3d_run.json").read_text())
    assert record["history"][0]["step"] == "cropping"
    assert record["history"][0]["params"] == {"area": [10, 50, 5, 35]}
    assert record["runs"][-1]["versions"]["stack3d"]
    assert any(p["name"] == "steps" for p in record["runs"][-1]["plugins"])
    # run again: skipped by history
    assert main(["run", str(tiny_project / "params.toml"), "-q"]) == 0
    assert "skipped cropping" in capsys.readouterr().out


def test_three_mistakes_exit_1_and_nothing_written(tiny_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_project / "params.toml").write_text(
        'ind_min = "0"\nprocess_steps = ["cropping", "destripng"]\n[cropping]\narea = [10, 50, 5]\n'
    )
    before = tree_digest(tiny_project, ("*",))
    assert main(["run", str(tiny_project), "-q"]) == 1
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert "ind_min: expected an integer" in err
    assert "process_steps[1]: unknown step 'destripng'" in err
    assert "cropping.area" in err
    assert not (tiny_project / "process").exists()
    assert tree_digest(tiny_project, ("*",)) == before
    assert main(["validate", str(tiny_project)]) == 1


def test_validate_ok(tiny_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tiny_project / "params.toml")]) == 0
    assert "is valid" in capsys.readouterr().out
    assert not (tiny_project / "process").exists()


def test_corrupt_slice_exit_1_names_file(tiny_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = sorted(tiny_project.glob("*.tif"))[4]
    bad.write_bytes(b"II*\x00garbage" * 3)
    assert main(["run", str(tiny_project), "-q"]) == 1
    err = capsys.readouterr().err
    assert bad.name in err and "slice 4" in err


def test_steps_and_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["steps"]) == 0
    assert "cropping" in capsys.readouterr().out
    assert main(["steps", "--describe", "cropping"]) == 0
    out = capsys.readouterr().out
    assert "area" in out and "bottom-left" in out and "unit px" in out
    assert main(["steps", "--describe", "croping"]) == 1
    assert "did you mean 'cropping'" in capsys.readouterr().err


def test_plugins_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "steps" in out and "io" in out and "register_steps" in out


def test_init_then_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "new"
    assert main(["init", str(folder)]) == 0
    assert main(["validate", str(folder)]) == 0
    assert main(["init", str(folder)]) == 1  # never overwrites silently
    assert "--force" in capsys.readouterr().err


def test_synth_writes_project_and_truth(tmp_path: Path) -> None:
    folder = tmp_path / "synth"
    assert main(["synth", str(folder), "--slices", "6", "--shape", "32", "48", "--dtype", "uint16", "--seed", "3"]) == 0
    slices = sorted(folder.glob("slice_*.tif"))
    assert len(slices) == 6
    image = tifffile.imread(slices[0])
    assert image.shape == (32, 48) and image.dtype == np.uint16
    truth = json.loads((folder / "ground_truth/truth.json").read_text())
    assert truth["spec"]["seed"] == 3 and len(truth["slices"]["dx_px"]) == 6
    assert np.load(folder / "ground_truth/clean.npy").shape == (6, 32, 48)
    assert main(["validate", str(folder)]) == 0
    assert main(["synth", str(folder)]) == 1  # refuses to overwrite


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    proc = run_cli("demo", str(tmp_path / "demo"), "--slices", "8", "--shape", "64", "64", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Errors against the clean ground truth" in proc.stdout
    report = json.loads((tmp_path / "demo/report.json").read_text())
    assert "cropping" in report["steps"]
    assert (tmp_path / "demo/report.png").stat().st_size > 1000


def test_missing_project_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(empty)]) == 1
    assert "no .toml" in capsys.readouterr().err


def test_relative_paths_from_the_working_folder(tiny_project: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tiny_project.parent)
    assert main(["validate", "project/params.toml"]) == 0
    assert f"project folder {tiny_project.resolve()}" in capsys.readouterr().out
    assert main(["run", "project", "-q"]) == 0
    assert (tiny_project / "process/cropping").is_dir()
    assert main(["synth", "rel_synth", "--slices", "3", "--shape", "16", "16"]) == 0
    assert main(["run", "rel_synth/params.toml", "-q"]) == 0
    assert (tiny_project.parent / "rel_synth/process/cropping").is_dir()


def test_init_project_runs_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented template runs as written on a synthetic stack (every installed step)."""
    folder = tmp_path / "p"
    assert main(["synth", str(folder), "--slices", "6", "--shape", "48", "64"]) == 0
    (folder / "params.toml").unlink()
    assert main(["init", str(folder)]) == 0
    text = (folder / "params.toml").read_text().replace("# area =", "area = [0, 99999, 0, 99999]")
    (folder / "params.toml").write_text(text)
    assert main(["run", str(folder), "-q"]) == 0, capsys.readouterr().err
