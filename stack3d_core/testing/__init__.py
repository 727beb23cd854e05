"""Testing helpers for plugin authors (and stack3d's own tests).

* :func:`check_step`: asserts a step class honours the contract (valid name, frozen and
  documented attrs ``Params``, defaults that round-trip through the strict TOML
  converter, picklable instance, known kind).
* :func:`check_reader` / :func:`check_writer`: the same for readers and writers.
* :func:`run_step_on_arrays`: run any step on an in-memory stack with the real engine
  (serial executor), returning the output slices: no files to manage in unit tests.
* :mod:`stack3d_core.testing.synth`: synthetic FIB-SEM-like stacks with ground truth.
* :mod:`stack3d_core.testing.pystack3d`: running PyStack3D side by side (its own
  interpreter, in a subprocess) for compatibility tests and benchmarks.
* pytest fixtures (entry point ``pytest11``, module
  :mod:`stack3d_core.testing.pytest_plugin`): ``stack3d_host``, ``synthetic_stack``,
  ``synthetic_project``.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ..config.strict import field_doc, resolved_fields, structure_table, unstructure
from ..registry import NAME_RE
from ..stackio import StackMeta, StackReader, StackWriter
from ..step import Step, StepContext, StepKind

__all__ = ["ArrayReader", "MemoryWriter", "check_reader", "check_step", "check_writer", "run_step_on_arrays"]


def _is_frozen(cls: type) -> bool:
    """Whether instances of the attrs class ``cls`` refuse attribute assignment."""
    return getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"


def _check_options_class(owner: str, cls: Any, require_docs: bool) -> None:
    assert attrs.has(cls), f"{owner}: Params/Options must be an attrs class, got {cls!r}"
    assert _is_frozen(cls), f"{owner}: Params/Options must be frozen (@attrs.frozen)"
    fields = resolved_fields(cls)
    if require_docs:
        undocumented = [f.name for f in fields if not field_doc(f)]
        assert not undocumented, f"{owner}: document these parameters with metadata={{'doc': ...}}: {undocumented}"
    try:
        default = cls()
    except TypeError:
        return  # required parameters: nothing to round-trip without values
    rebuilt, issues = structure_table(cls, unstructure(default), owner)
    assert not issues, f"{owner}: defaults do not round-trip through the TOML converter: {[str(i) for i in issues]}"
    assert rebuilt == default, f"{owner}: defaults changed after a round trip: {default!r} -> {rebuilt!r}"
    _assert_pickles(owner, default, "Params")


def _assert_pickles(owner: str, obj: Any, what: str) -> None:
    try:
        clone = pickle.loads(pickle.dumps(obj))
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{owner}: {what} cannot be pickled (define classes at module level): {exc}") from exc
    assert clone == obj, f"{owner}: {what} changed after pickling: {obj!r} -> {clone!r}"


def check_step(step_cls: type[Step], *, require_docs: bool = True) -> None:
    """Assert that ``step_cls`` honours the step contract; raises AssertionError saying what
    is wrong. Call it in your plugin's tests."""
    assert isinstance(step_cls, type) and issubclass(step_cls, Step), f"{step_cls!r} is not a Step subclass"
    name = getattr(step_cls, "name", "")
    assert isinstance(name, str) and NAME_RE.match(name), f"{step_cls.__name__}: invalid name {name!r}"
    assert step_cls.description, f"{name}: set a one-line description"
    assert isinstance(step_cls.kind, StepKind), f"{name}: kind must be a StepKind"
    assert step_cls.channels in ("all", "first"), f"{name}: channels must be 'all' or 'first'"
    assert hasattr(step_cls, "Params"), f"{name}: define a Params attrs class"
    _check_options_class(name, step_cls.Params, require_docs)
    overridden = {m for m in ("measure", "measure_pair", "apply", "apply_job") if getattr(step_cls, m) is not getattr(Step, m)}
    if step_cls.kind is StepKind.REDUCE:
        assert "measure" in overridden, f"{name}: REDUCE steps implement measure()"
    if step_cls.kind is StepKind.PAIRWISE:
        assert "measure_pair" in overridden, f"{name}: PAIRWISE steps implement measure_pair()"
    if step_cls.writes_images:
        assert overridden & {"apply", "apply_job"}, f"{name}: steps that write images implement apply() or apply_job()"
    try:
        instance = step_cls(step_cls.Params())
    except TypeError:
        return
    _assert_pickles(name, instance, "the step instance")


