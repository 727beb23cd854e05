"""``stack3d convert`` and ``stack3d info``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..engine.executors import open_executor
from ..engine.export import channel_path, copy_stack
from ..engine.metadata import PixelSizeOverride
from ..errors import Stack3dError
from ..plugin.host import PluginHost, get_host
from ..progress import TqdmProgress
from ..stackio import StackReader

__all__ = ["cmd_convert", "cmd_info", "open_reader"]

FOLDER_WRITER = "tiff_folder"


def open_reader(path: Path, host: PluginHost, name: str | None) -> StackReader:
    """A reader for ``path``: the named one, or the first that recognises it."""
    if not path.exists():
        raise Stack3dError(f"{path} does not exist")
    cls = host.readers.get(name) if name else host.reader_for(path)
    return cls(path)


def _writer_class(path: Path, host: PluginHost, name: str | None) -> Any:
    if name:
        return host.writers.get(name)
    try:
        return host.writer_for(path)
    except Stack3dError:
        if not path.suffix:  # a folder: TIFF slices
            return host.writers.get(FOLDER_WRITER)
        raise


def cmd_convert(args: argparse.Namespace) -> int:
    host = get_host()
    source, target = Path(args.input), Path(args.output)
    reader = open_reader(source, host, args.reader)
    if args.pixel_size:
        if len(args.pixel_size) not in (2, 3) or min(args.pixel_size) <= 0:
            raise Stack3dError(f"--pixel-size takes 2 or 3 positive values in µm, got {args.pixel_size}")
        reader = PixelSizeOverride(reader, tuple(args.pixel_size))
    writer_cls = _writer_class(target, host, args.writer)
    available = reader.channels()
    channels = args.channel or list(available)
    unknown = [c for c in channels if c not in available]
    if unknown:
        raise Stack3dError(f"{source}: no channel {unknown}; channels: {list(available)}")
    targets = {c: target if len(channels) == 1 else channel_path(target, c) for c in channels}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not args.force:
        raise Stack3dError(f"{', '.join(existing)} exists; use --force to replace it")
    if args.workers < 1:
        raise Stack3dError(f"--workers must be >= 1 (got {args.workers})")
    bar = TqdmProgress(False if args.quiet else None)
    try:
        with open_executor(args.executor, args.workers) as (pool, parallelism):
            for channel, out in targets.items():
                n = copy_stack(reader, channel, writer_cls, out, None, bar, pool, parallelism)
                print(f"wrote {n} slices of channel {channel!r} to {out} ({writer_cls.name})")
    finally:
        bar.close()
    return 0


def _format_z(z: tuple[float, ...] | None, unit: str) -> str:
    if not z:
        return "unknown"
    steps = [b - a for a, b in zip(z, z[1:], strict=False)]
    text = f"{z[0]:.4f} .. {z[-1]:.4f} {unit}"
    if steps:
        text += f" (dz mean {sum(steps) / len(steps):.4f}, min {min(steps):.4f}, max {max(steps):.4f})"
    return text


def cmd_info(args: argparse.Namespace) -> int:
    host = get_host()
    path = Path(args.path)
    reader = open_reader(path, host, args.reader)
    print(f"{path}  (reader: {reader.name})")
    for channel in reader.channels():
        meta = reader.meta(channel)
        print(f"channel {channel!r}: {meta.n} slices of {meta.shape[0]} rows x {meta.shape[1]} columns, {meta.dtype}")
        if meta.pixel_size:
            x, y, z = meta.pixel_size
            z_text = "unknown" if z is None or (isinstance(z, float) and math.isnan(z)) else f"{z:g}"
            print(f"  pixel size: x {x:g}, y {y:g}, z {z_text} {meta.unit}")
        else:
            print("  pixel size: unknown")
        print(f"  z positions: {_format_z(meta.z_positions, meta.unit)}")
        for key, value in sorted(meta.instrument.items()):
            if isinstance(value, dict):
                print(f"  {key}: {len(value)} fields")
            else:
                print(f"  {key}: {value}")
    return 0
