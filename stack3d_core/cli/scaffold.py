"""``stack3d new-plugin NAME [--kind step|reader|writer]``: a plugin distribution that
installs and passes its own tests out of the box.

Layout written into ``DIR/stack3d-NAME/``::

    pyproject.toml          distribution "stack3d-NAME", entry point NAME in group "stack3d"
    README.md
    stack3d_NAME/__init__.py
    stack3d_NAME/plugin.py  the hook implementation(s)
    stack3d_NAME/<kind>.py  the step, reader or writer (a working example to edit)
    tests/test_NAME.py      contract checks, a run on a synthetic stack, entry-point discovery
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..errors import Stack3dError

__all__ = ["cmd_new_plugin", "scaffold"]

_PYPROJECT = '''\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "0.1.0"
description = "{description}"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["stack3d>=0.1"]

[project.entry-points.stack3d]
{name} = "stack3d_{name}.plugin"

[tool.hatch.build.targets.wheel]
packages = ["stack3d_{name}"]
'''

_README = '''\
# {dist}

{description}. A plugin for [stack3d](https://pypi.org/project/stack3d/), found through
its entry point `{name}` in the `stack3d` group.

```bash
pip install .                 # then: stack3d plugins   (lists "{name}")
python -m pytest tests        # the plugin's own tests
```

{usage}
'''

_STEP = '''\
"""The step ``{name}``: multiplies every slice by a gain (replace with your algorithm)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from stack3d_core import Step, StepKind


@attrs.frozen(kw_only=True)
class {cls}Params:
    """Parameters of ``{name}`` (the ``[{name}]`` table of params.toml)."""

    gain: float = attrs.field(default=1.0, validator=attrs.validators.gt(0),
                              metadata={{"doc": "factor applied to every pixel", "unit": "-"}})


class {cls}(Step):
    """Multiply every slice by ``gain`` (the engine rounds and clips to the input dtype)."""

    name = "{name}"
    description = "multiply every slice by a gain"
    Params = {cls}Params
    kind = StepKind.MAP

    def apply(self, image: np.ndarray, index: int, state: Any) -> np.ndarray:
        return image.astype(np.float64) * self.params.gain
