"""The observer: evaluates the output of the steps listed in ``[quality] follow``.

Hook ``stack3d_after_step`` (driver side, once per step and channel). Configuration comes
from the ``[quality]`` table of params.toml, i.e. the parameters of the ``quality`` step,
which the core validates strictly (unknown keys and bad values stop the run before any
image is read). The ``quality`` step itself does not have to be in ``process_steps``::

    process_steps = ["registration_calculation", "registration_transformation", "destriping"]

    [quality]
    follow = ["registration_transformation", "destriping"]
    observer_slices = 16        # at most 16 slices read per stack
    area = [20, 236, 20, 236]   # optional ROI, bottom-left origin

For each followed step it reads ``observer_slices // 2`` consecutive pairs evenly spaced
along the step's output (``context.output_reader``) and, with ``observer_input = true``,
along its input (``context.reader``), computes the step's metrics and writes into that
step's ``outputs/`` folder (``context.outputs_dir``):

* ``quality_<step>.csv``: ``stack`` (``input`` / ``output``), ``index, name, z``, metrics;
* ``quality_<step>.png``: the metrics of input and output along z.

It never fails the run: any error becomes a warning in the run record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from stack3d_core import StackReader, Step, StepContext

from .evaluate import MetricsTable, evaluate_stack, physical_unit, sample_pairs
from .step import QualityParams

__all__ = ["observe", "observer_params"]

log = logging.getLogger("stack3d.quality")

_CHECKED_RUNS: list[Mapping[str, Any]] = []
"""``project_params`` of the last runs whose ``follow`` list was checked (warn once per run;
the objects are held, so an identity test cannot be fooled by a recycled ``id``)."""


def observer_params(project_params: Mapping[str, Any]) -> tuple[QualityParams | None, list[str]]:
    """The ``[quality]`` table as :class:`QualityParams` (None when absent or without ``follow``)
    and the problems found (normally none: the core validated the table already)."""
    from stack3d_core.config.strict import structure_table

    raw = project_params.get("quality") if isinstance(project_params, Mapping) else None
    if not isinstance(raw, Mapping) or not raw.get("follow"):
        return None, []
    params, issues = structure_table(QualityParams, raw, "quality")
    return params, [str(i) for i in issues]


def _check_follow(params: QualityParams, context: StepContext) -> None:
    key = context.project_params
    if any(seen is key for seen in _CHECKED_RUNS):
        return
    _CHECKED_RUNS.append(key)
    del _CHECKED_RUNS[:-32]
    planned = context.project_params.get("process_steps") or []
    missing = [s for s in params.follow if s not in planned]
    if missing:
        context.warn(f"[quality] follow names {missing}, not in process_steps {list(planned)}: "
                     "they will not be evaluated")


def _evaluate(reader: StackReader, channel: str, params: QualityParams) -> tuple[MetricsTable, np.ndarray]:
    meta = reader.meta(channel)
    pairs = sample_pairs(meta.n, params.observer_slices)
    table, _ = evaluate_stack(lambda i: reader.read(channel, i), meta.n, reader.names(channel),
                              meta.z_positions, params, physical_unit(meta), pairs)
    return table, np.array(pairs)


def observe(step: Step, context: StepContext) -> None:
    """Evaluate ``step``'s output if ``[quality] follow`` names it (may raise; see the hook)."""
    params, issues = observer_params(context.project_params)
    if params is None:
        return
    if issues:
        context.warn(f"quality observer: [quality] is invalid, nothing evaluated: {'; '.join(issues)}")
        return
    _check_follow(params, context)
    if step.name not in params.follow or step.name == "quality":
        return
    if context.output_reader is None:
        context.warn(f"quality observer: step '{step.name}' writes no images; nothing to evaluate")
        return
    series: list[tuple[str, MetricsTable]] = []
    stacks = [("output", context.output_reader)]
    if params.observer_input and context.reader is not None:
        stacks.insert(0, ("input", context.reader))
    for label, reader in stacks:
        try:
            table, _ = _evaluate(reader, context.channel, params)
        except Exception as exc:  # noqa: BLE001 - one stack failing leaves the other
            context.warn(f"quality observer: could not evaluate the {label} of '{step.name}': "
                         f"{type(exc).__name__}: {exc}")
            continue
        series.append((label, table))
    if not series:
        return
    columns = list(dict.fromkeys(c for _, t in series for c in t.columns))
    text = []
    for k, (label, table) in enumerate(series):
        table.columns = columns
        lines = table.to_csv(lead=[("stack", label)]).splitlines(keepends=True)
        text.extend(lines if k == 0 else lines[1:])
    from stack3d_core.stepkit import write_text

    stem = f"quality_{step.name}"
    write_text(context.outputs_dir / f"{stem}.csv", "".join(text))
    label = step.name if context.channel == "." else f"{step.name} [{context.channel}]"
    try:
        from .plots import plot_metrics

        plot_metrics(series, context.outputs_dir / f"{stem}.png", f"quality of {label}: input vs output",
                     context.meta.unit)
    except Exception as exc:  # noqa: BLE001
        context.warn(f"quality observer: could not draw {stem}.png: {type(exc).__name__}: {exc}")
    context.log.info("quality of %s: %s", label, _summary(series))


def _summary(series: list[tuple[str, MetricsTable]]) -> str:
    parts = []
    for col in ("ncc", "nmi", "frc_1_7_px", "snr_y"):
        values = []
        for label, table in series:
            _, vals = table.column(col)
            if vals.size:
                values.append(f"{label} {float(np.median(vals)):.4g}")
        if values:
            parts.append(f"median {col}: " + " -> ".join(values))
    return "; ".join(parts) or "no finite metric"
