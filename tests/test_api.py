"""``Stack3d(input_name).eval(...)`` with PyStack3D's three entry modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import ConfigError, Stack3d, Stack3dError

from .conftest import PARAMS_CROP, make_stack


def test_project_folder(tiny_project: Path) -> None:
    stack = Stack3d(tiny_project)
    assert stack.project_dir == tiny_project.resolve() and stack.fname_toml.name == "params.toml"
    result = stack.eval(show_pbar=False)
    assert result.ran == ("cropping",)
    assert (tiny_project / "process/cropping/outputs/stats.npy").exists()


def test_toml_path_with_project_dir_key(tmp_path: Path, tiny_project: Path) -> None:
    params = tmp_path / "elsewhere.toml"
    params.write_text(f'project_dir = "{tiny_project}"\n' + PARAMS_CROP)
    result = Stack3d(params).eval("cropping", nproc=2, show_pbar=False)
    assert result.project_dir == tiny_project.resolve()
    assert len(list((tiny_project / "process/cropping").glob("*.tif"))) == 6


def test_multipage_tiff(tmp_path: Path) -> None:
    stack = make_stack(n=5, rows=20, cols=30)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    project = Stack3d(path)
    project.params["cropping"] = {"area": [0, 10, 0, 10]}
    project.eval(["cropping"], show_pbar=False)
    out = sorted((tmp_path / "process/cropping/images").glob("*.tif"))
    assert [p.name for p in out] == [f"img_{k:03d}.tif" for k in range(5)]
    np.testing.assert_array_equal(tifffile.imread(out[2]), stack[2][-10:, :10])
    assert not (tmp_path / "images").exists()  # no split copy of the input is written


def test_errors(tmp_path: Path, tiny_project: Path) -> None:
    with pytest.raises(Stack3dError, match="no .toml"):
        Stack3d(tmp_path)
    (tiny_project / "other.toml").write_text("")
    with pytest.raises(Stack3dError, match="several .toml"):
        Stack3d(tiny_project)
    (tiny_project / "other.toml").unlink()
    with pytest.raises(Stack3dError, match="nproc"):
        Stack3d(tiny_project).eval(nproc=0)
    with pytest.raises(ConfigError, match="twice"):
        Stack3d(tiny_project).eval(["cropping", "cropping"])
    with pytest.raises(Stack3dError, match="expected a project folder"):
        Stack3d(tmp_path / "x.png")
