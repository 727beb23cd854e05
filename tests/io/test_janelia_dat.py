"""Tests of the Janelia FIB-SEM .dat reader and writer (stack3d_io.janelia_dat)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import PluginHost, parse_config, run
from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta
from stack3d_core.testing import check_reader, check_writer
from stack3d_io import plugin
from stack3d_io._dat_fields import FIELDS, fields_for
from stack3d_io._dat_files import electron_counts, parse_dat_name
from stack3d_io._dat_header import HEADER_SIZE, MAGIC, decode_header, encode_header, layout_of
from stack3d_io.janelia_dat import DatReader, DatReaderOptions, DatWriter, write_dat

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
GEMINI = REALDATA / "jeiss-dat-gemini500" / "Gemini500-7029_24-12-16_151317_0-0-0.dat"
HEADERS = REALDATA / "jeiss-dat-headers"
ANA = HEADERS / "FIBdeSEMAna_21-12-26_005024_0-0-0.header"
MERLIN = HEADERS / "Merlin-6281_19-08-09_120426_0-0-0.header"
V9_TRUNCATED = HEADERS / "v9_header_with_truncated_pixels.dat"
REAL_HEADERS = [ANA, MERLIN, V9_TRUNCATED, GEMINI]

needs_realdata = pytest.mark.skipif(
    not GEMINI.is_file() or not ANA.is_file(),
    reason=f"real .dat files not found under {REALDATA} (the shared/ folder beside the repository)",
)


def _planes(dtype: str, shape=(6, 9), channels="AB", seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    return {c: rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype) for c in channels}


def _folder(tmp: Path, n: int, dtype: str = "int16", **fields) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """n two-channel slices named so that name order != time order."""
    tmp.mkdir(parents=True, exist_ok=True)
    slices = []
    for i in range(n):
        planes = _planes(dtype, seed=i)
        # prefix z.., y.., x..: alphabetical order is the reverse of the acquisition order
        write_dat(tmp / f"{chr(ord('z') - i)}_24-01-0{i + 1}_120000_0-0-0.dat", planes, {"PixelSize": 4.0, **fields})
        slices.append(planes)
    return tmp, slices


# -- contract ------------------------------------------------------------------------------


def test_contract_and_registration() -> None:
    check_reader(DatReader)
    check_writer(DatWriter)
    assert DatReader in plugin.stack3d_register_readers()
    assert DatWriter in plugin.stack3d_register_writers()
    host = PluginHost()
    assert host.readers.get("dat") is DatReader and host.writers.get("dat") is DatWriter


def test_field_table_has_no_overlaps_and_covers_every_version() -> None:
    for version in range(1, 10):
        fields = fields_for(version)
        names = [f.name for f in fields]
        assert len(names) == len(set(names)), version
        max_channels = 2 if version == 1 else 4
        for chan_num in range(1, max_channels + 1):
            spans = sorted((f.offset, f.offset + f.nbytes(chan_num), f.name) for f in fields)
            for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
                assert end <= start, f"v{version}: {a} overlaps {b}"
            assert spans[-1][1] <= HEADER_SIZE
        for core in (
            "FileMagicNum",
            "FileVersion",
            "ChanNum",
            "EightBit",
            "Scaling",
            "XResolution",
            "YResolution",
            "PixelSize",
            "EHT",
            "AI1",
            "FileLength",
        ):
            assert core in names, (version, core)
    assert {f.first for f in FIELDS} | {f.last for f in FIELDS} <= set(range(1, 10))
    v9 = {f.name: f for f in fields_for(9)}
    assert (v9["FirstX"].offset, v9["SampleID"].offset, v9["MachineID"].offset) == (70, 155, 800)
    assert {f.name: f.dtype for f in fields_for(2)}["PixelSize"] == ">f8"
    assert {f.name: f.offset for f in fields_for(3)}["PixelSize"] == 464


# -- real files ------------------------------------------------------------------------------


@needs_realdata
def test_real_gemini_frame() -> None:
    for path in (GEMINI, GEMINI.parent):
        assert DatReader.can_read(path)
        reader = DatReader(path)
        assert reader.channels() == ("A", "B")
        assert reader.names("A") == (GEMINI.stem,)
        meta = reader.meta("A")
        assert (meta.n, meta.shape, meta.dtype, meta.unit, meta.z_positions) == (1, (1000, 1000), "int16", "um", None)
        assert meta.pixel_size[0] == pytest.approx(0.002, abs=1e-7) and np.isnan(meta.pixel_size[2])
        ins = meta.instrument
        assert ins["machine_id"] == "Jeiss1/Gemini500-7029"
        assert ins["eht_kv"] == 0.9 and ins["scan_rate_hz"] == 100000.0
        assert ins["pixel_size_nm"] == pytest.approx(2.0, abs=1e-4)
        assert ins["detectors"] == {"A": "InLens", "B": "ESB @ 400 V"} and ins["detector"] == "InLens"
        assert ins["file_version"] == 9 and ins["sample_id"] == "Sn-on-C" and ins["sw_date"] == "11/15/2024"
        assert ins["timestamp"] == "2024-12-16T15:13:17" and ins["tile"] == "0-0-0"
        assert ins["dat_header"]["FileLength"] == 1_000_001_024  # wrong in the file, not used
        a, b = reader.read("A", 0), reader.read("B", 0)
        assert a.dtype == np.int16 and a.shape == (1000, 1000)
        assert (int(a.min()), int(a.max())) == (-6537, -1946)  # SOURCE.md
        corr = np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1]
        assert corr > 0.95  # interleaved channels, not planar
        assert not np.array_equal(a, b) and reader.meta("B").instrument["detector"] == "ESB @ 400 V"
        raw = np.frombuffer(GEMINI.read_bytes(), ">i2", offset=1024).reshape(1000, 1000, 2)
        np.testing.assert_array_equal(b, raw[:, :, 1])
    scaled = DatReader(GEMINI, DatReaderOptions(scaled=True))
    assert scaled.meta("A").dtype == "float32"
    k0, k1, k2, k3 = scaled.meta("A").instrument["scaling"]
    assert (k0, k3) == (1e6, 1.0) and k1 == pytest.approx(-6160.65, abs=0.01)
    expected = ((a.astype(np.float64) - k1) * k2).astype(np.float32)
    np.testing.assert_array_equal(scaled.read("A", 0), expected)
    counts = electron_counts(a, (k0, k1, k2, k3), 1e5)
    assert float(counts.max()) == pytest.approx((-1946 - k1) * k2 * 10 / 0.1, rel=1e-5)


@needs_realdata
@pytest.mark.parametrize(
    ("path", "version", "cols", "rows", "text"),
    [
        (ANA, 8, 18214, 14464, {"SWdate": "21/11/2021", "MachineID": "Jeiss/FIBdeSEMAna", "DetA": "InLens"}),
        (MERLIN, 8, 15000, 10000, {"SWdate": "08/08/2019", "MachineID": "Jeiss6/Merlin-6281"}),
        (V9_TRUNCATED, 9, 8688, 3500, {"SampleID": "Z0720-07m_BR_Sec24", "MachineID": "Jeiss7/Merlin-6282"}),
    ],
)
def test_real_headers_parse(path: Path, version: int, cols: int, rows: int, text: dict) -> None:
    fields = decode_header(path.read_bytes()[:HEADER_SIZE], path)
    assert (fields["FileMagicNum"], fields["FileVersion"]) == (MAGIC, version)
    assert (fields["XResolution"], fields["YResolution"], fields["ChanNum"], fields["EightBit"]) == (cols, rows, 2, 0)
    for key, value in text.items():
        assert fields[key] == value
    assert fields["DetB"] == "ESB @ 600 V" and fields["EHT"] == 1.2
    layout = layout_of(fields, path)
    assert layout.channels == ("A", "B") and layout.payload_bytes == cols * rows * 4
    meta = DatReader(path).meta("B")  # a header-only file still gives the metadata
    assert (meta.shape, meta.dtype) == ((rows, cols), "int16")
    if path is MERLIN:
        assert meta.pixel_size[0] == pytest.approx(0.008, rel=1e-4)
        assert meta.instrument["sample_id"] == "Larva1120"  # before v9: Notes up to the first comma
    if path is V9_TRUNCATED:
        assert fields["FileLength"] == 121_633_024 == HEADER_SIZE + layout.payload_bytes


@needs_realdata
@pytest.mark.parametrize("path", REAL_HEADERS, ids=lambda p: p.name)
def test_real_headers_round_trip_byte_for_byte(path: Path) -> None:
    original = path.read_bytes()[:HEADER_SIZE]
    fields = decode_header(original, path)
    assert encode_header(fields, base=original) == original
    assert encode_header(fields) == original  # from the fields alone: every byte is a field's
    assert encode_header({}, base=original) == original


@needs_realdata
def test_real_truncated_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        DatReader(V9_TRUNCATED).read("A", 0)
    message = str(err.value)
    assert V9_TRUNCATED.name in message and "121630976 bytes missing" in message
    with pytest.warns(UserWarning, match="121630976 bytes missing"):
        image = DatReader(V9_TRUNCATED, DatReaderOptions(fill_truncated=True)).read("B", 0)
    raw = np.frombuffer(V9_TRUNCATED.read_bytes(), ">i2", offset=1024).reshape(-1, 2)
    assert image.shape == (3500, 8688) and image.dtype == np.int16
    np.testing.assert_array_equal(image.ravel()[: len(raw)], raw[:, 1])
    assert not image.ravel()[len(raw) :].any()
    with pytest.raises(InputError, match=f"{ANA.name}: truncated: {18214 * 14464 * 4} bytes missing"):
        DatReader(ANA).read("A", 0)  # header only
    # a synthetic file cut in the middle of a pixel: whole pixels kept, the rest 0
    path = write_dat(tmp_path / "t_24-01-01_000000_0-0-0.dat", _planes("int16"))
    data = path.read_bytes()
    path.write_bytes(data[: HEADER_SIZE + 4 * 10 + 3])
    with pytest.raises(InputError, match=f"{path.name}.*{len(data) - HEADER_SIZE - 43} bytes missing"):
        DatReader(path).read("A", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = DatReader(path, DatReaderOptions(fill_truncated=True)).read("B", 0)
    assert b.ravel()[:10].any() and not b.ravel()[10:].any()


# -- synthetic files ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int16", "uint8"])
def test_multi_slice_folder_sorted_by_time(tmp_path: Path, dtype: str) -> None:
    folder, slices = _folder(tmp_path / "acq", 3, dtype)
    (folder / "notes.txt").write_text("not a slice")
    reader = DatReader(folder)
    assert DatReader.can_read(folder) and reader.channels() == ("A", "B")
    assert reader.names("A") == ("z_24-01-01_120000_0-0-0", "y_24-01-02_120000_0-0-0", "x_24-01-03_120000_0-0-0")
    meta = reader.meta("B")
    assert (meta.n, meta.shape, meta.dtype) == (3, (6, 9), dtype)
    assert meta.pixel_size[:2] == (0.004, 0.004)
    assert meta.instrument["timestamp_last"] == "2024-01-03T12:00:00"
    for i, planes in enumerate(slices):
        for c in "AB":
            got = reader.read(c, i)
            assert got.dtype == np.dtype(dtype) and np.array_equal(got, planes[c])
    assert reader.describe("A", 2) == str(folder / "x_24-01-03_120000_0-0-0.dat")
    with_z = DatReader(folder, DatReaderOptions(z_step=0.008)).meta("A")
    assert with_z.pixel_size == (0.004, 0.004, 0.008)
    with pytest.raises(InputError, match="unknown channel 'C'"):
        reader.read("C", 0)


def test_channels_follow_the_ai_flags(tmp_path: Path) -> None:
    only_b = write_dat(tmp_path / "b.dat", _planes("int16", channels="B"), {"DetB": "ESB"})
    reader = DatReader(only_b)
    assert reader.channels() == ("B",) and reader.meta("B").instrument["detector_input"] == "AI2"
    four = _planes("int16", channels="ABCD")
    path = write_dat(tmp_path / "four.dat", four, version=6)
    reader = DatReader(path)
    assert reader.channels() == ("A", "B", "C", "D")
    for c in "ABCD":
        np.testing.assert_array_equal(reader.read(c, 0), four[c])
    bd = _planes("uint8", channels="BD")
    reader = DatReader(write_dat(tmp_path / "bd.dat", bd, version=5))
    assert reader.channels() == ("B", "D")
    np.testing.assert_array_equal(reader.read("D", 0), bd["D"])


@pytest.mark.parametrize("version", range(1, 10))
def test_every_version_round_trips_through_the_field_table(tmp_path: Path, version: int) -> None:
    chan_num = 2
    fields: dict = {}
    for k, field in enumerate(fields_for(version)):
        dtype = np.dtype(field.dtype)
        if dtype.kind == "S":
            value: object = f"{field.name[: dtype.itemsize - 2]}{k}"[: dtype.itemsize]
        elif field.shape:
            value = (
                np.arange(np.prod(field.resolved_shape(chan_num))).reshape(field.resolved_shape(chan_num)) + k + 0.5
            ).tolist()
        elif dtype.kind == "f":
            value = k + 0.25
        else:
            value = (k * 7 + 3) % (np.iinfo(dtype).max + 1)
        fields[field.name] = value
    fields.update(FileMagicNum=MAGIC, FileVersion=version, ChanNum=chan_num)
    header = encode_header(fields)
    assert decode_header(header) == fields
    assert encode_header(decode_header(header)) == header
    # the same version written with pixels, read back
    planes = _planes("int16", shape=(5, 7), seed=version)
    keep = {
        k: v
        for k, v in fields.items()
        if k
        not in ("AI1", "AI2", "AI3", "AI4", "EightBit", "Oversampling", "SaveOversamples", "XResolution", "YResolution")
    }
    path = write_dat(tmp_path / f"v{version}.dat", planes, keep)
    back = decode_header(path.read_bytes()[:HEADER_SIZE])
    assert back["FileVersion"] == version and back["Notes"] == fields["Notes"]
    assert back["FileLength"] == path.stat().st_size == HEADER_SIZE + 5 * 7 * 2 * 2
    reader = DatReader(path)
    assert reader.meta("A").instrument["file_version"] == version
    for c in "AB":
        np.testing.assert_array_equal(reader.read(c, 0), planes[c])


def test_encode_header_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown .dat header fields"):
        encode_header({"PixelSise": 1.0})
    with pytest.raises(ValueError, match="do not exist in FileVersion 8"):
        encode_header({"SampleID": "x"}, version=8)
    with pytest.raises(ValueError, match="ChanNum"):
        encode_header({"FileVersion": 4, "ChanNum": 1, "Scaling": [[0, 1, 0, 0]] * 2})
    with pytest.raises(ValueError, match="do not fit"):
        encode_header({"DetA": "a detector name too long"})
    with pytest.raises(ValueError, match="XResolution"):
        encode_header({"XResolution": -1})


def test_oversamples_and_scaling(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    stack = rng.integers(-3000, 3000, size=(4, 5, 3)).astype(np.int16)
    path = write_dat(tmp_path / "o.dat", {"A": stack}, version=8)
    fields = decode_header(path.read_bytes()[:HEADER_SIZE])
    assert (fields["SaveOversamples"], fields["Oversampling"]) == (1, 3)
    mean = DatReader(path)
    assert mean.meta("A").dtype == "float32"
    np.testing.assert_array_equal(mean.read("A", 0), stack.mean(axis=2, dtype=np.float64).astype(np.float32))
    second = DatReader(path, DatReaderOptions(oversample=1))
    assert second.meta("A").dtype == "int16"
    np.testing.assert_array_equal(second.read("A", 0), stack[:, :, 1])
    with pytest.raises(InputError, match="oversample 5 out of range"):
        DatReader(path, DatReaderOptions(oversample=5)).read("A", 0)
    cut = tmp_path / "cut.dat"  # 7 whole pixels of 3 oversamples x 2 bytes, and 5 bytes more
    cut.write_bytes(path.read_bytes()[: HEADER_SIZE + 7 * 6 + 5])
    with pytest.warns(UserWarning, match=f"{4 * 5 * 6 - 47} bytes missing"):
        got = DatReader(cut, DatReaderOptions(fill_truncated=True, oversample=2)).read("A", 0)
    np.testing.assert_array_equal(got.ravel()[:7], stack[:, :, 2].ravel()[:7])
    assert not got.ravel()[7:].any()
    # v5: volts = k0 + raw * k1 per stored channel; v8: (raw - k1) * k2 per detector; 8-bit v8
    raw = _planes("int16", channels="B")
    v5 = write_dat(tmp_path / "v5.dat", raw, {"Scaling": [[-10.0, 0.5, 0, 0]]}, version=5)
    np.testing.assert_allclose(DatReader(v5, DatReaderOptions(scaled=True)).read("B", 0), -10 + raw["B"] * 0.5)
    v8 = write_dat(tmp_path / "v8.dat", raw, {"Scaling": [[1, 2, 3, 4], [1e6, -100.0, 0.25, 2.0]]}, version=8)
    np.testing.assert_allclose(DatReader(v8, DatReaderOptions(scaled=True)).read("B", 0), (raw["B"] + 100.0) * 0.25)
    byte = _planes("uint8", channels="A")
    v8b = write_dat(tmp_path / "v8b.dat", byte, {"ScanRate": 2e5, "Scaling": [[1e6, -50.0, 0.5, 0.1], [0, 0, 0, 0]]})
    np.testing.assert_allclose(
        DatReader(v8b, DatReaderOptions(scaled=True)).read("A", 0), byte["A"] * 2e5 / (1e6 * 0.1), rtol=1e-6
    )
    four = write_dat(tmp_path / "c.dat", _planes("int16", channels="C"), version=9)
    with pytest.raises(InputError, match="cannot scale channel 'C'"):
        DatReader(four, DatReaderOptions(scaled=True)).read("C", 0)


def test_file_names() -> None:
    stamp, tile = parse_dat_name("Merlin-6281_19-08-09_120426_0-1-2.dat")
    assert (stamp.isoformat(), tile) == ("2019-08-09T12:04:26", "0-1-2")
    assert parse_dat_name("slice_0001.dat") == (None, None)
    assert parse_dat_name("m_19-13-09_120426_0-0-0.DAT") == (None, "0-0-0")


def test_tiles(tmp_path: Path) -> None:
    for tile in ("0-0-0", "0-0-1"):
        for i in range(2):
            write_dat(
                tmp_path / f"m_24-02-0{i + 1}_080000_{tile}.dat", _planes("int16", seed=i + 10 * (tile[-1] == "1"))
            )
    with pytest.raises(InputError, match=r"several tiles per slice \(0-0-0, 0-0-1\)") as err:
        DatReader(tmp_path).channels()
    assert str(tmp_path) in str(err.value)
    reader = DatReader(tmp_path, DatReaderOptions(tile="0-0-1"))
    assert reader.names("A") == ("m_24-02-01_080000_0-0-1", "m_24-02-02_080000_0-0-1")
    np.testing.assert_array_equal(reader.read("B", 1), _planes("int16", seed=11)["B"])
    with pytest.raises(InputError, match="no .dat file of tile '1-0-0'; tiles here: 0-0-0, 0-0-1"):
        DatReader(tmp_path, DatReaderOptions(tile="1-0-0")).meta("A")
    with pytest.raises(ValueError, match="tile"):
        DatReader(tmp_path, DatReaderOptions(tile="first"))


def test_corrupt_files_are_input_errors_naming_the_file(tmp_path: Path) -> None:
    good = write_dat(tmp_path / "good.dat", _planes("int16")).read_bytes()
    cases = {
        "magic.dat": (b"\x00\x00\x00\x00" + good[4:], "magic number 0"),
        "version.dat": (good[:4] + (12).to_bytes(2, "big") + good[6:], "unsupported .dat FileVersion 12"),
        "short.dat": (good[:1000], "24 bytes missing of the 1024-byte header"),
        "empty.dat": (b"", "1024 bytes missing"),
        "chan.dat": (good[:32] + bytes([3]) + good[33:], "ChanNum says 3 channels but the AI1..AI4 flags enable 2"),
        "eight.dat": (good[:33] + bytes([7]) + good[34:], "EightBit is 7"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / "bad" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        with pytest.raises(InputError, match=message) as err:
            DatReader(path).read("A", 0)
        assert str(path) in str(err.value), name
        assert path.read_bytes() == data  # inputs are never modified
    assert not DatReader.can_read(tmp_path / "bad" / "magic.dat")
    # a slice that differs from the first one
    folder, _ = _folder(tmp_path / "mixed", 2)
    odd = write_dat(folder / "w_24-01-09_120000_0-0-0.dat", _planes("int16", shape=(6, 10)))
    reader = DatReader(folder)
    reader.read("A", 1)
    with pytest.raises(InputError, match=r"\(rows, columns\) differ from the first slice") as err:
        reader.read("A", 2)
    assert str(odd) in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .dat file"):
        DatReader(tmp_path / "empty").channels()
    with pytest.raises(InputError, match="does not exist"):
        DatReader(tmp_path / "missing").channels()


# -- writer ---------------------------------------------------------------------------------


@needs_realdata
def test_dat_to_dat_conversion_carries_the_header(tmp_path: Path) -> None:
    reader = DatReader(GEMINI)
    original = GEMINI.read_bytes()[:HEADER_SIZE]
    for channel in ("A", "B"):
        meta = reader.meta(channel)
        writer = DatWriter(tmp_path / f"out_{channel}", meta, reader.names(channel))
        image, extras = reader.read_with_extras(channel, 0)
        writer.write(0, image, extras)
        writer.commit()
        out = tmp_path / f"out_{channel}" / GEMINI.name
        back = DatReader(out)
        assert back.channels() == (channel,)
        np.testing.assert_array_equal(back.read(channel, 0), image)
        header = out.read_bytes()[:HEADER_SIZE]
        fields, src = decode_header(header), decode_header(original)
        changed = {k for k in src if fields[k] != src[k]}
        assert changed == {"ChanNum", "FileLength", "AI2" if channel == "A" else "AI1"}
        assert fields["FileLength"] == out.stat().st_size == HEADER_SIZE + 2_000_000
        same = [i for i in range(HEADER_SIZE) if header[i] == original[i]]
        assert len(same) >= HEADER_SIZE - 12  # ChanNum, one AI flag, FileLength bytes
        assert back.meta(channel).instrument["detector"] == meta.instrument["detector"]
    # to another version: the fields that exist there are carried
    v8 = DatWriter(tmp_path / "v8", reader.meta("B"), reader.names("B"), DatWriter.Options(version=8))
    v8.write(0, *reader.read_with_extras("B", 0))
    v8.commit()
    fields = decode_header((tmp_path / "v8" / GEMINI.name).read_bytes()[:HEADER_SIZE])
    assert fields["FileVersion"] == 8 and fields["MachineID"] == "Jeiss1/Gemini500-7029"
    assert fields["Scaling"] == decode_header(original)["Scaling"] and "SampleID" not in fields


@pytest.mark.parametrize("dtype", ["int16", "uint8"])
def test_writer_round_trip_from_any_reader(tmp_path: Path, dtype: str) -> None:
    stack = np.stack([_planes(dtype, shape=(8, 5), channels="A", seed=i)["A"] for i in range(3)])
    meta = StackMeta(n=3, shape=(8, 5), dtype=dtype, pixel_size=(0.005, 0.005, 0.01))
    names = [f"slice_{i:04d}.tif" for i in range(3)]
    writer = DatWriter(tmp_path / "out", meta, names)
    assert not (tmp_path / "out").exists()
    for i in (2, 0, 1):
        writer.write(i, stack[i], {})
    assert not (tmp_path / "out").exists()  # nothing complete-looking before commit
    writer.commit()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"slice_{i:04d}.dat" for i in range(3)]
    reader = DatReader(tmp_path / "out")
    back = reader.meta("A")
    assert (back.n, back.shape, back.dtype) == (3, (8, 5), dtype)
    assert back.pixel_size[0] == pytest.approx(0.005) and back.instrument["file_version"] == 9
    for i in range(3):
        np.testing.assert_array_equal(reader.read("A", i), stack[i])
    stamped = DatWriter(
        tmp_path / "t",
        meta,
        names,
        DatWriter.Options(naming="timestamp", prefix="Sim", start="25-03-01_235959", detector="B"),
    )
    for i in range(3):
        stamped.write(i, stack[i], {})
    stamped.commit()
    reader = DatReader(tmp_path / "t")
    assert reader.names("B") == ("Sim_25-03-01_235959_0-0-0", "Sim_25-03-02_000000_0-0-0", "Sim_25-03-02_000001_0-0-0")
    np.testing.assert_array_equal(reader.read("B", 2), stack[2])


def test_writer_refuses_and_aborts(tmp_path: Path) -> None:
    for dtype in ("float32", "uint16"):
        with pytest.raises(ValueError, match="int16 or uint8"):
            DatWriter(tmp_path / "x", StackMeta(n=1, shape=(2, 2), dtype=dtype), ["a"])
    with pytest.raises(ValueError, match="naming"):
        DatWriter(tmp_path / "x", StackMeta(n=1, shape=(2, 2), dtype="int16"), ["a"], DatWriter.Options(naming="x"))
    # an existing result stays until commit; abort leaves it as it was
    meta = StackMeta(n=1, shape=(2, 2), dtype="int16")
    first = DatWriter(tmp_path / "res", meta, ["a"])
    first.write(0, np.ones((2, 2), np.int16), {})
    first.commit()
    (tmp_path / "res" / "outputs").mkdir()
    second = DatWriter(tmp_path / "res", meta, ["a"])
    second.write(0, np.full((2, 2), 7, np.int16), {})
    second.abort()
    assert DatReader(tmp_path / "res").read("A", 0).tolist() == [[1, 1], [1, 1]]
    third = DatWriter(tmp_path / "res", meta, ["a"])
    with pytest.raises(RuntimeError, match="never written"):
        third.commit()
    third.write(0, np.full((2, 2), 7, np.int16), {})
    third.commit()
    assert DatReader(tmp_path / "res").read("A", 0).tolist() == [[7, 7], [7, 7]]
    assert (tmp_path / "res" / "outputs").is_dir()  # side outputs of the old folder kept
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _write_one(writer: DatWriter, index: int, image: np.ndarray) -> int:
    writer.write(index, image, {})
    return index


def test_pickling_and_parallel_writes(tmp_path: Path) -> None:
    folder, slices = _folder(tmp_path / "acq", 2)
    reader = DatReader(folder, DatReaderOptions(z_step=0.01))
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.meta("A") == reader.meta("A")
    reader.meta("B")
    clone = pickle.loads(pickle.dumps(reader))  # with its cache
    np.testing.assert_array_equal(clone.read("B", 1), slices[1]["B"])
    meta = reader.meta("A")
    writer = DatWriter(tmp_path / "out", meta, reader.names("A"))
    assert pickle.loads(pickle.dumps(writer)).files == writer.files
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_write_one, [writer, writer], [0, 1], [s["A"] for s in slices]))
    assert done == [0, 1]
    writer.commit()
    back = DatReader(tmp_path / "out")
    for i in range(2):
        np.testing.assert_array_equal(back.read("A", i), slices[i]["A"])


def test_pipeline_on_a_folder_of_dat_files(tmp_path: Path) -> None:
    project, slices = _folder(tmp_path / "proj", 3)
    host = PluginHost()
    config = parse_config(
        {
            "process_steps": ["cropping"],
            "channels": ["A", "B"],
            "input": {"reader": "dat", "z_step": 0.02},
            "cropping": {"area": [1, 7, 2, 5]},
            "output": {"writer": "dat", "path": "export"},
        },
        host,
        project_dir=project,
    )
    run(config, host=host)
    names = DatReader(project).names("A")
    for channel in "AB":
        out = sorted(p.name for p in (project / "process" / "cropping" / channel).glob("*.tif"))
        assert out == sorted(f"{n}.tif" for n in names)
        exported = DatReader(project / f"export_{channel}")
        assert exported.channels() == (channel,) and exported.names(channel) == names
        meta = exported.meta(channel)
        assert meta.shape == (3, 6) and meta.pixel_size[0] == pytest.approx(0.004)
        for i, name in enumerate(names):
            expected = slices[i][channel][6 - 5 : 6 - 2, 1:7]
            got = tifffile.imread(project / "process" / "cropping" / channel / f"{name}.tif")
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(exported.read(channel, i), expected)
