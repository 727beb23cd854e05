"""Tests of the multi-page TIFF / BigTIFF writer (stack3d_io.multipage_tiff_writer)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core.stackio import StackMeta, SubsetReader
from stack3d_core.testing import check_writer
from stack3d_io import multipage_tiff_writer
from stack3d_io.multipage_tiff import MultipageTiffReader
from stack3d_io.multipage_tiff_writer import MultipageTiffWriter, resolution_tags
from stack3d_io.tiff_folder import TiffFolderReader

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
PIXEL = (0.00345, 0.005, 0.02)


def _stack(n: int, dtype: str, shape: tuple[int, int] = (9, 11), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal((n, *shape)) * 1000).astype(dtype)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=(n, *shape), endpoint=True).astype(dtype)


def _extras(i: int, compression: int | None = None) -> dict:
    return {"tiff_extratags": [(65000, 2, 9, f"<xml>{i}</xml>"[:8].encode() + b"\0", True)],
            "tiff_compression": compression, "tiff_byteorder": "<", "dat_header": object()}


def _write(path: Path, stack: np.ndarray, pixel=PIXEL, extras=_extras, **options) -> MultipageTiffWriter:
    meta = StackMeta(n=len(stack), shape=stack.shape[1:], dtype=stack.dtype.name, pixel_size=pixel)
    writer = MultipageTiffWriter(path, meta, [f"s{i}.tif" for i in range(len(stack))],
                                 MultipageTiffWriter.Options(**options))
    for i, image in enumerate(stack):
        writer.write(i, image, extras(i))
    writer.commit()
    return writer


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_round_trip(tmp_path: Path, dtype: str) -> None:
    stack = _stack(5, dtype)
    path = tmp_path / "out.tif"
    _write(path, stack)
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]
    assert MultipageTiffReader.can_read(path)
    reader = MultipageTiffReader(path)
    meta = reader.meta("images")
    assert (meta.n, meta.shape, meta.dtype) == (5, (9, 11), dtype)
    for i in range(5):
        image, extras = reader.read_with_extras("images", i)
        assert image.dtype == np.dtype(dtype) and np.array_equal(image, stack[i])
        assert extras["tiff_extratags"] == [(65000, 2, 9, f"<xml>{i}</xml>"[:8].encode() + b"\0", True)]
        assert extras["tiff_compression"] is None
        # 1e4 / 0.00345 = 200000000 / 69 pixels per cm, exactly
        assert extras["tiff_resolution"] == ((200000000, 69), (2000000, 1), 3)
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_bigtiff and len(tif.pages) == 5 and len(tif.series) == 1
        page = tif.pages[0]
        assert page.description == "" and "Software" not in page.tags
        num, den = page.tags["XResolution"].value
        assert 1e4 / (num / den) == pytest.approx(PIXEL[0], rel=1e-12)


def test_resolution_rules(tmp_path: Path) -> None:
    assert resolution_tags((0.01, 0.02, 0.05), "um") == ((1000000, 1), (500000, 1))
    assert resolution_tags((5.0, 5.0, 10.0), "nm") == ((2000000, 1), (2000000, 1))
    assert resolution_tags(None, "um") is None
    (num, den), _ = resolution_tags((1 / 3, 0.1, 0.1), "um")
    assert num < 2**32 and den < 2**32 and num / den == pytest.approx(3e4, rel=1e-9)
    stack = _stack(2, "uint8")
    carried = (((300, 1), (300, 1), 2))  # the input's own tags when the pixel size is unknown
    _write(tmp_path / "in.tif", stack, pixel=None, extras=lambda i: {"tiff_resolution": carried})
    assert MultipageTiffReader(tmp_path / "in.tif").extras("images", 1)["tiff_resolution"] == carried
    _write(tmp_path / "none.tif", stack, pixel=None, extras=lambda i: {})
    assert "tiff_resolution" not in MultipageTiffReader(tmp_path / "none.tif").extras("images", 0)


def test_compression_and_bigtiff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = _stack(3, "uint16")
    _write(tmp_path / "z.tif", stack, compression="zlib")
    _write(tmp_path / "first.tif", stack, extras=lambda i: _extras(i, 8 if i == 0 else None))
    for name in ("z.tif", "first.tif"):
        reader = MultipageTiffReader(tmp_path / name)
        assert reader.meta("images").n == 3 and np.array_equal(reader.read("images", 2), stack[2])
        assert reader.extras("images", 2)["tiff_compression"] == 8
    _write(tmp_path / "big.tif", stack, bigtiff="always")
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    assert np.array_equal(MultipageTiffReader(tmp_path / "big.tif").read("images", 1), stack[1])
    monkeypatch.setattr(multipage_tiff_writer, "_CLASSIC_LIMIT", 100)  # 'auto' past the limit
    _write(tmp_path / "auto.tif", stack)
    with tifffile.TiffFile(tmp_path / "auto.tif") as tif:
        assert tif.is_bigtiff
    with pytest.raises(ValueError, match="compression"):
        MultipageTiffWriter(tmp_path / "x.tif", StackMeta(n=1, shape=(2, 2), dtype="uint8"), ["a"],
                            MultipageTiffWriter.Options(compression="bogus"))


def test_parallel_write_from_spawned_processes(tmp_path: Path) -> None:
    stack = _stack(6, "uint16", shape=(32, 40))
    meta = StackMeta(n=6, shape=(32, 40), dtype="uint16", pixel_size=PIXEL)
    writer = MultipageTiffWriter(tmp_path / "out.tif", meta, [f"s{i}" for i in range(6)])
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(writer.write, i, stack[i], _extras(i)) for i in range(6)]:
            future.result()
    assert not (tmp_path / "out.tif").exists()
    writer.commit()
    reader = MultipageTiffReader(tmp_path / "out.tif")
    assert all(np.array_equal(reader.read("images", i), stack[i]) for i in range(6))


def test_abort_crash_and_missing_slices(tmp_path: Path) -> None:
    stack = _stack(3, "int16")
    old = tmp_path / "out.tif"
    _write(old, stack)
    before = old.read_bytes()
    meta = StackMeta(n=3, shape=(9, 11), dtype="int16")
    writer = MultipageTiffWriter(old, meta, ["a", "b", "c"])
    writer.write(0, stack[0], {})
    writer.abort()
    assert old.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["out.tif"]
    crashed = MultipageTiffWriter(tmp_path / "new.tif", meta, ["a", "b", "c"])
    for i in range(3):
        crashed.write(i, stack[i], {})
    del crashed
    assert not (tmp_path / "new.tif").exists()
    assert not [p for p in (tmp_path / ".new.tif.partial").iterdir() if p.suffix in (".tif", ".tiff")]
    holes = MultipageTiffWriter(tmp_path / "holes.tif", meta, ["a", "b", "c"])
    holes.write(2, stack[2], {})
    with pytest.raises(RuntimeError, match=r"2 of 3 slices were never written \(first: 0\)"):
        holes.commit()
    holes.abort()
    assert not (tmp_path / "holes.tif").exists() and not (tmp_path / ".holes.tif.partial").exists()
    with pytest.raises(ValueError, match=r"slice 1: image dtype uint8 != stack dtype int16"):
        MultipageTiffWriter(tmp_path / "d.tif", meta, ["a", "b", "c"]).write(1, stack[1].astype(np.uint8), {})
    _write(old, stack[:2])  # replaces the older result atomically
    assert MultipageTiffReader(old).meta("images").n == 2


def test_contract_pickle_and_registration(tmp_path: Path, stack3d_host) -> None:
    check_writer(MultipageTiffWriter)
    meta = StackMeta(n=2, shape=(3, 4), dtype="uint8")
    writer = MultipageTiffWriter(tmp_path / "a.tiff", meta, ["a", "b"])
    clone = pickle.loads(pickle.dumps(writer))
    clone.write(1, np.ones((3, 4), np.uint8), {})
    writer.write(0, np.zeros((3, 4), np.uint8), {})
    writer.commit()
    assert np.array_equal(MultipageTiffReader(tmp_path / "a.tiff").read("images", 1), np.ones((3, 4)))
    assert stack3d_host.writer_for(tmp_path / "x.tif") is MultipageTiffWriter
    assert stack3d_host.writer_for(tmp_path / "folder").__name__ == "TiffFolderWriter"


def test_real_shale_slices(tmp_path: Path) -> None:
    folder = REALDATA / "shale-serial-sem"
    if not folder.is_dir():
        pytest.skip(f"real test data not available: {folder}")
    source = SubsetReader(TiffFolderReader(folder, TiffFolderReader.Options(pixel_size=(0.01, 0.01, 0.02))), 0, 3)
    meta = source.meta(".")
    writer = MultipageTiffWriter(tmp_path / "shale.tif", meta, source.names("."))
    for i in range(3):
        writer.write(i, *source.read_with_extras(".", i))
    writer.commit()
    back = MultipageTiffReader(tmp_path / "shale.tif")
    assert (back.meta("images").n, back.meta("images").shape) == (3, (1104, 1720))
    for i in range(3):
        assert np.array_equal(back.read("images", i), source.read(".", i))
    assert back.extras("images", 0)["tiff_resolution"] == ((1000000, 1), (1000000, 1), 3)