def check_reader(reader_cls: type[StackReader], *, require_docs: bool = True) -> None:
    """Assert that a reader class is registrable (name, description, Options)."""
    assert issubclass(reader_cls, StackReader), f"{reader_cls!r} is not a StackReader subclass"
    assert NAME_RE.match(reader_cls.name or ""), f"{reader_cls.__name__}: invalid name {reader_cls.name!r}"
    assert reader_cls.description, f"{reader_cls.name}: set a one-line description"
    _check_options_class(reader_cls.name, reader_cls.Options, require_docs)


def check_writer(writer_cls: type[StackWriter], *, require_docs: bool = True) -> None:
    """Assert that a writer class is registrable (name, description, Options)."""
    assert issubclass(writer_cls, StackWriter), f"{writer_cls!r} is not a StackWriter subclass"
    assert NAME_RE.match(writer_cls.name or ""), f"{writer_cls.__name__}: invalid name {writer_cls.name!r}"
    assert writer_cls.description, f"{writer_cls.name}: set a one-line description"
    _check_options_class(writer_cls.name, writer_cls.Options, require_docs)


class ArrayReader(StackReader):
    """A reader over an in-memory ``(n, rows, cols)`` array (one channel, ``"."``)."""

    name = "array"
    description = "in-memory numpy stack (tests)"

    def __init__(self, array: np.ndarray, names: Sequence[str] | None = None,
                 z_positions: Sequence[float] | None = None) -> None:
        super().__init__(Path("<memory>"))
        self.array = np.asarray(array)
        self._names = tuple(names) if names is not None else tuple(f"slice_{i:04d}.tif" for i in range(len(self.array)))
        self._z = tuple(float(z) for z in z_positions) if z_positions is not None else None

    def names(self, channel: str) -> tuple[str, ...]:
        return self._names

    def meta(self, channel: str) -> StackMeta:
        n, rows, cols = self.array.shape
        return StackMeta(n=n, shape=(rows, cols), dtype=self.array.dtype.name, z_positions=self._z)

    def read(self, channel: str, index: int) -> np.ndarray:
        return self.array[index]


class MemoryWriter(StackWriter):
    """A writer into an in-memory array (serial executor only: it is not shared across processes)."""

    name = "memory"
    description = "in-memory numpy stack (tests)"

    def __init__(self, path: Any, meta: StackMeta, names: Sequence[str], options: Any = None) -> None:
        super().__init__(Path("<memory>"), meta, names, options)
        self.array = np.zeros((meta.n, *meta.shape), dtype=meta.dtype)
        self.committed = False

    def write(self, index: int, image: np.ndarray, extras: Any) -> None:
        self.array[index] = image

    def commit(self) -> None:
        self.committed = True


def run_step_on_arrays(step: Step, stack: np.ndarray, *, workdir: Path,
                       z_positions: Sequence[float] | None = None,
                       names: Sequence[str] | None = None) -> tuple[np.ndarray, Any, np.ndarray]:
    """Run ``step`` on an in-memory stack with the real engine (serial executor).

    :param workdir: a folder for the step's side outputs (``outputs/``).
    :param names: slice names (default ``slice_0000.tif`` ...); steps that parse names need them.
    :returns: ``(output stack, state, stats)``; the output has the input's dtype.
    """
    from ..engine.executors import SerialExecutor
    from ..engine.runner import execute_step

    reader = ArrayReader(stack, names=names, z_positions=z_positions)
    outputs = Path(workdir) / step.name / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(step=step.name, channel=".", channels=(".",), project_dir=Path(workdir),
                      image_dir=outputs.parent, outputs_dir=outputs, names=reader.names("."),
                      meta=reader.meta("."), process_dir=Path(workdir), reader=reader)
    holder: dict[str, MemoryWriter] = {}

    def make_writer(meta: StackMeta, names: Sequence[str]) -> MemoryWriter:
        holder["w"] = MemoryWriter(None, meta, names)
        return holder["w"]

    outcome = execute_step(step, ctx, reader, make_writer, SerialExecutor(), 1)
    step.finish(ctx, outcome.state, outcome.stats if outcome.stats is not None else np.empty((0, 3, 3)))
    out = holder["w"].array if "w" in holder else np.empty((0,), dtype=stack.dtype)
    return out, outcome.state, outcome.stats
