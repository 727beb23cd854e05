"""The step contract: what a processing step declares and which methods the engine calls.

A step is a class with a frozen attrs ``Params`` class and a ``kind`` that says how it
depends on the data. The kind lets one engine run any step on any executor (in-process,
local processes, a Dask cluster) while pixels stay in the workers and only small state
(matrices, coefficients, histograms) travels through the driver:

* :attr:`StepKind.MAP`: every output slice depends on one input slice.
  ``combine(ctx, [])`` runs once on the driver (read a matrix file, check the shape...),
  then ``apply`` runs per slice in the workers.
* :attr:`StepKind.REDUCE`: *measure → combine → apply*. ``measure`` runs per slice in the
  workers and returns something small (a histogram, subsampled points); ``combine``
  turns the list of measures into a state on the driver (a global fit, a reference
  histogram); ``apply`` uses it per slice.
* :attr:`StepKind.PAIRWISE`: *neighbour pairs → combine → apply*. ``measure_pair`` runs
  for every pair of consecutive slices ``(i-1, i)``; ``combine`` gets the pair results in
  order (e.g. composes transforms); ``apply`` runs per output slice.

Output slices need not map one-to-one to input slices: :meth:`Step.plan` returns the
list of :class:`SliceJob` (name, source indices), and :meth:`Step.apply_job` receives the
source images (z-resampling interpolates between two neighbours this way).

Steps return floating-point images; the engine casts them back to the input dtype
(rounding and clipping) and records per-slice statistics.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
import numpy as np

from .stackio import StackMeta, StackReader

__all__ = ["SliceJob", "Step", "StepContext", "StepKind"]


class StepKind(enum.Enum):
    """How a step depends on the data (see the module docstring)."""

    MAP = "map"
    REDUCE = "reduce"
    PAIRWISE = "pairwise"


@attrs.frozen
class SliceJob:
    """One output slice: where it goes and which input slices it is computed from.

    :param index: position in the output stack (0-based).
    :param name: output slice name (the file name for TIFF folders).
    :param sources: input slice indices handed to :meth:`Step.apply_job`, in this order.
    :param extras_from: input index whose per-slice extras (e.g. private TIFF tags) the
        output carries.
    :param data: small per-job data for the step (e.g. an interpolation weight).
    """

    index: int
    name: str
    sources: tuple[int, ...]
    extras_from: int
    data: Any = None


@attrs.define(kw_only=True)
class StepContext:
    """What a step sees on the driver (in ``combine``, ``plan``, ``output_meta``, ``finish``).

    :param step: the step's registry name.
    :param channel: channel being processed (``"."`` for a single-channel project).
    :param channels: every channel of the run, first one first.
    :param project_dir: the project folder (holds ``process/``).
    :param image_dir: where this step's slices of ``channel`` are written
        (``process/<step>/<channel>``).
    :param outputs_dir: where side outputs go (``<image_dir>/outputs``, or
        ``process/<step>/outputs`` for steps that write no images). Already created.
    :param names: input slice names, in stack order.
    :param meta: input stack metadata (shape, dtype, pixel size, z positions).
    :param process_dir: ``project_dir / "process"``; other steps' outputs live below it.
    :param log: a logger for messages meant for the user.
    """

    step: str
    channel: str
    channels: tuple[str, ...]
    project_dir: Path
    image_dir: Path
    outputs_dir: Path
    names: tuple[str, ...]
    meta: StackMeta
    process_dir: Path
    log: logging.Logger = attrs.field(factory=lambda: logging.getLogger("stack3d"))
    warnings: list[str] = attrs.field(factory=list)
    device: str = "auto"
    """``[engine] device``: ``"auto"``, ``"cpu"`` or ``"gpu"``, for steps with a GPU path."""
    project_params: Mapping[str, Any] = attrs.field(factory=dict)
    """The project's parameters as read from its TOML (read only), so that observer plugins
    can read a table of their own (e.g. ``[quality] follow = [...]``)."""
    reader: StackReader | None = None
    """The step's input (driver side; e.g. for plots). ``None`` outside a pipeline run."""
    output_reader: StackReader | None = None
    """The step's output images, set once they are written (for ``stack3d_after_step``).
    For a step fused into a later pass (``[engine] keep_intermediates = false``) this reader
    recomputes each slice it is asked for: read a few slices, not the whole stack."""
    input_planes: Mapping[str, Any] | None = None
    """Cut planes of the input gathered by a fused pass (``None`` when not available):
    ``{"xy": middle slice, "xz": (k, cols), "yz": (k, rows), "z_index": (k,), "row", "col"}``,
    the middle row / column of up to 64 evenly spaced slices. Observers use them instead of
    reading the stack again."""
    output_planes: Mapping[str, Any] | None = None
    """Cut planes of the output gathered by a fused pass (same format), or ``None``."""

    def warn(self, message: str) -> None:
        """Report a warning to the user; it is also kept in the run record."""
        self.warnings.append(message)
        self.log.warning("%s [%s]: %s", self.step, self.channel, message)

    def step_dir(self, step: str) -> Path:
        """Folder of another step's results (``process/<step>``), e.g. to read its matrices."""
        return self.process_dir / step


