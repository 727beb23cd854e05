"""Tests of the TIFF-folder reader and writer (stack3d_io.tiff_folder)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta
from stack3d_io import plugin
from stack3d_io.multipage_tiff import MultipageTiffReader
from stack3d_io.tiff_folder import TiffFolderReader, TiffFolderWriter

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
REALDATA = SHARED / "realdata"

XML = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n'
    "<Fibics version='1.0'><Scan><Ux>0.01</Ux><Vy>0.01</Vy></Scan>"
    "<BeamInfo><item name='Ext I'>1.5 nA</item></BeamInfo></Fibics>"
)


def _slices(n: int, dtype: str, shape: tuple[int, int] = (12, 17), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    return rng.integers(0, hi, size=(n, *shape), endpoint=True).astype(dtype)


def _make_folder(
    folder: Path, stack: np.ndarray, names: list[str] | None = None, **kw
) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"slice_{i:04d}_z={0.01 * i:.4f}um.tif" for i in range(len(stack))]
    for name, img in zip(names, stack, strict=True):
        tifffile.imwrite(folder / name, img, photometric="minisblack", **kw)
    return names


def _copy(reader: TiffFolderReader, channel: str, dest: Path, **options) -> TiffFolderWriter:
    meta = reader.meta(channel)
    opts = TiffFolderWriter.Options(**options)
    writer = TiffFolderWriter(dest, meta, reader.names(channel), opts)
    for i in range(meta.n):
        writer.write(i, *reader.read_with_extras(channel, i))
    return writer


# -- reader ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_round_trip(tmp_path: Path, dtype: str) -> None:
    stack = _slices(4, dtype)
    names = _make_folder(tmp_path / "proj", stack)
    reader = TiffFolderReader(tmp_path / "proj")
    assert reader.channels() == (".",)
    meta = reader.meta(".")
    assert (meta.n, meta.shape, meta.dtype) == (4, (12, 17), dtype)
    for i in range(4):
        got = reader.read(".", i)
        assert got.dtype == np.dtype(dtype) and np.array_equal(got, stack[i])
    dest = tmp_path / "proj" / "process" / "cropping"
    _copy(reader, ".", dest).commit()
    assert sorted(p.name for p in dest.iterdir()) == names
    back = TiffFolderReader(dest)
    assert back.meta(".") == meta
    for i in range(4):
        assert np.array_equal(back.read(".", i), stack[i])
    # the project folder still reads as channel "." (process/ holds no slice directly)
    assert reader.channels() == (".",)


def test_names_sorted_and_filtered(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    stack = _slices(6, "uint8")
    names = ["b10.tif", "b2.tif", "a.TIF", "c.tiff", ".hidden.tif", "._b3.tif"]
    _make_folder(folder, stack, names)
    (folder / "notes.txt").write_text("x")
    (folder / "d.tif.tmp").write_bytes(b"x")
    (folder / "sub.tif").mkdir()
    reader = TiffFolderReader(folder)
    assert reader.names(".") == ("a.TIF", "b10.tif", "b2.tif", "c.tiff")  # lexicographic
    assert np.array_equal(reader.read(".", 1), stack[0])


def test_z_positions(tmp_path: Path) -> None:
    stack = _slices(3, "uint8")
    names = ["slice_0001_z=0.0100um.tif", "slice_0002_z=0.0200um.tif", "slice_0003_z=0.0350um.tif"]
    _make_folder(tmp_path / "a", stack, names)
    assert TiffFolderReader(tmp_path / "a").meta(".").z_positions == (0.01, 0.02, 0.035)
    # one name not matching: no z at all
    _make_folder(tmp_path / "b", stack, [*names[:2], "slice_0003.tif"])
    assert TiffFolderReader(tmp_path / "b").meta(".").z_positions is None
    # a custom pattern
    opts = TiffFolderReader.Options(z_pattern="img{slice_nb}_{z_coord}nm.tif", pixel_size=(2, 2, 3))
    _make_folder(tmp_path / "c", stack, ["img1_5.tif", "img2_10.5nm.tif", "img3_11nm.tif"])
    assert TiffFolderReader(tmp_path / "c", opts).meta(".").z_positions is None
    _make_folder(tmp_path / "d", stack, ["img1_5nm.tif", "img2_10.5nm.tif", "img3_11nm.tif"])
    meta = TiffFolderReader(tmp_path / "d", opts).meta(".")
    assert meta.z_positions == (5.0, 10.5, 11.0)
    assert meta.pixel_size == (2.0, 2.0, 3.0)
    assert TiffFolderReader.Options(pixel_size=(1, 0, 1)).validate()
    assert TiffFolderReader.Options().validate() == []


def test_channels(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    _make_folder(proj / "SE2", _slices(2, "uint8"))
    _make_folder(proj / "ESB", _slices(2, "uint8", seed=1))
    _make_folder(proj / ".hidden", _slices(1, "uint8"))
    (proj / "process" / "cropping").mkdir(parents=True)
    tifffile.imwrite(proj / "process" / "cropping" / "x.tif", np.zeros((2, 2), np.uint8))
    (proj / "params.toml").write_text("")
    reader = TiffFolderReader(proj)
    assert reader.channels() == ("ESB", "SE2")
    assert reader.meta("SE2").n == 2
    assert reader.describe("SE2", 1).endswith(str(Path("proj") / "SE2" / reader.names("SE2")[1]))
    assert TiffFolderReader.can_read(proj)
    assert not TiffFolderReader.can_read(proj / "params.toml")
    assert not TiffFolderReader.can_read(tmp_path / "missing")
    with pytest.raises(InputError, match="NOPE"):
        reader.names("NOPE")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        TiffFolderReader(tmp_path / "empty").channels()
    with pytest.raises(InputError, match="empty"):
        TiffFolderReader(tmp_path / "empty").names(".")
    assert not TiffFolderReader.can_read(tmp_path / "empty")


def test_corrupt_files(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    _make_folder(folder, _slices(3, "uint16"))
    names = TiffFolderReader(folder).names(".")
    (folder / names[1]).write_bytes(os.urandom(300))
    raw = (folder / names[2]).read_bytes()
    (folder / names[2]).write_bytes(raw[: len(raw) - 100])
    reader = TiffFolderReader(folder)
    reader.read(".", 0)
    for i in (1, 2):
        with pytest.raises(InputError) as info:
            reader.read_with_extras(".", i)
        assert names[i] in str(info.value)
        assert info.value.path == folder / names[i]
    # a corrupt first slice fails in meta, naming it
    (folder / names[0]).write_bytes(b"II*\x00" + b"\xff" * 10)
    with pytest.raises(InputError, match=names[0]):
        TiffFolderReader(folder).meta(".")


def test_truncated_compressed(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    _make_folder(folder, _slices(2, "uint16", shape=(64, 64)), compression="zlib")
    name = TiffFolderReader(folder).names(".")[1]
    raw = (folder / name).read_bytes()
    (folder / name).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=name):
        TiffFolderReader(folder).read(".", 1)


def test_inconsistent_slices(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    names = _make_folder(folder, _slices(3, "uint8"))
    tifffile.imwrite(folder / names[1], np.zeros((12, 18), np.uint8))
    tifffile.imwrite(folder / names[2], np.zeros((12, 17), np.uint16))
    reader = TiffFolderReader(folder)
    with pytest.raises(InputError, match=r"expected \(12, 17\), got \(12, 18\)") as info:
        reader.read(".", 1)
    assert names[1] in str(info.value)
    with pytest.raises(InputError, match="expected uint8, got uint16") as info:
        reader.read(".", 2)
    assert names[2] in str(info.value)
    tifffile.imwrite(folder / names[0], np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="2D"):
        TiffFolderReader(folder).meta(".")


# -- writer: tags, compression, bytes ----------------------------------------------------


@pytest.mark.parametrize("compression", [None, "zlib", "deflate"])
def test_private_tags_and_compression_carried(tmp_path: Path, compression: str | None) -> None:
    stack = _slices(2, "uint16", shape=(40, 30))
    extratags = [
        (51023, "s", 0, XML, True),
        (65000, "H", 3, (1, 2, 65535), True),  # numeric private tag
        (65001, "B", 4, b"\x00\x01\xfe\xff", True),
    ]
    folder = tmp_path / "in"
    _make_folder(folder, stack, compression=compression, extratags=extratags)
    reader = TiffFolderReader(folder)
    extras = reader.extras(".", 0)
    expected = {None: None, "zlib": 8, "deflate": 32946}[compression]
    assert extras["tiff_compression"] == expected
    assert {t[0] for t in extras["tiff_extratags"]} == {51023, 65000, 65001}
    dest = tmp_path / "out"
    _copy(reader, ".", dest).commit()
    for name, img in zip(reader.names("."), stack, strict=True):
        with tifffile.TiffFile(dest / name) as tif:
            page = tif.pages[0]
            assert int(page.compression) == (expected or 1)
            assert page.tags[51023].value == XML
            assert page.tags[65000].value == (1, 2, 65535)
            assert page.tags[65001].value == b"\x00\x01\xfe\xff"
            assert 305 not in page.tags and 306 not in page.tags and 270 not in page.tags
            assert np.array_equal(page.asarray(), img)
    assert TiffFolderReader(dest).extras(".", 0) == extras


def test_big_endian_input(tmp_path: Path) -> None:
    stack = _slices(2, "uint16")
    folder = tmp_path / "in"
    _make_folder(folder, stack, byteorder=">", extratags=[(65000, "I", 2, (7, 70000), True)])
    reader = TiffFolderReader(folder)
    assert reader.read(".", 0).dtype.isnative
    _copy(reader, ".", tmp_path / "out").commit()
    back = TiffFolderReader(tmp_path / "out")
    assert np.array_equal(back.read(".", 1), stack[1])
    with tifffile.TiffFile(tmp_path / "out" / back.names(".")[0]) as tif:
        assert tif.byteorder == ">"
        assert tif.pages[0].tags[65000].value == (7, 70000)


def test_forced_compression(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _make_folder(folder, _slices(2, "uint8", shape=(32, 32)), compression="zlib")
    reader = TiffFolderReader(folder)
    _copy(reader, ".", tmp_path / "plain", compression="none").commit()
    _copy(reader, ".", tmp_path / "lzma", compression="lzma").commit()
    assert TiffFolderReader(tmp_path / "plain").extras(".", 0)["tiff_compression"] is None
    assert TiffFolderReader(tmp_path / "lzma").extras(".", 0)["tiff_compression"] == 34925
    assert TiffFolderWriter.Options(compression="bogus").validate()
    with pytest.raises(ValueError, match="bogus"):
        TiffFolderWriter(tmp_path / "x", reader.meta("."), reader.names("."),
                         TiffFolderWriter.Options(compression="bogus"))


def test_byte_identical(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _make_folder(folder, _slices(1, "uint16"), compression="zlib",
                 extratags=[(51023, "s", 0, XML, True)])
    reader = TiffFolderReader(folder)
    _copy(reader, ".", tmp_path / "a").commit()
    os.utime(folder / reader.names(".")[0], (1e9, 1e9))
    _copy(reader, ".", tmp_path / "b").commit()
    name = reader.names(".")[0]
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_resolution(tmp_path: Path) -> None:
    img = _slices(1, "uint8")[0]
    meta = StackMeta(n=1, shape=img.shape, dtype="uint8", pixel_size=(0.005, 0.01, 0.02))
    w = TiffFolderWriter(tmp_path / "a", meta, ["s"])
    w.write(0, img, {})  # no resolution of its own: written from pixel_size, per centimetre
    w.write(0, img, {})  # rewriting an index is allowed
    w.commit()
    with tifffile.TiffFile(tmp_path / "a" / "s.tif") as tif:
        page = tif.pages[0]
        assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        assert page.tags[282].value == (2_000_000, 1)  # 1e4 / 0.005 µm
        assert page.tags[283].value == (1_000_000, 1)
    # the input's own resolution wins
    tifffile.imwrite(tmp_path / "in.tif", img, resolution=(64, 32), resolutionunit="INCH")
    folder = tmp_path / "in"
    folder.mkdir()
    os.replace(tmp_path / "in.tif", folder / "in.tif")
    extras = TiffFolderReader(folder).extras(".", 0)
    assert extras["tiff_resolution"] == ((64, 1), (32, 1), 2)
    w = TiffFolderWriter(tmp_path / "b", meta, ["s.tif"])
    w.write(0, img, extras)
    w.commit()
    with tifffile.TiffFile(tmp_path / "b" / "s.tif") as tif:
        assert tif.pages[0].resolution == (64.0, 32.0)
        assert tif.pages[0].resolutionunit == tifffile.RESUNIT.INCH


def test_write_checks(tmp_path: Path) -> None:
    meta = StackMeta(n=2, shape=(4, 5), dtype="uint16")
    w = TiffFolderWriter(tmp_path / "o", meta, ["a", "b.TIFF"])
    assert w.files == ("a.tif", "b.TIFF")
    with pytest.raises(ValueError, match="shape"):
        w.write(0, np.zeros((5, 4), np.uint16), {})
    with pytest.raises(ValueError, match="dtype"):
        w.write(0, np.zeros((4, 5), np.uint8), {})
    with pytest.raises(ValueError, match="names"):
        TiffFolderWriter(tmp_path / "p", meta, ["a"])
    with pytest.raises(ValueError, match="unique"):
        TiffFolderWriter(tmp_path / "p", meta, ["a", "a.tif"])
    with pytest.raises(ValueError, match="invalid"):
        TiffFolderWriter(tmp_path / "p", meta, ["a", "../b"])
    w.write(0, np.zeros((4, 5), np.uint16), {})
    with pytest.raises(RuntimeError, match="never written"):
        w.commit()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    assert TiffFolderWriter.can_write(tmp_path / "newfolder")
    assert not TiffFolderWriter.can_write(tmp_path / "big.zarr")


# -- writer: staging life cycle ----------------------------------------------------------


def test_staging_commit_abort(tmp_path: Path) -> None:
    img = _slices(1, "uint8")[0]
    meta = StackMeta(n=1, shape=img.shape, dtype="uint8")
    dest = tmp_path / "process" / "cropping" / "SE2"

    w = TiffFolderWriter(dest, meta, ["s0.tif"])
    w.write(0, img, {})
    assert not dest.exists()
    w.abort()
    assert not dest.exists()
    assert list((tmp_path / "process" / "cropping").iterdir()) == []

    # a leftover staging folder of a crashed run is cleared
    stale = dest.parent / ".SE2.partial"
    stale.mkdir()
    (stale / "junk.tif").write_bytes(b"x")
    w = TiffFolderWriter(dest, meta, ["s0.tif"])
    assert not (stale / "junk.tif").exists()
    w.write(0, img, {})
    assert not dest.exists()
    w.commit()
    assert [p.name for p in dest.iterdir()] == ["s0.tif"]

    # commit replaces an older result; non-slice entries (outputs/) are kept
    (dest / "outputs").mkdir()
    (dest / "outputs" / "stats.npy").write_bytes(b"1")
    (dest / "old_slice.tif").write_bytes(b"old")
    w = TiffFolderWriter(dest, meta, ["s1"])
    w.write(0, img, {})
    assert (dest / "old_slice.tif").exists()
    w.commit()
    assert sorted(p.name for p in dest.iterdir()) == ["outputs", "s1.tif"]
    assert (dest / "outputs" / "stats.npy").read_bytes() == b"1"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["SE2"]
    with pytest.raises(RuntimeError):
        w.write(0, img, {})


def test_pickle(tmp_path: Path) -> None:
    stack = _slices(3, "uint8")
    _make_folder(tmp_path / "p" / "SE2", stack)
    reader = TiffFolderReader(tmp_path / "p", TiffFolderReader.Options(pixel_size=(1, 1, 2)))
    reader.meta("SE2")  # fill the cache first
    r2 = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(r2.read("SE2", 2), stack[2])
    assert r2.meta("SE2") == reader.meta("SE2")
    writer = TiffFolderWriter(tmp_path / "out", reader.meta("SE2"), reader.names("SE2"))
    w2 = pickle.loads(pickle.dumps(writer))
    for i in range(3):
        w2.write(i, *r2.read_with_extras("SE2", i))
    writer.commit()
    assert TiffFolderReader(tmp_path / "out").names(".") == reader.names("SE2")


def test_concurrent_process_writes(tmp_path: Path) -> None:
    stack = _slices(6, "uint16")
    _make_folder(tmp_path / "in", stack, compression="zlib", extratags=[(51023, "s", 0, XML, True)])
    reader = TiffFolderReader(tmp_path / "in")
    writer = TiffFolderWriter(tmp_path / "out", reader.meta("."), reader.names("."))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        futures = [pool.submit(writer.write, i, *reader.read_with_extras(".", i)) for i in range(6)]
        for f in futures:
            f.result()
    assert not (tmp_path / "out").exists()
    writer.commit()
    back = TiffFolderReader(tmp_path / "out")
    assert back.names(".") == reader.names(".")
    for i in range(6):
        assert np.array_equal(back.read(".", i), stack[i])
        assert back.extras(".", i) == reader.extras(".", i)


def test_plugin_registers() -> None:
    assert TiffFolderReader in plugin.stack3d_register_readers()
    assert MultipageTiffReader in plugin.stack3d_register_readers()
    assert TiffFolderWriter in plugin.stack3d_register_writers()
    for cls in (TiffFolderReader, MultipageTiffReader, TiffFolderWriter):
        import attrs

        for field in attrs.fields(cls.Options):
            assert field.metadata["doc"] and "unit" in field.metadata


# -- real data ---------------------------------------------------------------------------


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not available: {path}")
    return path


def test_real_shale_folder(tmp_path: Path) -> None:
    folder = _need(REALDATA / "shale-serial-sem")
    reader = TiffFolderReader(folder)
    assert reader.channels() == (".",)
    names = reader.names(".")
    assert len(names) == 14 and names[0] == "shale_for_alignment00.tif"
    meta = reader.meta(".")
    assert (meta.shape, meta.dtype, meta.z_positions) == ((1104, 1720), "uint8", None)
    img, extras = reader.read_with_extras(".", 13)
    assert img.shape == (1104, 1720) and 1 <= img.min() and img.max() <= 250
    assert extras["tiff_byteorder"] == ">"  # ImageJ writes big-endian
    assert {t[0] for t in extras["tiff_extratags"]} == {50838, 50839}  # IJMetadata
    w = TiffFolderWriter(tmp_path / "out", meta.evolve(n=1), [names[13]])
    w.write(0, img, extras)
    w.commit()
    with tifffile.TiffFile(tmp_path / "out" / names[13]) as tif:
        assert np.array_equal(tif.pages[0].asarray(), img)
        # the ImageJ slice label survives (a PyStack3D-style name from the original stack)
        assert tif.pages[0].tags[50839].value == {"Labels": "slice_00609_z=6.0582um.tif"}


def test_real_zeiss_single_pages(tmp_path: Path) -> None:
    folder = _need(REALDATA / "zeiss-fei-sem-tiff")
    fei = folder / "FEI-Helios-Ebeam-16bits.tif"
    proj = tmp_path / "proj"
    proj.mkdir()
    os.symlink(fei, proj / "slice_0000_z=0.0000um.tif")
    reader = TiffFolderReader(proj)
    meta = reader.meta(".")
    assert (meta.shape, meta.dtype, meta.z_positions) == ((471, 512), "uint16", (0.0,))
    img, extras = reader.read_with_extras(".", 0)
    codes = {t[0] for t in extras["tiff_extratags"]}
    assert 34682 in codes and 34665 not in codes  # FEI metadata kept; Exif IFD pointer dropped
    _copy(reader, ".", tmp_path / "out").commit()
    with tifffile.TiffFile(tmp_path / "out" / "slice_0000_z=0.0000um.tif") as tif:
        assert tif.fei_metadata["Beam"]["HV"] == 5000
        assert np.array_equal(tif.pages[0].asarray(), img)
