"""Formats end to end: a .dat folder through the pipeline to MRC and OME-Zarr outputs (read
back with mrcfile and zarr themselves), and `stack3d convert` round trips between formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stack3d_core import PluginHost, parse_config, run
from stack3d_core.cli import main
from stack3d_io.janelia_dat import write_dat

from .conftest import SHARED, make_stack, write_slices

PIXEL_NM = 4.0


def dat_folder(folder: Path, n: int = 5) -> dict[str, np.ndarray]:
    """A FIB-SEM run as .dat files: two int16 detector channels, 4 nm pixels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    stacks = {"A": rng.integers(-3000, 3000, (n, 40, 56)).astype(np.int16),
              "B": rng.integers(-3000, 3000, (n, 40, 56)).astype(np.int16)}
    for k in range(n):
        write_dat(folder / f"Run_24-12-16_15{k:02d}17_0-0-0.dat", {c: s[k] for c, s in stacks.items()},
                  {"PixelSize": PIXEL_NM})
    return stacks


@pytest.mark.parametrize("writer, suffix", [("mrc", ".mrc"), ("ome_zarr", ".ome.zarr")])
def test_dat_folder_through_the_pipeline_to_mrc_and_ome_zarr(tmp_path: Path, writer: str, suffix: str) -> None:
    raw = tmp_path / "raw"
    stacks = dat_folder(raw)
    project = tmp_path / "project"
    project.mkdir()
    host = PluginHost()
    data = {"channels": ["A", "B"], "process_steps": ["cropping"], "cropping": {"area": [6, 50, 4, 36]},
            "input": {"reader": "dat", "path": str(raw)},
            "output": {"writer": writer, "path": f"result{suffix}"}}
    run(parse_config(data, host, project_dir=project), host=host)
    for channel, stack in stacks.items():
        expected = stack[:, 40 - 36 : 40 - 4, 6:50]
        out = project / f"result_{channel}{suffix}" if writer == "mrc" else None
        if writer == "mrc":
            import mrcfile

            with mrcfile.open(out, permissive=False) as mrc:
                np.testing.assert_array_equal(mrc.data, expected)
                assert mrc.voxel_size.x == pytest.approx(PIXEL_NM * 10, rel=1e-5)  # Å
                assert mrc.header.mode == 1
        else:
            import zarr

            group_path = project / f"result_{channel}.ome.zarr"
            group = zarr.open_group(group_path, mode="r")
            ome = group.attrs["ome"]
            assert ome["version"] == "0.5"
            scale = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
            assert scale[1:] == pytest.approx([PIXEL_NM / 1000, PIXEL_NM / 1000])
            assert [a["unit"] for a in ome["multiscales"][0]["axes"]] == ["micrometer"] * 3
            np.testing.assert_array_equal(group["s0"][:], expected)


def test_real_dat_frame_converts_to_mrc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = SHARED / "realdata" / "jeiss-dat-gemini500"
    if not frame.exists():
        pytest.skip(f"real data not found at {frame} (../shared beside the repository)")
    assert main(["info", str(frame)]) == 0
    info = capsys.readouterr().out
    assert "1000 rows x 1000 columns, int16" in info and "channel 'A'" in info and "channel 'B'" in info
    assert main(["convert", str(frame), str(tmp_path / "gemini.mrc"), "--channel", "A", "-q"]) == 0
    import mrcfile

    with mrcfile.open(tmp_path / "gemini.mrc") as mrc:
        assert mrc.data.shape == (1, 1000, 1000)
        assert int(mrc.data.min()) == -6537 and int(mrc.data.max()) == -1946
        assert mrc.voxel_size.x == pytest.approx(20.0, rel=1e-4)  # 2.0 nm = 20 Å


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8"])
def test_convert_round_trip_tiff_mrc_ome_zarr_tiff(tmp_path: Path, dtype: str) -> None:
    source = tmp_path / "tiffs"
    stack = make_stack(n=4, rows=24, cols=30, dtype=dtype, seed=7)
    write_slices(source, stack)
    chain = [source, tmp_path / "a.mrc", tmp_path / "b.ome.zarr", tmp_path / "c.tif", tmp_path / "back"]
    for src, dst in zip(chain, chain[1:], strict=False):
        assert main(["convert", str(src), str(dst), "--pixel-size", "0.005", "0.005", "0.01", "-q"]) == 0, (src, dst)
    from stack3d_io.tiff_folder import TiffFolderReader

    back = TiffFolderReader(chain[-1])
    meta = back.meta(".")
    assert meta.dtype == dtype
    np.testing.assert_array_equal(np.stack([back.read(".", k) for k in range(meta.n)]), stack)
    assert meta.pixel_size[:2] == pytest.approx((0.005, 0.005))


