"""Entry point ``io``: registers the built-in readers and writers."""
from __future__ import annotations

from stack3d_core.plugin import hookimpl

from .janelia_dat import DatReader, DatWriter
from .mrc import MrcReader, MrcWriter
from .multipage_tiff import MultipageTiffReader
from .multipage_tiff_writer import MultipageTiffWriter
from .ome_zarr import OmeZarrReader, OmeZarrWriter
from .tiff_folder import TiffFolderReader, TiffFolderWriter


@hookimpl
def stack3d_register_readers() -> list[type]:
    return [TiffFolderReader, MultipageTiffReader, MrcReader, OmeZarrReader, DatReader]


@hookimpl
def stack3d_register_writers() -> list[type]:
    # writers picked by suffix come before tiff_folder, which claims any existing folder
    return [MrcWriter, OmeZarrWriter, MultipageTiffWriter, DatWriter, TiffFolderWriter]
