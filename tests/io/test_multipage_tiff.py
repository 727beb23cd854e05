"""Tests of the multi-page TIFF reader (stack3d_io.multipage_tiff)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core.errors import InputError
from stack3d_io.multipage_tiff import MultipageTiffReader
from stack3d_io.tiff_folder import TiffFolderReader, TiffFolderWriter

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
REALDATA = SHARED / "realdata"


def _stack(n: int, dtype: str = "uint16", shape: tuple[int, int] = (9, 11)) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.integers(0, np.iinfo(dtype).max, size=(n, *shape), endpoint=True).astype(dtype)


def _write_pages(path: Path, stack: np.ndarray, **kw) -> None:
    """One IFD per page, each with its own private XML tag."""
    with tifffile.TiffWriter(path) as tw:
        for i, img in enumerate(stack):
            tw.write(img, photometric="minisblack", metadata=None,
                     extratags=[(51023, "s", 0, f"<xml>{i}</xml>", True)], **kw)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_3d_series(tmp_path: Path, dtype: str) -> None:
    stack = _stack(5, dtype)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    assert MultipageTiffReader.can_read(path)
    reader = MultipageTiffReader(path)
    assert reader.channels() == ("images",)
    assert reader.names("images") == tuple(f"img_{i:03d}.tif" for i in range(5))
    meta = reader.meta("images")
    assert (meta.n, meta.shape, meta.dtype, meta.z_positions) == (5, (9, 11), dtype, None)
    for i in range(5):
        assert np.array_equal(reader.read("images", i), stack[i])
    assert "page 3" in reader.describe("images", 3)


def test_pages_with_private_tags_and_compression(tmp_path: Path) -> None:
    stack = _stack(4)
    path = tmp_path / "pages.tiff"
    _write_pages(path, stack, compression="zlib")
    reader = MultipageTiffReader(path)
    for i in range(4):
        img, extras = reader.read_with_extras("images", i)
        assert np.array_equal(img, stack[i])
        assert extras["tiff_compression"] == 8
        assert extras["tiff_extratags"] == [(51023, 2, len(f"<xml>{i}</xml>") + 1,
                                            f"<xml>{i}</xml>".encode() + b"\x00", True)]
        assert reader.extras("images", i) == extras
    # a multi-page stack converts to a TIFF folder, tags and compression carried
    meta = reader.meta("images")
    w = TiffFolderWriter(tmp_path / "images", meta, reader.names("images"))
    for i in range(meta.n):
        w.write(i, *reader.read_with_extras("images", i))
    w.commit()
    folder = TiffFolderReader(tmp_path / "images")
    assert folder.names(".") == reader.names("images")
    with tifffile.TiffFile(tmp_path / "images" / "img_002.tif") as tif:
        assert tif.pages[0].tags[51023].value == "<xml>2</xml>"
        assert int(tif.pages[0].compression) == 8


def test_names_past_1000_pages(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((1001, 2, 2), np.uint8))
    names = MultipageTiffReader(path).names("images")
    assert names[0] == "img_0000.tif" and names[-1] == "img_1000.tif"
    assert list(names) == sorted(names)
    assert MultipageTiffReader(path).read("images", 1000).shape == (2, 2)


def test_imagej_single_ifd(tmp_path: Path) -> None:
    stack = _stack(4, "uint16")
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, stack, imagej=True, truncate=True)  # one IFD, planes contiguous
    reader = MultipageTiffReader(path)
    assert reader.meta("images").n == 4
    for i in range(4):
        img = reader.read("images", i)
        assert img.dtype.isnative and np.array_equal(img, stack[i])
    assert reader.extras("images", 3)["tiff_compression"] is None


def test_can_read(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((3, 3), np.uint8))
    assert not MultipageTiffReader.can_read(tmp_path / "one.tif")
    assert not MultipageTiffReader.can_read(tmp_path)
    (tmp_path / "junk.tif").write_bytes(os.urandom(100))
    assert not MultipageTiffReader.can_read(tmp_path / "junk.tif")
    tifffile.imwrite(tmp_path / "two.png", np.zeros((2, 3, 3), np.uint8))
    assert not MultipageTiffReader.can_read(tmp_path / "two.png")


def test_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.tif").write_bytes(os.urandom(100))
    with pytest.raises(InputError, match="junk.tif"):
        MultipageTiffReader(tmp_path / "junk.tif").meta("images")
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, _stack(3), photometric="minisblack")
    with pytest.raises(InputError, match="SE2"):
        MultipageTiffReader(path).names("SE2")
    raw = path.read_bytes()  # tifffile puts the IFDs of pages 1.. after the pixels
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) - 50])
    with pytest.raises(InputError, match=r"cut\.tif"):
        MultipageTiffReader(tmp_path / "cut.tif").meta("images")
    _write_pages(tmp_path / "pages.tif", _stack(3))  # IFD then pixels, page after page
    raw = (tmp_path / "pages.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) - 50])
    reader = MultipageTiffReader(tmp_path / "t.tif")
    reader.read("images", 0)
    with pytest.raises(InputError, match=r"t\.tif.*page 2"):
        reader.read("images", 2)
    # pages of different shapes: the first series is the stack, the odd page is not in it
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tw:
        for shape in [(4, 4), (4, 4), (5, 4)]:
            tw.write(np.zeros(shape, np.uint8), metadata=None)
    assert MultipageTiffReader(tmp_path / "mixed.tif").meta("images").n == 2


def test_pickle(tmp_path: Path) -> None:
    stack = _stack(3)
    path = tmp_path / "s.tif"
    _write_pages(path, stack)
    reader = MultipageTiffReader(path, MultipageTiffReader.Options(pixel_size=(0.01, 0.01, 0.02)))
    reader.meta("images")
    r2 = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(r2.read("images", 2), stack[2])
    assert r2.meta("images").pixel_size == (0.01, 0.01, 0.02)


def test_real_zeiss_multipage() -> None:
    path = REALDATA / "zeiss-fei-sem-tiff" / "ZEISS_SEM_multipage.tif"
    if not path.exists():
        pytest.skip(f"real test data not available: {path}")
    assert MultipageTiffReader.can_read(path)
    reader = MultipageTiffReader(path)
    meta = reader.meta("images")
    assert (meta.n, meta.shape, meta.dtype) == (2, (1536, 2048), "uint8")
    img, extras = reader.read_with_extras("images", 1)
    assert img.shape == (1536, 2048)
    (tag,) = extras["tiff_extratags"]
    assert tag[:3] == (34118, 2, 25998)  # CZ_SEM, ASCII, copied verbatim
    assert extras["tiff_compression"] is None
    single = REALDATA / "zeiss-fei-sem-tiff" / "test_tiff_Zeiss_SEM_1k.tif"
    assert not MultipageTiffReader.can_read(single)
