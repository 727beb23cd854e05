"""The step honours stack3d's contract; parameters are checked with their key; the plugin
is found through its entry point; the core never imports it."""

from __future__ import annotations

import importlib.metadata
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stack3d_core import ConfigError, PluginHost, StepKind, parse_config
from stack3d_core.testing import check_step

from sift_testkit import STEP, host_with_plugin
from stack3d_sift import SiftRegistration, SiftRegistrationParams
from stack3d_sift.step import SiftState


def test_contract() -> None:
    check_step(SiftRegistration)
    step = SiftRegistration()
    assert step.kind is StepKind.PAIRWISE and step.state_from == "first" and step.writes_images
    assert step.pair_offsets == (1, 2)
    assert SiftRegistration(SiftRegistrationParams(pair_offsets=(4, 1))).pair_offsets == (1, 4)


def test_the_state_sent_to_workers_is_lean() -> None:
    state = SiftState(np.tile(np.eye(3), (4, 1, 1)), (8, 9), (0.0, 0.0), 1, float("nan"),
                      cumulative=np.zeros((4, 3, 3)), report=object())  # type: ignore[arg-type]
    clone = pickle.loads(pickle.dumps(state))
    assert clone.report is None and clone.cumulative is None
    np.testing.assert_array_equal(clone.applied, state.applied)
    assert clone.shape == (8, 9) and np.isnan(clone.fill)


@pytest.mark.parametrize(("table", "key"), [
    ({"model": "affine", "min_samples": 2}, "min_samples"),
    ({"cdf_low": 0.9, "cdf_high": 0.1}, "cdf_low"),
    ({"sg_window": 50}, "sg_window"),
    ({"pair_offsets": [2, 3]}, "pair_offsets"),
    ({"model": "similarity"}, "model"),
    ({"canvas": "full"}, "canvas"),
    ({"lowe_ratio": 1.5}, "lowe_ratio"),
])
def test_bad_parameters_are_refused_with_their_key(tmp_path: Path, table: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config({"process_steps": [STEP], STEP: table}, host_with_plugin(), project_dir=tmp_path)


def test_a_toml_table_is_accepted(tmp_path: Path) -> None:
    config = parse_config({"process_steps": [STEP], STEP: {
        "model": "xscale_shift", "solver": "lsq", "matcher": "bf", "pair_offsets": [1, 2, 4], "canvas": "union",
        "preserve_scales": False, "subtract_linear_drift": True, "order": 3, "fill_value": 0.0}},
        host_with_plugin(), project_dir=tmp_path)
    params = config.steps[STEP].params
    assert params.pair_offsets == (1, 2, 4) and params.model == "xscale_shift" and params.fill_value == 0.0


def test_importing_stays_light_and_the_core_never_imports_the_plugin() -> None:
    code = ("import sys, stack3d_core, stack3d_steps.plugin, stack3d_io.plugin\n"
            "assert 'stack3d_sift' not in sys.modules\n"
            "import stack3d_sift, stack3d_sift.plugin\n"
            "heavy = [m for m in ('cv2', 'matplotlib', 'scipy') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_found_through_its_entry_point() -> None:
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="stack3d")}
    if "sift" not in names:
        pytest.skip("stack3d-sift is not installed (pip install plugins_contrib/stack3d-sift)")
    assert names["sift"] == "stack3d_sift.plugin"
    host = PluginHost()
    assert host.steps.entry(STEP).distribution == "stack3d-sift"
    assert host.steps.get(STEP) is SiftRegistration
