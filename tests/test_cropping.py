"""cropping / cropping_final: PyStack3D's bottom-left ``area`` convention, clamping, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import PluginHost, parse_config, run
from stack3d_core.testing import run_step_on_arrays
from stack3d_steps.cropping import Cropping, CroppingFinal, CroppingParams, crop_indices

from .conftest import make_stack, write_slices


def pystack3d_crop(image: np.ndarray, area: list[int]) -> np.ndarray:
    """PyStack3D's documented rule (spec §1.7), for areas inside the image: the oracle."""
    xmin, xmax, ymin, ymax = area
    rows = image.shape[0]
    return image[rows - ymax : rows - ymin, xmin:xmax]


@pytest.mark.parametrize("area", [[10, 50, 5, 35], [0, 56, 0, 40], [0, 1, 0, 1], [55, 56, 39, 40], [3, 17, 22, 31]])
def test_crop_matches_pystack3d_convention(tmp_path: Path, area: list[int]) -> None:
    stack = make_stack(n=3, rows=40, cols=56)
    out, _, stats = run_step_on_arrays(Cropping(CroppingParams(area=tuple(area))), stack, workdir=tmp_path)
    for k in range(3):
        np.testing.assert_array_equal(out[k], pystack3d_crop(stack[k], area))
    assert stats.shape == (3, 3, 3)


def test_bottom_left_origin_by_example() -> None:
    # a 4x5 image; area [1, 3, 0, 1] = columns 1..2 of the bottom row
    image = np.arange(20).reshape(4, 5)
    (imin, imax, jmin, jmax), warnings = crop_indices((1, 3, 0, 1), image.shape)
    np.testing.assert_array_equal(image[imin:imax, jmin:jmax], [[16, 17]])
    assert warnings == []


def test_area_beyond_the_image_is_clamped_with_a_warning() -> None:
    bounds, warnings = crop_indices((10, 99999, 5, 99999), (40, 56))
    assert bounds == (0, 35, 10, 56)  # PyStack3D would wrap ymax > H to a negative index
    assert "clamped" in warnings[0]
    with pytest.raises(ValueError, match="outside the image"):
        crop_indices((60, 70, 0, 10), (40, 56))


def test_project_run_keeps_names_and_pixels(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    stack = make_stack(n=4, rows=40, cols=56, dtype="uint16")
    paths = write_slices(folder, stack, compression="zlib", extratags=[(51023, "s", 0, "<FibicsXML/>", True)])
    host = PluginHost()
    config = parse_config({"process_steps": ["cropping", "cropping_final"], "cropping": {"area": [10, 50, 5, 35]},
                           "cropping_final": {"area": [2, 30, 0, 20]}, "engine": {"keep_intermediates": True}},
                          host, project_dir=folder)
    run(config, host=host)
    out_names = sorted(p.name for p in (folder / "process/cropping").glob("*.tif"))
    assert out_names == [p.name for p in paths]
    for k, path in enumerate(paths):
        first = pystack3d_crop(stack[k], [10, 50, 5, 35])
        with tifffile.TiffFile(folder / "process/cropping" / path.name) as tif:
            np.testing.assert_array_equal(tif.pages[0].asarray(), first)
            assert tif.pages[0].tags[51023].value == "<FibicsXML/>"  # private tag carried
            assert tif.pages[0].compression == 8  # zlib/deflate carried
        final = tifffile.imread(folder / "process/cropping_final" / path.name)
        np.testing.assert_array_equal(final, pystack3d_crop(first, [2, 30, 0, 20]))
    log = (folder / "process/cropping/outputs/log.txt").read_text()
    assert "(4, 30, 40)" in log


def test_cropping_final_is_the_same_step_under_another_name() -> None:
    assert issubclass(CroppingFinal, Cropping) and CroppingFinal.name == "cropping_final"
