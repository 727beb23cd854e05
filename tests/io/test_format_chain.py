"""Conversion chain TIFF folder -> MRC -> OME-Zarr -> TIFF folder with the readers and
writers directly, and the same formats through the engine's export (copy_stack)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core.engine.export import copy_stack
from stack3d_core.errors import InputError
from stack3d_core.stackio import StackMeta, StackReader, StackWriter
from stack3d_io.mrc import MrcReader, MrcWriter
from stack3d_io.multipage_tiff import MultipageTiffReader
from stack3d_io.multipage_tiff_writer import MultipageTiffWriter
from stack3d_io.ome_zarr import OmeZarrReader, OmeZarrWriter
from stack3d_io.tiff_folder import TiffFolderReader, TiffFolderWriter

PIXEL = (0.005, 0.005, 0.0125)  # µm


def _source(folder: Path, dtype: str, n: int = 5) -> np.ndarray:
    info = np.iinfo(dtype)
    stack = np.random.default_rng(7).integers(info.min, info.max, size=(n, 24, 31), endpoint=True).astype(dtype)
    stack[0, 0, :4] = (info.min, info.max, 0, -1 if info.min < 0 else 1)
    folder.mkdir(parents=True)
    for i, image in enumerate(stack):
        tifffile.imwrite(folder / f"slice_{i:04d}_z={i * 0.0125:.4f}um.tif", image, photometric="minisblack")
    return stack


def _copy(reader: StackReader, channel: str, writer_cls: type[StackWriter], path: Path) -> None:
    meta = reader.meta(channel)
    writer = writer_cls(path, meta, reader.names(channel))
    for i in range(meta.n):
        writer.write(i, *reader.read_with_extras(channel, i))
    writer.commit()


def _stack_of(reader: StackReader, channel: str) -> np.ndarray:
    return np.stack([reader.read(channel, i) for i in range(reader.meta(channel).n)])


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8"])
def test_tiff_mrc_zarr_tiff_is_lossless(tmp_path: Path, dtype: str) -> None:
    stack = _source(tmp_path / "in", dtype)
    tiffs = TiffFolderReader(tmp_path / "in", TiffFolderReader.Options(pixel_size=PIXEL))
    _copy(tiffs, ".", MrcWriter, tmp_path / "stack.mrc")
    mrc = MrcReader(tmp_path / "stack.mrc")
    assert mrc.meta(".").pixel_size == PIXEL and mrc.meta(".").dtype == dtype
    assert np.array_equal(_stack_of(mrc, "."), stack)
    _copy(mrc, ".", OmeZarrWriter, tmp_path / "stack.ome.zarr")
    zarr_reader = OmeZarrReader(tmp_path / "stack.ome.zarr")
    meta = zarr_reader.meta(".")
    assert (meta.pixel_size, meta.dtype, meta.z_positions) == (PIXEL, dtype, None)  # MRC keeps no z
    assert np.array_equal(_stack_of(zarr_reader, "."), stack)
    _copy(zarr_reader, ".", TiffFolderWriter, tmp_path / "out")
    back = TiffFolderReader(tmp_path / "out")
    assert back.names(".") == tuple(f"slice_{i:04d}.tif" for i in range(5))
    out = _stack_of(back, ".")
    assert out.dtype == np.dtype(dtype) and np.array_equal(out, stack)
    with tifffile.TiffFile(tmp_path / "out" / "slice_0003.tif") as tif:
        num, den = tif.pages[0].tags["XResolution"].value  # pixels per cm from the pixel size
        assert int(tif.pages[0].tags["ResolutionUnit"].value) == 3 and num / den == pytest.approx(2e6)


def test_engine_export_to_every_format(tmp_path: Path) -> None:
    stack = _source(tmp_path / "in", "uint16", n=4)
    tiffs = TiffFolderReader(tmp_path / "in", TiffFolderReader.Options(pixel_size=PIXEL))
    z = tiffs.meta(".").z_positions
    assert z == (0.0, 0.0125, 0.025, 0.0375)
    assert copy_stack(tiffs, ".", OmeZarrWriter, tmp_path / "e.ome.zarr") == 4
    zr = OmeZarrReader(tmp_path / "e.ome.zarr")
    assert zr.meta(".").z_positions == z and zr.names(".") == tiffs.names(".")
    assert np.array_equal(_stack_of(zr, "."), stack)
    assert copy_stack(zr, ".", MrcWriter, tmp_path / "e.mrc") == 4
    assert np.array_equal(_stack_of(MrcReader(tmp_path / "e.mrc"), "."), stack)
    assert copy_stack(tiffs, ".", MultipageTiffWriter, tmp_path / "e.tif") == 4
    assert np.array_equal(_stack_of(MultipageTiffReader(tmp_path / "e.tif"), "images"), stack)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.mrc", "e.ome.zarr", "e.tif", "in"]


_CRASH = """
import os, sys
import numpy as np
from pathlib import Path
from stack3d_core.stackio import StackMeta
from stack3d_io.mrc import MrcWriter
from stack3d_io.multipage_tiff_writer import MultipageTiffWriter
from stack3d_io.ome_zarr import OmeZarrWriter
out = Path(sys.argv[1])
meta = StackMeta(n=3, shape=(8, 9), dtype="uint16", pixel_size=(0.01, 0.01, 0.02))
writers = [cls(out / name, meta, ["a", "b", "c"])
           for cls, name in ((MrcWriter, "s.mrc"), (OmeZarrWriter, "s.ome.zarr"), (MultipageTiffWriter, "s.tif"))]
for w in writers:
    for i in range(3):
        w.write(i, np.full((8, 9), i, np.uint16), {})
os._exit(3)  # killed before commit
"""


def test_killed_writers_leave_nothing_complete(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _CRASH, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.mrc.partial", ".s.ome.zarr.partial", ".s.tif.partial"]
    assert not MrcReader.can_read(tmp_path / "s.mrc") and not OmeZarrReader.can_read(tmp_path / "s.ome.zarr")
    with pytest.raises(InputError, match="never committed"):
        MrcReader(tmp_path / ".s.mrc.partial" / "s.mrc").meta(".")
    with pytest.raises(InputError, match="never committed"):
        OmeZarrReader(tmp_path / ".s.ome.zarr.partial").meta(".")
    assert not list((tmp_path / ".s.tif.partial").glob("*.tif"))
    # the next run at the same paths starts clean and succeeds
    stack = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9)
    for cls, name in ((MrcWriter, "s.mrc"), (OmeZarrWriter, "s.ome.zarr"), (MultipageTiffWriter, "s.tif")):
        writer = cls(tmp_path / name, StackMeta(n=3, shape=(8, 9), dtype="uint16"), ["a", "b", "c"])
        for i in range(3):
            writer.write(i, stack[i], {})
        writer.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mrc", "s.ome.zarr", "s.tif"]