class Step:
    """Base class of every step. Subclass one of the kinds' methods and register the class
    with the ``stack3d_register_steps`` hook.

    Class attributes to set:

    * ``name``: registry and TOML table name, ``^[a-z][a-z0-9_]*$``.
    * ``description``: one line shown by ``stack3d steps``.
    * ``Params``: a frozen attrs class (``@attrs.frozen(kw_only=True)``); document each
      field with ``metadata={"doc": ..., "unit": ...}``. Cross-field checks go in a
      ``validate(self) -> list[str]`` method returning messages (empty when fine).
    * ``kind``: a :class:`StepKind`.
    * ``channels``: ``"all"`` (default) or ``"first"``: process only ``channels[0]``
      (PyStack3D's ``registration_calculation``).
    * ``writes_images``: ``False`` for steps that only compute side outputs. The next step
      then reads the same images this step read.

    An instance holds only ``params``; it is pickled to workers together with the state
    returned by :meth:`combine`, so both must be picklable.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type]
    kind: ClassVar[StepKind] = StepKind.MAP
    channels: ClassVar[Literal["all", "first"]] = "all"
    writes_images: ClassVar[bool] = True
    state_from: ClassVar[Literal["each", "first"]] = "each"
    """``"first"``: measure and combine on ``channels[0]`` only, and apply that state to every
    channel (a registration computed on one detector, applied to all)."""
    recompute: ClassVar[bool] = True
    """Whether the engine may fuse this step into later passes, recomputing its slices
    instead of storing them (``[engine] keep_intermediates = false``). Set ``False`` for
    steps whose ``apply`` costs much more than a read and a write (destriping): their
    output is then stored when a later step needs more than one pass over it."""
    measure_passes: ClassVar[int] = 1
    """REDUCE steps: number of measure passes. With more than one, pass ``p`` calls
    ``measure(image, index, previous)`` where ``previous`` is what
    :meth:`combine_pass` returned for pass ``p - 1`` (e.g. a global min/max before histograms)."""
    pair_offsets: ClassVar[tuple[int, ...]] = (1,)
    """PAIRWISE steps: slice distances of the measured pairs. The default ``(1,)`` gives
    neighbour pairs and ``combine`` a list; with other offsets ``measure_pair`` is called
    for every pair ``(i - d, i)`` and ``combine`` gets a dict ``{(i - d, i): result}``.
    May be a property computed from ``self.params``."""

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params == self.params  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.params))

    # -- worker side -----------------------------------------------------------------------
    def measure(self, image: np.ndarray, index: int, previous: Any = None) -> Any:
        """REDUCE steps: a small summary of input slice ``index`` (runs in a worker).
        ``previous`` is the result of :meth:`combine_pass` when ``measure_passes > 1``."""
        raise NotImplementedError(f"{type(self).__name__} is a REDUCE step without measure()")

    def measure_slices(self, ctx: StepContext) -> Sequence[int] | None:
        """REDUCE steps: the input slices the measure passes need (driver side); ``None``
        (the default) means all. The others are not read, and their entry in ``measures``
        is ``None`` (e.g. a 3D fit sampling every k-th slice)."""
        return None

    def combine_pass(self, ctx: StepContext, pass_index: int, measures: Sequence[Any]) -> Any:
        """REDUCE steps with ``measure_passes > 1``: combine the measures of an
        intermediate pass into what the next pass's :meth:`measure` receives (driver side)."""
        raise NotImplementedError(f"{type(self).__name__} has measure_passes > 1 without combine_pass()")

    def measure_pair(self, previous: np.ndarray, current: np.ndarray, index: int) -> Any:
        """PAIRWISE steps: a small result for the pair (``index - 1``, ``index``)."""
        raise NotImplementedError(f"{type(self).__name__} is a PAIRWISE step without measure_pair()")

    def apply(self, image: np.ndarray, index: int, state: Any) -> np.ndarray:
        """Process input slice ``index`` (one-to-one steps). Returns a 2D float array; the
        engine rounds and clips it to the input dtype."""
        raise NotImplementedError(f"{type(self).__name__} does not implement apply()")

    def apply_job(self, images: Sequence[np.ndarray], job: SliceJob, state: Any) -> np.ndarray:
        """Compute output slice ``job`` from ``images`` (the inputs ``job.sources``, in order).

        The default serves one-to-one steps by calling :meth:`apply`.
        """
        return self.apply(images[0], job.sources[0], state)

    # -- driver side -----------------------------------------------------------------------
    def prepare(self, ctx: StepContext) -> None:
        """Check the parameters against the input (``ctx.meta``: shape, dtype, n, z) before
        any slice is read; raise ``ValueError`` naming the key to refuse. Default: nothing."""

    def combine(self, ctx: StepContext, measures: Sequence[Any]) -> Any:
        """Turn the measures into the state that :meth:`apply` receives.

        ``measures`` is ``[]`` for MAP steps, ``measures[i]`` is slice ``i``'s measure for
        REDUCE steps, and ``measures[i - 1]`` is pair ``(i - 1, i)``'s result for PAIRWISE
        steps. Write the step's numeric side outputs (matrices, coefficients) here or in
        :meth:`finish`. The default returns ``None``.
        """
        return None

    def plan(self, ctx: StepContext, state: Any) -> list[SliceJob]:
        """The output slices to produce. Default: one output per input, same names."""
        return [SliceJob(i, name, (i,), i) for i, name in enumerate(ctx.names)]

    def output_meta(self, ctx: StepContext, state: Any, jobs: Sequence[SliceJob]) -> StackMeta:
        """Metadata of the output stack. Default: the input's, with ``n = len(jobs)`` and
        z positions carried from each job's ``extras_from`` slice. Steps that change the
        slice shape (cropping) or the z grid (resampling) override this."""
        z = ctx.meta.z_positions
        z_out = tuple(z[j.extras_from] for j in jobs) if z is not None else None
        return ctx.meta.evolve(n=len(jobs), z_positions=z_out)

    def finish(self, ctx: StepContext, state: Any, stats: np.ndarray) -> None:
        """Write side outputs once every slice is done. ``stats`` is the ``(n, 3, 3)``
        array also saved as ``outputs/stats.npy`` (input / raw output / cast output ×
        min / max / mean)."""