def test_convert_refuses_to_overwrite_and_names_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "tiffs"
    write_slices(source, make_stack(n=2))
    assert main(["convert", str(source), str(tmp_path / "x.mrc"), "-q"]) == 0
    assert main(["convert", str(source), str(tmp_path / "x.mrc"), "-q"]) == 1
    assert "--force" in capsys.readouterr().err
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"\x00" * 300)
    assert main(["convert", str(bad), str(tmp_path / "y"), "--reader", "mrc", "-q"]) == 1
    assert "bad.mrc" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nothing_here")]) == 1


def test_info_of_a_synthetic_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "s"), "--slices", "4", "--shape", "16", "24"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "4 slices of 16 rows x 24 columns, uint8" in out
    assert "pixel size: x 0.01, y 0.01" in out
    truth = json.loads((tmp_path / "s/ground_truth/truth.json").read_text())
    assert f"{truth['slices']['z_um'][-1]:.4f}" in out


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["serial", "dask"])
def test_ome_zarr_as_the_intermediate_store(tmp_path: Path, executor: str) -> None:
    """[engine] intermediate = "ome_zarr": process/<step>/<channel> are OME-Zarr images (one chunk
    per slice, written concurrently by the workers), with the same pixels as TIFF folders."""
    import zarr

    finals = {}
    for intermediate in ("tiff_folder", "ome_zarr"):
        folder = tmp_path / intermediate
        for ch, offset in (("SE2", 0), ("ESB", 7)):
            write_slices(folder / ch, make_stack(n=5, rows=40, cols=56, dtype="uint16") + offset)
        host = PluginHost()
        data = {"channels": ["SE2", "ESB"], "process_steps": ["cropping", "intensity_rescaling", "cropping_final"],
                "cropping": {"area": [2, 50, 2, 36]}, "cropping_final": {"area": [0, 30, 0, 20]},
                "intensity_rescaling": {"filter_size": -1}, "engine": {"intermediate": intermediate, "keep_intermediates": True}}
        run(parse_config(data, host, project_dir=folder), host=host, executor=executor, workers=2)
        reader = host.readers.get(intermediate)(folder / "process" / "cropping_final")
        finals[intermediate] = np.stack([reader.read("ESB", k) for k in range(reader.meta("ESB").n)])
        if intermediate == "ome_zarr":
            group = zarr.open_group(folder / "process" / "intensity_rescaling" / "SE2", mode="r")
            assert group["s0"].shape == (5, 34, 48) and group["s0"].chunks == (1, 34, 48)
            assert (folder / "process" / "intensity_rescaling" / "SE2" / "outputs" / "stats.npy").exists()
    np.testing.assert_array_equal(finals["ome_zarr"], finals["tiff_folder"])


def test_intermediate_must_read_and_write(tmp_path: Path) -> None:
    from stack3d_core import ConfigError

    with pytest.raises(ConfigError, match="engine.intermediate"):
        parse_config({"engine": {"intermediate": "dat_folder"}}, PluginHost(), project_dir=tmp_path)
