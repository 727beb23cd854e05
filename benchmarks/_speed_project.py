"""The synthetic project of ``benchmarks/speed.py``: sizes, the shared ``params.toml``,
writing the slices and the ground truth, disk-space and machine checks.

Importable as ``_speed_project`` when ``benchmarks/`` is on ``sys.path`` (as when
``speed.py`` runs as a script). Heavy modules are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ALL_STEPS", "PRESETS", "Size", "builtin_host", "check_disk", "env_versions", "machine_info",
           "parse_size", "speed_params", "spec_for", "write_project"]

ALL_STEPS = ("cropping", "bkg_removal", "intensity_rescaling", "registration_calculation",
             "registration_transformation", "destriping", "resampling", "cropping_final")
"""PyStack3D's step order (without ``intensity_rescaling_area``): the default ``--steps``."""

PRESETS: dict[str, tuple[str, ...]] = {
    "small": ("20x256x256",),
    # the sizes; 100x256x256 is the same slice size as the 2000-slice run, for the
    # cost per slice against the number of slices
    "issue": ("100x1024x1024", "200x2048x2048", "100x256x256", "2000x256x256"),
}

PACKAGES = ("stack3d", "pystack3d", "numpy", "scipy", "tifffile", "scikit-image", "pystackreg", "pyvsnr",
            "PyWavelets", "statsmodels")
"""Versions reported for each environment (those not installed are left out)."""

_VERSIONS = """
import json, sys
from importlib.metadata import PackageNotFoundError, version
out = {"python": sys.version.split()[0]}
for name in sys.argv[1:]:
    try:
        out[name] = version(name)
    except PackageNotFoundError:
        pass
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Size:
    """A stack size: ``n`` slices of ``rows`` x ``cols`` px (uint16)."""

    n: int
    rows: int
    cols: int

    @property
    def label(self) -> str:
        return f"{self.n}x{self.rows}x{self.cols}"

    @property
    def nbytes(self) -> int:
        """Bytes of one copy of the stack (uint16)."""
        return self.n * self.rows * self.cols * 2


def parse_size(text: str) -> Size:
    """``"100x1024x1024"`` (slices x rows x columns) -> :class:`Size`."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"size {text!r}: expected SLICESxROWSxCOLS, e.g. 100x1024x1024")
    n, rows, cols = (int(g) for g in m.groups())
    if n < 2 or rows < 64 or cols < 64:
        raise ValueError(f"size {text!r}: at least 2 slices of 64x64 px")
    return Size(n, rows, cols)


