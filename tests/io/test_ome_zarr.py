"""Tests of the OME-Zarr reader and writer (stack3d_io.ome_zarr)."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta, SubsetReader
from stack3d_core.testing import check_reader, check_writer
from stack3d_io.ome_zarr import OmeZarrReader, OmeZarrWriter
from stack3d_io.tiff_folder import TiffFolderReader

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
PIXEL = (0.00345, 0.005, 0.0123457)  # x, y, z in µm
INSTRUMENT = {"microscope": "Zeiss Crossbeam 550", "eht_kv": 1.5, "detectors": ["SE2", "ESB"], "n": np.int64(3)}


def _stack(n: int, dtype: str, shape: tuple[int, int] = (9, 11), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal((n, *shape)) * 1000).astype(dtype)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=(n, *shape), endpoint=True).astype(dtype)


def _meta(stack: np.ndarray, **changes) -> StackMeta:
    fields = dict(n=len(stack), shape=stack.shape[1:], dtype=stack.dtype.name, pixel_size=PIXEL,
                  z_positions=tuple(0.1 + 0.0125 * i for i in range(len(stack))), instrument=INSTRUMENT)
    fields.update(changes)
    return StackMeta(**fields)


def _write(path: Path, stack: np.ndarray, meta: StackMeta | None = None, **options) -> OmeZarrWriter:
    meta = meta or _meta(stack)
    writer = OmeZarrWriter(path, meta, [f"slice_{i:03d}_z={i}um.tif" for i in range(len(stack))],
                           OmeZarrWriter.Options(**options))
    for i, image in enumerate(stack):
        writer.write(i, image, {})
    writer.commit()
    return writer


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_round_trip(tmp_path: Path, dtype: str) -> None:
    stack = _stack(4, dtype)
    stack[2] = 0  # an all-zero slice still gets its chunk
    path = tmp_path / "out.ome.zarr"
    _write(path, stack)
    assert sorted(os.listdir(tmp_path)) == ["out.ome.zarr"]
    assert OmeZarrReader.can_read(path)
    reader = OmeZarrReader(path)
    assert reader.channels() == (".",)
    assert reader.names(".") == tuple(f"slice_{i:03d}_z={i}um.tif" for i in range(4))
    meta = reader.meta(".")
    assert (meta.n, meta.shape, meta.dtype, meta.unit) == (4, (9, 11), dtype, "um")
    assert meta.pixel_size == PIXEL
    assert meta.z_positions == _meta(stack).z_positions
    assert meta.instrument == {"microscope": "Zeiss Crossbeam 550", "eht_kv": 1.5, "detectors": ["SE2", "ESB"], "n": 3}
    for i in range(4):
        image = reader.read(".", i)
        assert image.dtype == np.dtype(dtype) and np.array_equal(image, stack[i])
    assert (path / "s0" / "c" / "2" / "0" / "0").is_file()


def test_ngff_metadata_read_with_zarr(tmp_path: Path) -> None:
    stack = _stack(3, "uint16")
    path = tmp_path / "img.ome.zarr"
    _write(path, stack)
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert ms["name"] == "img"
    assert ms["axes"] == [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    (dataset,) = ms["datasets"]
    assert dataset["path"] == "s0"
    assert dataset["coordinateTransformations"] == [
        {"type": "scale", "scale": [PIXEL[2], PIXEL[1], PIXEL[0]]},  # z, y, x: exact
        {"type": "translation", "translation": [0.1, 0.0, 0.0]},
    ]
    assert "version" not in ms  # NGFF 0.5 keeps the version under "ome" only
    arr = group["s0"]
    assert isinstance(arr, zarr.Array)
    assert (arr.shape, arr.chunks, arr.dtype) == ((3, 9, 11), (1, 9, 11), np.dtype("uint16"))
    assert arr.metadata.dimension_names == ("z", "y", "x")
    assert [c.to_dict()["name"] for c in arr.compressors] == ["zstd"]
    assert np.array_equal(arr[:], stack)
    info = group.attrs["stack3d"]
    assert info["complete"] is True and info["one_chunk_per_slice"] is True and info["dtype"] == "uint16"


def test_units_unknown_pixel_size_and_codecs(tmp_path: Path) -> None:
    stack = _stack(2, "int16")
    nm = _meta(stack, pixel_size=(3.45, 5.0, 8.0), unit="nm", z_positions=(100.0, 108.0))
    _write(tmp_path / "nm.zarr", stack, nm)
    meta = OmeZarrReader(tmp_path / "nm.zarr").meta(".")
    assert meta.pixel_size == (0.00345, 0.005, 0.008) and meta.z_positions == (0.1, 0.108)
    _write(tmp_path / "none.zarr", stack, _meta(stack, pixel_size=None, z_positions=None, instrument={}))
    group = json.loads((tmp_path / "none.zarr" / "zarr.json").read_text())
    ms = group["attributes"]["ome"]["multiscales"][0]
    assert all("unit" not in a for a in ms["axes"])
    assert ms["datasets"][0]["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    none = OmeZarrReader(tmp_path / "none.zarr").meta(".")
    assert (none.pixel_size, none.z_positions, none.instrument) == (None, None, {})
    for options in ({"compression": "blosc", "level": 5}, {"compression": "none"}):
        _write(tmp_path / "c.zarr", stack, **options)
        assert np.array_equal(OmeZarrReader(tmp_path / "c.zarr").read(".", 1), stack[1])
    with pytest.raises(ValueError, match="zstd levels"):
        OmeZarrWriter(tmp_path / "x.zarr", _meta(stack), ["a", "b"], OmeZarrWriter.Options(level=30))


def test_parallel_write_from_spawned_processes(tmp_path: Path) -> None:
    stack = _stack(6, "uint16", shape=(32, 40))
    writer = OmeZarrWriter(tmp_path / "out.ome.zarr", _meta(stack), [f"s{i}.tif" for i in range(6)])
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(writer.write, i, stack[i], {}) for i in range(6)]:
            future.result()
    assert not (tmp_path / "out.ome.zarr").exists()
    writer.commit()
    reader = OmeZarrReader(tmp_path / "out.ome.zarr")
    assert all(np.array_equal(reader.read(".", i), stack[i]) for i in range(6))


def test_abort_crash_and_missing_slices(tmp_path: Path) -> None:
    stack = _stack(3, "uint8")
    old = tmp_path / "out.ome.zarr"
    _write(old, stack)
    writer = OmeZarrWriter(old, _meta(stack), ["a", "b", "c"])
    writer.write(0, stack[0] // 2, {})
    writer.abort()
    assert sorted(os.listdir(tmp_path)) == ["out.ome.zarr"]
    assert np.array_equal(OmeZarrReader(old).read(".", 0), stack[0])
    # a crash before commit leaves only the hidden staging group, which is refused
    crashed = OmeZarrWriter(tmp_path / "new.ome.zarr", _meta(stack), ["a", "b", "c"])
    for i in range(3):
        crashed.write(i, stack[i], {})
    del crashed
    assert not (tmp_path / "new.ome.zarr").exists()
    with pytest.raises(InputError, match=r"\.new\.ome\.zarr\.partial.*never committed"):
        OmeZarrReader(tmp_path / ".new.ome.zarr.partial").meta(".")
    holes = OmeZarrWriter(tmp_path / "holes.zarr", _meta(stack), ["a", "b", "c"])
    holes.write(1, stack[1], {})
    with pytest.raises(RuntimeError, match=r"2 of 3 slices were never written \(first: 0\)"):
        holes.commit()
    holes.abort()
    assert not (tmp_path / "holes.zarr").exists() and not (tmp_path / ".holes.zarr.partial").exists()
    _write(old, stack[:2])  # replaces the older result
    assert OmeZarrReader(old).meta(".").n == 2
    assert sorted(os.listdir(tmp_path)) == [".new.ome.zarr.partial", "out.ome.zarr"]


def test_broken_images(tmp_path: Path) -> None:
    stack = _stack(3, "uint16")
    path = tmp_path / "img.ome.zarr"
    _write(path, stack)
    chunk = path / "s0" / "c" / "1" / "0" / "0"
    # a deleted chunk
    broken = tmp_path / "deleted.ome.zarr"
    shutil.copytree(path, broken)
    (broken / "s0" / "c" / "1" / "0" / "0").unlink()
    reader = OmeZarrReader(broken)
    assert np.array_equal(reader.read(".", 0), stack[0])
    with pytest.raises(InputError, match=r"deleted\.ome\.zarr/s0/c/1/0/0: chunk of slice 1 is missing"):
        reader.read(".", 1)
    filled = OmeZarrReader(broken, OmeZarrReader.Options(missing_chunks="fill"))
    assert not filled.read(".", 1).any()
    # a corrupt and a truncated chunk
    for name, content in (("corrupt", os.urandom(64)), ("cut", chunk.read_bytes()[:-9])):
        bad = tmp_path / f"{name}.ome.zarr"
        shutil.copytree(path, bad)
        (bad / "s0" / "c" / "1" / "0" / "0").write_bytes(content)
        with pytest.raises(InputError, match=rf"{name}\.ome\.zarr/s0: slice 1: cannot decode"):
            OmeZarrReader(bad).read(".", 1)
    # missing metadata files
    no_group = tmp_path / "nogroup.ome.zarr"
    shutil.copytree(path, no_group)
    (no_group / "zarr.json").unlink()
    with pytest.raises(InputError, match=r"nogroup\.ome\.zarr: .*zarr\.json"):
        OmeZarrReader(no_group).channels()
    with pytest.raises(InputError, match=r"nogroup\.ome\.zarr: not a zarr group"):
        OmeZarrReader(no_group).meta(".")
    assert not OmeZarrReader.can_read(no_group)
    no_array = tmp_path / "noarray.ome.zarr"
    shutil.copytree(path, no_array)
    (no_array / "s0" / "zarr.json").unlink()
    with pytest.raises(InputError, match=r"noarray\.ome\.zarr/s0: zarr array metadata missing"):
        OmeZarrReader(no_array).meta(".")
    (no_array / "zarr.json").write_text("{not json")
    with pytest.raises(InputError, match=r"noarray\.ome\.zarr/zarr\.json: unreadable zarr metadata"):
        OmeZarrReader(no_array).meta(".")
    with pytest.raises(InputError, match=r"nothere\.zarr: .*does not exist"):
        OmeZarrReader(tmp_path / "nothere.zarr").meta(".")
    assert chunk.is_file() and np.array_equal(OmeZarrReader(path).read(".", 1), stack[1])  # source untouched


def test_foreign_ngff_images(tmp_path: Path) -> None:
    """NGFF 0.5 with t/c axes of length 1 in nanometres, tiled chunks; NGFF 0.4 (Zarr v2)."""
    data = _stack(4, "uint16", shape=(6, 8))
    root = zarr.create_group(str(tmp_path / "v05.zarr"), zarr_format=3, attributes={"ome": {"version": "0.5", "multiscales": [{
        "axes": [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}]
        + [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 8.0, 4.0, 4.0]}]},
                     {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 8.0, 8.0, 8.0]}]}],
    }]}})
    arr = root.create_array("0", shape=(1, 1, 4, 6, 8), chunks=(1, 1, 2, 4, 4), dtype="uint16", fill_value=0)
    arr[0, 0] = data
    half = root.create_array("1", shape=(1, 1, 4, 3, 4), chunks=(1, 1, 4, 3, 4), dtype="uint16", fill_value=0)
    half[0, 0] = data[:, ::2, ::2]
    reader = OmeZarrReader(tmp_path / "v05.zarr")
    meta = reader.meta(".")
    assert (meta.n, meta.shape, meta.pixel_size, meta.z_positions) == (4, (6, 8), (0.004, 0.004, 0.008), None)
    assert reader.names(".") == ("slice_0000.tif", "slice_0001.tif", "slice_0002.tif", "slice_0003.tif")
    assert all(np.array_equal(reader.read(".", i), data[i]) for i in range(4))
    level1 = OmeZarrReader(tmp_path / "v05.zarr", OmeZarrReader.Options(level=1))
    assert level1.meta(".").pixel_size == (0.008, 0.008, 0.008)
    assert np.array_equal(level1.read(".", 3), data[3, ::2, ::2])
    data[1, 4:, 4:] = 0  # a chunk never written: the fill value, unless asked to refuse
    arr[0, 0, 1] = data[1]
    assert np.array_equal(reader.read(".", 1), data[1])
    (tmp_path / "v05.zarr" / "0" / "c" / "0" / "0" / "0" / "1" / "1").unlink(missing_ok=True)
    strict = OmeZarrReader(tmp_path / "v05.zarr", OmeZarrReader.Options(missing_chunks="error"))
    with pytest.raises(InputError, match="chunk of slice 1 is missing"):
        strict.read(".", 1)
    # NGFF 0.4: Zarr v2, multiscales at the top level of .zattrs, big-endian data
    v04 = zarr.create_group(str(tmp_path / "v04.zarr"), zarr_format=2)
    v04.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
                                 "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.02, 0.01, 0.01]}]}]}]
    a04 = v04.create_array("0", shape=(4, 6, 8), chunks=(1, 6, 8), dtype=">u2", fill_value=0)
    a04[:] = data
    old = OmeZarrReader(tmp_path / "v04.zarr")
    assert old.meta(".").pixel_size == (0.01, 0.01, 0.02)
    image = old.read(".", 2)
    assert image.dtype.isnative and np.array_equal(image, data[2])
    # a folder of images: one channel per image group
    coll = tmp_path / "collection"
    _write(coll / "SE2", data)
    _write(coll / "ESB", data[::-1])
    (coll / "notes").mkdir()
    multi = OmeZarrReader(coll)
    assert OmeZarrReader.can_read(coll) and multi.channels() == ("ESB", "SE2")
    assert np.array_equal(multi.read("ESB", 0), data[3])
    with pytest.raises(InputError, match=r"notes: not a zarr group"):
        OmeZarrReader(coll / "notes").channels()
    bad_axes = zarr.create_group(str(tmp_path / "yx.zarr"), zarr_format=3, attributes={"ome": {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}], "datasets": [{"path": "0"}]}]}})
    bad_axes.create_array("0", shape=(6, 8), dtype="uint8")
    with pytest.raises(InputError, match=r"yx\.zarr: axes \['y', 'x'\]"):
        OmeZarrReader(tmp_path / "yx.zarr").meta(".")


def test_contract_pickle_and_registration(tmp_path: Path, stack3d_host) -> None:
    check_reader(OmeZarrReader)
    check_writer(OmeZarrWriter)
    stack = _stack(3, "uint16")
    _write(tmp_path / "a.ome.zarr", stack)
    reader = OmeZarrReader(tmp_path / "a.ome.zarr")
    reader.meta(".")
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.meta(".") == reader.meta(".") and np.array_equal(clone.read(".", 2), stack[2])
    assert reader.describe(".", 2).endswith("a.ome.zarr/s0 [slice 2]")
    writer = OmeZarrWriter(tmp_path / "b.ome.zarr", reader.meta("."), reader.names("."))
    assert pickle.loads(pickle.dumps(writer)).staging == writer.staging
    writer.abort()
    assert stack3d_host.writer_for(tmp_path / "x.ome.zarr") is OmeZarrWriter
    assert stack3d_host.writer_for(tmp_path / "a.ome.zarr") is OmeZarrWriter  # an existing folder
    assert stack3d_host.reader_for(tmp_path / "a.ome.zarr") is OmeZarrReader


def test_real_shale_slices(tmp_path: Path) -> None:
    folder = REALDATA / "shale-serial-sem"
    if not folder.is_dir():
        pytest.skip(f"real test data not available: {folder}")
    source = SubsetReader(TiffFolderReader(folder, TiffFolderReader.Options(pixel_size=(0.01, 0.01, 0.02))), 0, 3)
    meta = source.meta(".")
    writer = OmeZarrWriter(tmp_path / "shale.ome.zarr", meta, source.names("."))
    for i in range(3):
        writer.write(i, source.read(".", i), {})
    writer.commit()
    back = OmeZarrReader(tmp_path / "shale.ome.zarr")
    assert back.names(".") == ("shale_for_alignment00.tif", "shale_for_alignment01.tif", "shale_for_alignment02.tif")
    assert back.meta(".").pixel_size == (0.01, 0.01, 0.02) and back.meta(".").dtype == "uint8"
    for i in range(3):
        assert np.array_equal(back.read(".", i), source.read(".", i))
    chunks = sum(f.stat().st_size for f in (tmp_path / "shale.ome.zarr" / "s0" / "c").rglob("*") if f.is_file())
    assert chunks < 3 * 1104 * 1720  # zstd compresses even this noisy uint8 data
