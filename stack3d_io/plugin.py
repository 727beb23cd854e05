"""Entry point ``io``: registers the built-in readers and writers."""
from __future__ import annotations

from stack3d_core.plugin import hookimpl

from .multipage_tiff import MultipageTiffReader
from .tiff_folder import TiffFolderReader, TiffFolderWriter


@hookimpl
def stack3d_register_readers() -> list[type]:
    return [TiffFolderReader, MultipageTiffReader]


@hookimpl
def stack3d_register_writers() -> list[type]:
    return [TiffFolderWriter]