def margin(size: Size) -> int:
    """The cropping margin of the demo: 1/16 of the smaller side."""
    return max(2, min(size.rows, size.cols) // 16)


MAX_DEPTH_SLICES = 200
"""Stacks longer than this span the depth of this many nominal slices (finer z steps)."""


def spec_for(size: Size, seed: int = 0) -> Any:
    """The :class:`~stack3d_core.testing.synth.SynthSpec` of a size: uint16, every defect
    at its default, except for long stacks:

    * the drift is scaled down so that the total drift stays within half the cropping
      margin (0.2 px/slice over 2000 slices would leave nothing of 256 px slices);
    * beyond :data:`MAX_DEPTH_SLICES` slices the z step shrinks so that the stack spans the
      same depth (200 px): the synthetic material's inclined structures look like lateral
      motion to any registration (about 30 x 60 px over 2000 slices at 1 px of depth per
      slice, more than the crop margins of 256 px slices; 4 px at 0.1 px per slice).
    """
    from stack3d_core.testing.synth import SynthSpec

    base = SynthSpec()
    dx, dy = base.drift_px_per_slice
    factor = min(1.0, margin(size) / 2 / (max(abs(dx), abs(dy)) * size.n))
    return SynthSpec(n_slices=size.n, shape=(size.rows, size.cols), dtype="uint16", seed=seed,
                     drift_px_per_slice=(dx * factor, dy * factor),
                     dz_um=base.dz_um * min(1.0, MAX_DEPTH_SLICES / size.n))


def builtin_host(plots: bool = False) -> Any:
    """A plugin host with the built-in ``io`` and ``steps`` plugins (and ``plots``) only."""
    import stack3d_io.plugin
    import stack3d_steps.plugin
    from stack3d_core import PluginHost

    host = PluginHost(autoload=False)
    host.register(stack3d_io.plugin, "io")
    host.register(stack3d_steps.plugin, "steps")
    if plots:
        import stack3d_steps.plots

        host.register(stack3d_steps.plots, "plots")
    return host


def speed_params(spec: Any, steps: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The ``params.toml`` dict both tools run (PyStack3D's keys only) and the list of the
    changes made to :func:`stack3d_core.demo.demo_params` (for the report).

    ``demo_params`` as is (VSNR maxit 50, cvg_threshold 1e-2, two Gabor filters;
    TRANSLATION registration with edge mode and cropping; bkg orders [1, 2, 1] with cross
    terms), except: ``skip_factors`` grow with the slice size (at most ~128 x 128 fitted
    pixels per fitted slice, every 2nd slice); ``registration_calculation.nb_blocks = [1,
    1]`` (PyStack3D raises ``KeyError: 'nb_blocks'`` without it; its own default); and
    ``cropping_final`` keeps a 2-margin band away from the registered crop's far edges, so
    that its area lies inside the registered slices (PyStack3D slices with negative
    indices otherwise).
    """
    from stack3d_core.demo import demo_params

    rows, cols = spec.shape
    m = max(2, min(rows, cols) // 16)
    params = demo_params(spec, builtin_host())
    skip = max(4, min(rows, cols) // 128)
    changes = []
    if "bkg_removal" in params:
        params["bkg_removal"]["skip_factors"] = [skip, skip, 2]
        changes.append(f"bkg_removal.skip_factors = [{skip}, {skip}, 2]")
    if "registration_calculation" in params:  # PyStack3D requires the key (KeyError without it)
        params["registration_calculation"]["nb_blocks"] = [1, 1]
        changes.append("registration_calculation.nb_blocks = [1, 1]")
    if "cropping_final" in params:
        params["cropping_final"]["area"] = [m, cols - 4 * m, m, rows - 4 * m]
        changes.append(f"cropping_final.area = {params['cropping_final']['area']}")
    missing = [s for s in steps if s not in params["process_steps"]]
    if missing:
        raise ValueError(f"steps not installed in stack3d: {', '.join(missing)}")
    params["process_steps"] = list(steps)
    for name in ALL_STEPS:
        if name not in steps:
            params.pop(name, None)
    return params, changes


def write_project(folder: Path, spec: Any, steps: Sequence[str]) -> tuple[Any, list[str]]:
    """Write the slices (stack3d's ``tiff_folder`` writer: one TIFF per slice, PyStack3D's
    names) and ``params.toml`` into ``folder``, and the ground truth as
    ``folder.parent / "truth.json"`` (outside the project: no tool copies it).

    :returns: the :class:`~stack3d_core.testing.synth.SyntheticStack` and the parameter
        changes of :func:`speed_params`.
    """
    from stack3d_core.demo import _dump_toml
    from stack3d_core.engine.pipeline import INTERMEDIATE_FORMAT
    from stack3d_core.stackio import StackMeta
    from stack3d_core.testing.synth import make_stack

    stack = make_stack(spec)
    params, changes = speed_params(spec, steps)
    meta = StackMeta(n=len(stack), shape=stack.shape, dtype=spec.dtype,
                     pixel_size=(spec.pixel_size_um, spec.pixel_size_um, spec.dz_um),
                     z_positions=tuple(stack.z_um.tolist()))
    writer = builtin_host().writers.get(INTERMEDIATE_FORMAT)(folder, meta, stack.names)
    try:
        for k in range(len(stack)):
            writer.write(k, stack.observed(k), {})
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    text = _dump_toml(params).split("\n", 1)[1]  # without its "written by stack3d synth" line
    (folder / "params.toml").write_text("# benchmarks/speed.py: the same parameters for stack3d and PyStack3D\n" + text)
    (folder.parent / "truth.json").write_text(stack.to_json())
    return stack, changes


def copy_project(src: Path, dst: Path) -> Path:
    """A fresh copy of a project's slices and ``params.toml`` (nothing else)."""
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file():
            shutil.copy2(path, dst / path.name)
    return dst


def check_disk(folder: Path, sizes: Sequence[Size], tools: Sequence[str], n_steps: int) -> None:
    """Refuse (:class:`SystemExit`) when ``folder``'s file system lacks the space of the
    largest size: the input, a tool's copy and one full copy per image-writing step (a
    run is deleted before the next starts), plus 20 % and 1 GiB."""
    copies = 2 + (n_steps if {"stack3d", "pystack3d"} & set(tools) else 1)
    worst = max(sizes, key=lambda s: s.nbytes)
    need = int(worst.nbytes * copies * 1.2) + 2**30
    free = shutil.disk_usage(folder).free
    if free < need:
        raise SystemExit(f"not enough disk space in {folder} for {worst.label}: about {need / 2**30:.1f} GiB "
                         f"needed ({copies} copies of {worst.nbytes / 2**30:.2f} GiB), {free / 2**30:.1f} GiB "
                         "free; free some space or pass --workdir on a larger file system")


def env_versions(python: str) -> dict[str, str]:
    """Python and package versions of an interpreter (``{}`` if it cannot be run)."""
    try:
        out = subprocess.run([python, "-c", _VERSIONS, *PACKAGES], capture_output=True, text=True, timeout=120,
                             check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {}


def machine_info() -> dict[str, str]:
    """CPU model, core count, memory, OS and the load average when the run starts."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem_text = f"{mem:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        mem_text = "?"
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": mem_text,
            "os": f"{platform.system()} {platform.release()}", "load": load,
            "python": sys.version.split()[0]}
