"""Tests of the MRC reader and writer (stack3d_io.mrc)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta, SubsetReader
from stack3d_core.testing import check_reader, check_writer
from stack3d_io.mrc import MrcReader, MrcWriter
from stack3d_io.tiff_folder import TiffFolderReader

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
PIXEL = (0.00345, 0.005, 0.0123457)  # µm: 34.5, 50, 123.457 Å


def _stack(n: int, dtype: str, shape: tuple[int, int] = (9, 11), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal((n, *shape)) * 1000).astype(dtype)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=(n, *shape), endpoint=True).astype(dtype)


def _write(path: Path, stack: np.ndarray, pixel=PIXEL, unit: str = "um", **options) -> MrcWriter:
    meta = StackMeta(n=len(stack), shape=stack.shape[1:], dtype=stack.dtype.name, pixel_size=pixel, unit=unit)
    writer = MrcWriter(path, meta, [f"s{i}.tif" for i in range(len(stack))], MrcWriter.Options(**options))
    for i, image in enumerate(stack):
        writer.write(i, image, {})
    writer.commit()
    return writer


@pytest.mark.parametrize(
    ("dtype", "mode"),
    [("uint8", 6), ("uint16", 6), ("int16", 1), ("float32", 2), ("int8", 1), ("float16", 2)],
)
def test_round_trip(tmp_path: Path, dtype: str, mode: int) -> None:
    stack = _stack(4, dtype)
    path = tmp_path / "out.mrc"
    _write(path, stack)
    assert sorted(os.listdir(tmp_path)) == ["out.mrc"]  # staging removed
    assert MrcReader.can_read(path)
    reader = MrcReader(path)
    assert reader.channels() == (".",)
    assert reader.names(".") == ("slice_0000.tif", "slice_0001.tif", "slice_0002.tif", "slice_0003.tif")
    meta = reader.meta(".")
    assert (meta.n, meta.shape, meta.dtype, meta.unit, meta.z_positions) == (4, (9, 11), dtype, "um", None)
    assert meta.pixel_size == PIXEL  # exact, µm
    for i in range(4):
        image = reader.read(".", i)
        assert image.dtype == np.dtype(dtype) and np.array_equal(image, stack[i])
    with mrcfile.open(path, permissive=False) as mrc:  # what other software sees
        assert int(mrc.header.mode) == mode
        assert tuple(float(v) for v in mrc.voxel_size.tolist()) == pytest.approx((34.5, 50.0, 123.457), rel=1e-6)
        assert mrc.data.shape == (4, 9, 11)
        assert np.array_equal(mrc.data, stack.astype(mrc.data.dtype))
        data = mrc.data.astype(np.float64)
        assert float(mrc.header.dmin) == pytest.approx(data.min(), rel=1e-6)
        assert float(mrc.header.dmax) == pytest.approx(data.max(), rel=1e-6)
        assert float(mrc.header.dmean) == pytest.approx(data.mean(), rel=1e-5, abs=1e-3)
        assert float(mrc.header.rms) == pytest.approx(data.std(), rel=1e-5)
        assert mrc.get_labels() == [f"stack3d dtype={dtype} state=complete"]
        assert int(mrc.header.ispg) == 1 and int(mrc.header.nversion) == 20141
    assert mrcfile.validate(str(path), print_file=open(os.devnull, "w"))  # noqa: SIM115


def test_uint8_is_never_mode_0(tmp_path: Path) -> None:
    stack = np.full((2, 3, 4), 200, np.uint8)
    _write(tmp_path / "u8.mrc", stack)
    with mrcfile.open(tmp_path / "u8.mrc") as mrc:
        assert int(mrc.header.mode) == 6 and mrc.data.dtype == np.uint16 and int(mrc.data.max()) == 200
    raw = MrcReader(tmp_path / "u8.mrc", MrcReader.Options(restore_dtype=False))
    assert raw.meta(".").dtype == "uint16" and raw.read(".", 0).dtype == np.uint16
    with mrcfile.mmap(tmp_path / "u8.mrc", mode="r+") as mrc:  # edited by another program
        mrc.data[1, 0, 0] = 300
    reader = MrcReader(tmp_path / "u8.mrc")
    assert np.array_equal(reader.read(".", 0), stack[0])
    with pytest.raises(InputError, match=r"u8\.mrc.*slice 1.*300.*restore_dtype"):
        reader.read(".", 1)


def test_voxel_size_units_and_unknown(tmp_path: Path) -> None:
    stack = _stack(2, "uint16")
    _write(tmp_path / "nm.mrc", stack, pixel=(3.45, 5.0, 8.0), unit="nm")
    assert MrcReader(tmp_path / "nm.mrc").meta(".").pixel_size == (0.00345, 0.005, 0.008)
    with mrcfile.open(tmp_path / "nm.mrc", header_only=True) as mrc:
        assert mrc.voxel_size.tolist() == pytest.approx((34.5, 50.0, 80.0))
    _write(tmp_path / "none.mrc", stack, pixel=None)
    assert MrcReader(tmp_path / "none.mrc").meta(".").pixel_size is None
    override = MrcReader(tmp_path / "none.mrc", MrcReader.Options(pixel_size=(1.0, 1.0, 2.0)))
    assert override.meta(".").pixel_size == (1.0, 1.0, 2.0)
    for pixel in [(0.01, 0.01, 0.02), (0.0048828125, 0.0048828125, 0.007), (1.2345, 2.5, 0.3)]:
        _write(tmp_path / "p.mrc", stack, pixel=pixel)
        assert MrcReader(tmp_path / "p.mrc").meta(".").pixel_size == pixel


def test_dtype_policy(tmp_path: Path) -> None:
    stack = _stack(2, "float64")
    meta = StackMeta(n=2, shape=(9, 11), dtype="float64")
    with pytest.raises(ValueError, match=r"out\.mrc.*float64.*dtype_policy"):
        MrcWriter(tmp_path / "out.mrc", meta, ["a", "b"])
    assert not (tmp_path / ".out.mrc.partial").exists()
    _write(tmp_path / "out.mrc", stack, dtype_policy="float32")
    reader = MrcReader(tmp_path / "out.mrc")
    assert reader.meta(".").dtype == "float32"
    assert np.array_equal(reader.read(".", 1), stack[1].astype(np.float32))
    with pytest.raises(ValueError, match="bool"):
        MrcWriter(tmp_path / "b.mrc", StackMeta(n=1, shape=(2, 2), dtype="bool"), ["a"])


def test_header_stats_not_computed(tmp_path: Path) -> None:
    _write(tmp_path / "out.mrc", _stack(2, "int16"), header_stats=False)
    with mrcfile.open(tmp_path / "out.mrc", header_only=True) as mrc:
        h = mrc.header
        assert h.dmax < h.dmin and h.dmean < min(h.dmin, h.dmax) and h.rms < 0


def test_parallel_write_from_spawned_processes(tmp_path: Path) -> None:
    stack = _stack(6, "uint16", shape=(32, 40))
    meta = StackMeta(n=6, shape=(32, 40), dtype="uint16", pixel_size=PIXEL)
    writer = MrcWriter(tmp_path / "out.mrc", meta, [f"s{i}" for i in range(6)])
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(writer.write, i, stack[i], {}) for i in range(6)]:
            future.result()
    assert not (tmp_path / "out.mrc").exists()
    writer.commit()
    reader = MrcReader(tmp_path / "out.mrc")
    assert all(np.array_equal(reader.read(".", i), stack[i]) for i in range(6))
    with mrcfile.open(tmp_path / "out.mrc") as mrc:
        assert float(mrc.header.dmax) == stack.max() and float(mrc.header.dmin) == stack.min()


def test_abort_crash_and_missing_slices(tmp_path: Path) -> None:
    stack = _stack(3, "int16")
    old = tmp_path / "out.mrc"
    _write(old, stack)
    before = old.read_bytes()
    meta = StackMeta(n=3, shape=(9, 11), dtype="int16")
    writer = MrcWriter(old, meta, ["a", "b", "c"])
    writer.write(0, stack[0] + 1, {})
    writer.abort()
    assert old.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["out.mrc"]
    # a crash before commit: only the hidden staging folder, refused by the reader
    crashed = MrcWriter(tmp_path / "new.mrc", meta, ["a", "b", "c"])
    for i in range(3):
        crashed.write(i, stack[i], {})
    del crashed
    assert not (tmp_path / "new.mrc").exists()
    staged = tmp_path / ".new.mrc.partial" / "new.mrc"
    with pytest.raises(InputError, match=r"new\.mrc.*never committed"):
        MrcReader(staged).meta(".")
    # commit refuses a stack with holes; nothing is published
    holes = MrcWriter(tmp_path / "holes.mrc", meta, ["a", "b", "c"])
    holes.write(0, stack[0], {})
    with pytest.raises(RuntimeError, match="2 of 3 slices were never written"):
        holes.commit()
    holes.abort()
    assert not (tmp_path / "holes.mrc").exists() and not (tmp_path / ".holes.mrc.partial").exists()
    # replacing an older result
    _write(old, stack[:2] * 2)
    assert MrcReader(old).meta(".").n == 2


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    path = tmp_path / "good.mrc"
    _write(path, _stack(3, "uint16"))
    raw = path.read_bytes()
    cases = {
        "cut.mrc": (raw[:-100], r"truncated MRC file: 100 bytes missing"),
        "short.mrc": (raw[:500], r"500 bytes, the header alone needs 1024"),
        "junk.mrc": (os.urandom(4096), r"not a readable MRC file"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=rf"{name.replace('.', '[.]')}: .*{message}"):
            MrcReader(tmp_path / name).meta(".")
        assert (tmp_path / name).read_bytes() == content  # never modified
    assert not MrcReader.can_read(tmp_path / "junk.mrc")
    with pytest.raises(InputError, match=r"missing\.mrc: file not found"):
        MrcReader(tmp_path / "missing.mrc").meta(".")
    # the file shrinks after the header was read: the read says how much is missing
    reader = MrcReader(tmp_path / "later.mrc")
    (tmp_path / "later.mrc").write_bytes(raw)
    reader.meta(".")
    (tmp_path / "later.mrc").write_bytes(raw[:-10])
    with pytest.raises(InputError, match=r"later\.mrc.*10 bytes missing"):
        reader.read(".", 2)
    with mrcfile.new(tmp_path / "complex.mrc", np.zeros((2, 3, 3), np.complex64)):
        pass
    with pytest.raises(InputError, match=r"complex\.mrc: unsupported MRC mode 4"):
        MrcReader(tmp_path / "complex.mrc").meta(".")
    with mrcfile.new(tmp_path / "axes.mrc", np.zeros((2, 3, 3), np.int16)) as mrc:
        mrc.header.mapc, mrc.header.mapr = 2, 1
    with pytest.raises(InputError, match=r"axes\.mrc: unsupported axis order"):
        MrcReader(tmp_path / "axes.mrc").meta(".")
    with pytest.raises(InputError, match="SE2"):
        MrcReader(path).names("SE2")


def test_foreign_files(tmp_path: Path) -> None:
    signed = np.array([[[-5, 100], [127, -128]]], np.int8)
    with mrcfile.new(tmp_path / "mode0.mrc", signed) as mrc:
        mrc.voxel_size = 20.0
    reader = MrcReader(tmp_path / "mode0.mrc")
    assert reader.meta(".").dtype == "int8" and np.array_equal(reader.read(".", 0), signed[0])
    assert reader.meta(".").pixel_size == (0.002, 0.002, 0.002)
    unsigned = MrcReader(tmp_path / "mode0.mrc", MrcReader.Options(mode0="unsigned"))
    assert np.array_equal(unsigned.read(".", 0), signed[0].view(np.uint8))
    with mrcfile.mmap(tmp_path / "mode0.mrc", mode="r+") as mrc:  # IMOD: stamp set, "signed" bit clear
        extra = bytearray(bytes(mrc.header.extra2))
        extra[40:48] = np.array([1146047817, 0], "<i4").tobytes()
        mrc.header.extra2 = bytes(extra)
    assert MrcReader(tmp_path / "mode0.mrc").meta(".").dtype == "uint8"
    # an extended header, a big-endian file and a single 2D image
    data = _stack(2, "int16")
    with mrcfile.new(tmp_path / "ext.mrc", data) as mrc:
        mrc.set_extended_header(np.zeros(16, np.int32))
    with mrcfile.open(tmp_path / "ext.mrc", header_only=True) as mrc:
        assert int(mrc.header.nsymbt) == 64
    assert np.array_equal(MrcReader(tmp_path / "ext.mrc").read(".", 1), data[1])
    with mrcfile.new(tmp_path / "big.mrc", data.astype(">i2")):
        pass
    image = MrcReader(tmp_path / "big.mrc").read(".", 1)
    assert image.dtype.isnative and np.array_equal(image, data[1])
    with mrcfile.new(tmp_path / "one.mrc", data[0]):
        pass
    one = MrcReader(tmp_path / "one.mrc")
    assert one.meta(".").n == 1 and np.array_equal(one.read(".", 0), data[0])


def test_contract_pickle_and_registration(tmp_path: Path, stack3d_host) -> None:
    check_reader(MrcReader)
    check_writer(MrcWriter)
    stack = _stack(3, "uint16")
    _write(tmp_path / "a.mrc", stack)
    reader = MrcReader(tmp_path / "a.mrc", MrcReader.Options(mode0="signed"))
    reader.meta(".")
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.meta(".") == reader.meta(".") and np.array_equal(clone.read(".", 2), stack[2])
    assert "a.mrc [slice 2]" in reader.describe(".", 2)
    writer = MrcWriter(tmp_path / "b.mrc", reader.meta("."), reader.names("."))
    assert pickle.loads(pickle.dumps(writer)).file == writer.file
    writer.abort()
    assert stack3d_host.writer_for(tmp_path / "x.mrc") is MrcWriter
    assert stack3d_host.reader_for(tmp_path / "a.mrc") is MrcReader


def test_real_shale_slices(tmp_path: Path) -> None:
    folder = REALDATA / "shale-serial-sem"
    if not folder.is_dir():
        pytest.skip(f"real test data not available: {folder}")
    source = SubsetReader(TiffFolderReader(folder, TiffFolderReader.Options(pixel_size=(0.01, 0.01, 0.02))), 0, 3)
    meta = source.meta(".")
    assert (meta.n, meta.shape, meta.dtype) == (3, (1104, 1720), "uint8")
    writer = MrcWriter(tmp_path / "shale.mrc", meta, source.names("."))
    for i in range(3):
        writer.write(i, source.read(".", i), {})
    writer.commit()
    assert (tmp_path / "shale.mrc").stat().st_size == 1024 + 3 * 1104 * 1720 * 2
    back = MrcReader(tmp_path / "shale.mrc")
    assert back.meta(".").pixel_size == (0.01, 0.01, 0.02) and back.meta(".").dtype == "uint8"
    for i in range(3):
        assert np.array_equal(back.read(".", i), source.read(".", i))
    with mrcfile.open(tmp_path / "shale.mrc", header_only=True) as mrc:
        assert mrc.voxel_size.tolist() == pytest.approx((100.0, 100.0, 200.0))
        assert (float(mrc.header.dmin), float(mrc.header.dmax)) == (1.0, 250.0)