'''

_READER = '''\
"""The reader ``{name}``: a folder of ``.npy`` slices, one 2D array per file, sorted by name."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from stack3d_core import InputError, StackMeta, StackReader


@attrs.frozen(kw_only=True)
class {cls}Options:
    """Options of the ``{name}`` reader (the ``[input]`` table)."""

    pattern: str = attrs.field(default="*.npy", metadata={{"doc": "glob of the slice files", "unit": "-"}})


class {cls}Reader(StackReader):
    """Reads ``path/*.npy`` (one channel, ``"."``); memory-mapped, one slice per file."""

    name = "{name}"
    description = "a folder of .npy slices"
    Options = {cls}Options

    @classmethod
    def can_read(cls, path: Path) -> bool:
        return Path(path).is_dir() and any(Path(path).glob("*.npy"))

    def names(self, channel: str) -> tuple[str, ...]:
        names = tuple(sorted(p.name for p in self.path.glob(self.options.pattern)))
        if not names:
            raise InputError(self.path, f"no file matches {{self.options.pattern!r}}")
        return names

    def meta(self, channel: str) -> StackMeta:
        names = self.names(channel)
        first = self.read(channel, 0)
        return StackMeta(n=len(names), shape=first.shape, dtype=first.dtype.name)

    def read(self, channel: str, index: int) -> np.ndarray:
        path = self.path / self.names(channel)[index]
        try:
            image = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(path, f"not a readable .npy file: {{exc}}") from exc
        if image.ndim != 2:
            raise InputError(path, f"expected a 2D slice, got shape {{image.shape}}")
        return np.asarray(image)
'''

_WRITER = '''\
"""The writer ``{name}``: a folder of ``.npy`` slices, staged and published atomically."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stack3d_core import StackMeta, StackWriter


class {cls}Writer(StackWriter):
    """Writes ``path/<name>.npy`` per slice; nothing appears at ``path`` before ``commit()``."""

    name = "{name}"
    description = "a folder of .npy slices"
    suffixes = (".npys",)

    def __init__(self, path: Any, meta: StackMeta, names: Sequence[str], options: Any = None) -> None:
        super().__init__(path, meta, names, options)
        self.staging = self.path.with_name(f".{{self.path.name}}.partial")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def write(self, index: int, image: np.ndarray, extras: Mapping[str, Any]) -> None:
        stem = os.path.splitext(self.names[index])[0]
        tmp = self.staging / f".{{stem}}.npy.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, image)
        os.replace(tmp, self.staging / f"{{stem}}.npy")

    def commit(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.staging, self.path)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
'''

_PLUGIN = '''\
"""Entry point ``{name}`` (group ``stack3d``): what this plugin registers."""

from __future__ import annotations

from stack3d_core import hookimpl

from .{module} import {exported}


@hookimpl
def stack3d_register_{hook}() -> list[type]:
    return [{exported}]
'''

_TESTS = {
    "step": '''\
"""Tests of the step ``{name}``."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from stack3d_core import PluginHost, parse_config, run
from stack3d_core.testing import check_step, run_step_on_arrays
from stack3d_core.testing.synth import SynthSpec, make_stack

import stack3d_{name}.plugin
from stack3d_{name}.step import {cls}, {cls}Params


def test_contract() -> None:
    check_step({cls})


def test_gain_on_a_synthetic_stack(tmp_path: Path) -> None:
    volume = make_stack(SynthSpec(n_slices=4, shape=(32, 48), dtype="uint16")).volume()
    out, _, stats = run_step_on_arrays({cls}({cls}Params(gain=0.5)), volume, workdir=tmp_path)
    np.testing.assert_array_equal(out, np.rint(volume * 0.5).astype(volume.dtype))
    assert stats.shape == (4, 3, 3)


def test_runs_from_params(tmp_path: Path, synthetic_project: Path) -> None:
    host = PluginHost()
    if "{name}" not in host.steps:
        host.register(stack3d_{name}.plugin, "{name}")
    config = parse_config({{"process_steps": ["{name}"], "{name}": {{"gain": 2.0}}}}, host,
                          project_dir=synthetic_project)
    result = run(config, host=host)
    assert result.ran == ("{name}",)


def test_found_through_its_entry_point() -> None:
    names = {{ep.name for ep in importlib.metadata.entry_points(group="stack3d")}}
    if "{name}" not in names:
        pytest.skip("{dist} is not installed (pip install .)")
    assert PluginHost().steps.entry("{name}").distribution == "{dist}"
''',
    "reader": '''\
"""Tests of the reader ``{name}``."""

from __future__ import annotations

import importlib.metadata
import pickle
from pathlib import Path

import numpy as np
import pytest

from stack3d_core import InputError, PluginHost, parse_config, run
from stack3d_core.testing import check_reader

import stack3d_{name}.plugin
from stack3d_{name}.reader import {cls}Reader


def write_stack(folder: Path, n: int = 3) -> np.ndarray:
    folder.mkdir(parents=True)
    stack = np.arange(n * 6 * 8, dtype=np.uint16).reshape(n, 6, 8)
    for k, image in enumerate(stack):
        np.save(folder / f"z{{k:03d}}.npy", image)
    return stack


def test_contract() -> None:
    check_reader({cls}Reader)


def test_reads_back(tmp_path: Path) -> None:
    stack = write_stack(tmp_path / "s")
    reader = pickle.loads(pickle.dumps({cls}Reader(tmp_path / "s")))
    meta = reader.meta(".")
    assert (meta.n, meta.shape, meta.dtype) == (3, (6, 8), "uint16")
    np.testing.assert_array_equal(reader.read(".", 2), stack[2])


def test_bad_file_is_named(tmp_path: Path) -> None:
    write_stack(tmp_path / "s")
    (tmp_path / "s" / "z001.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="z001.npy"):
        {cls}Reader(tmp_path / "s").read(".", 1)


def test_a_pipeline_reads_it(tmp_path: Path) -> None:
    write_stack(tmp_path / "s")
    host = PluginHost()
    if "{name}" not in host.readers:
        host.register(stack3d_{name}.plugin, "{name}")
    config = parse_config({{"process_steps": ["cropping"], "input": {{"reader": "{name}", "path": "s"}}}},
                          host, project_dir=tmp_path)
    run(config, host=host)
    assert len(list((tmp_path / "process" / "cropping").glob("*.tif"))) == 3


def test_found_through_its_entry_point() -> None:
    names = {{ep.name for ep in importlib.metadata.entry_points(group="stack3d")}}
    if "{name}" not in names:
        pytest.skip("{dist} is not installed (pip install .)")
    assert PluginHost().readers.entry("{name}").distribution == "{dist}"
''',
    "writer": '''\
"""Tests of the writer ``{name}``."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from stack3d_core import PluginHost, StackMeta, parse_config, run
from stack3d_core.testing import check_writer

import stack3d_{name}.plugin
from stack3d_{name}.writer import {cls}Writer


def test_contract() -> None:
    check_writer({cls}Writer)


def test_staging_then_commit(tmp_path: Path) -> None:
    meta = StackMeta(n=2, shape=(4, 5), dtype="uint8")
    writer = {cls}Writer(tmp_path / "out", meta, ["a.tif", "b.tif"])
    writer.write(0, np.ones((4, 5), np.uint8), {{}})
    writer.write(1, np.zeros((4, 5), np.uint8), {{}})
    assert not (tmp_path / "out").exists()
    writer.commit()
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a.npy"), np.ones((4, 5), np.uint8))


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = {cls}Writer(tmp_path / "out", StackMeta(n=1, shape=(2, 2), dtype="uint8"), ["a"])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_pipeline_exports_with_it(tmp_path: Path, synthetic_project: Path) -> None:
    host = PluginHost()
    if "{name}" not in host.writers:
        host.register(stack3d_{name}.plugin, "{name}")
    config = parse_config({{"process_steps": ["cropping"],
                           "output": {{"writer": "{name}", "path": "exported"}}}}, host, project_dir=synthetic_project)
    run(config, host=host)
    assert len(list((synthetic_project / "exported").glob("*.npy"))) == 24


def test_found_through_its_entry_point() -> None:
    names = {{ep.name for ep in importlib.metadata.entry_points(group="stack3d")}}
    if "{name}" not in names:
        pytest.skip("{dist} is not installed (pip install .)")
    assert PluginHost().writers.entry("{name}").distribution == "{dist}"
''',
}

_KINDS = {  # kind -> (module, exported class suffix, hook, description, usage)
    "step": ("step", "", "steps", "adds the step `{name}`",
             "In a project's params.toml:\n\n```toml\nprocess_steps = [\"cropping\", \"{name}\"]\n\n[{name}]\ngain = 1.2\n```"),
    "reader": ("reader", "Reader", "readers", "reads stacks stored as folders of .npy slices",
               "In a project's params.toml:\n\n```toml\n[input]\nreader = \"{name}\"\npath = \"slices\"\n```"),
    "writer": ("writer", "Writer", "writers", "writes stacks as folders of .npy slices",
               "In a project's params.toml:\n\n```toml\n[output]\nwriter = \"{name}\"\npath = \"result\"\n```"),
}


def scaffold(folder: Path, name: str, kind: str = "step") -> Path:
    """Write the distribution ``stack3d-NAME`` (underscores become hyphens) into ``folder``;
    return its root."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise Stack3dError(f"plugin name {name!r}: use lower-case letters, digits and underscores, starting with a letter")
    if kind not in _KINDS:
        raise Stack3dError(f"--kind must be one of {', '.join(_KINDS)} (got {kind!r})")
    dist = "stack3d-" + name.replace("_", "-")
    root = Path(folder) / dist
    if root.exists():
        raise Stack3dError(f"{root} exists; choose another name or folder")
    module, suffix, hook, description, usage = _KINDS[kind]
    cls = "".join(part.capitalize() for part in name.split("_"))
    fields = dict(name=name, dist=dist, cls=cls, description=description.format(name=name))
    package = root / f"stack3d_{name}"
    (root / "tests").mkdir(parents=True)
    package.mkdir()
    (root / "pyproject.toml").write_text(_PYPROJECT.format(**fields))
    (root / "README.md").write_text(_README.format(**fields, usage=usage.format(name=name)))
    (package / "__init__.py").write_text(f'"""{dist}: {fields["description"]}."""\n')
    source = {"step": _STEP, "reader": _READER, "writer": _WRITER}[kind]
    (package / f"{module}.py").write_text(source.format(**fields))
    (package / "plugin.py").write_text(_PLUGIN.format(name=name, module=module, exported=cls + suffix, hook=hook))
    (root / "tests" / f"test_{name}.py").write_text(_TESTS[kind].format(**fields))
    return root


def cmd_new_plugin(args: argparse.Namespace) -> int:
    root = scaffold(Path(args.dir), args.name, args.kind)
    print(f"wrote {root}\n  next: pip install -e {root}  then  python -m pytest {root / 'tests'}  and  stack3d plugins")
    return 0
