"""The Markdown report of ``benchmarks/speed.py`` (tables only: no measurement here)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from _speed_project import Size
from _speed_runners import VARIANTS, ToolRun

__all__ = ["SizeResult", "render"]

SCALING = (("stack3d", "stack3d"), ("pystack3d", "PyStack3D"))

TOOLS = (*((name, label) for name, (label, _) in VARIANTS.items()), ("pystack3d", "PyStack3D"))


@dataclass
class SizeResult:
    """Everything measured on one size."""

    size: Size
    steps: list[str]
    runs: dict[str, list[ToolRun]] = field(default_factory=dict)
    baseline: ToolRun | None = None
    quality: dict[str, dict[str, Any] | str] = field(default_factory=dict)
    params_text: str = ""
    synth_seconds: float = float("nan")
    skipped: str = ""


def _median(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def _s(x: float) -> str:
    if math.isnan(x):
        return "-"
    if x < 1:
        return f"{x:.3f}"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return "-"
    r = a / b
    return f"{r:.2f} ({b / a:.1f}x faster)" if b / a >= 1.1 else f"{r:.2f}"


def _mb(runs: list[ToolRun]) -> str:
    ok = [r for r in runs if r.ok]
    if not ok:
        return "-"
    driver = _median([r.self_mb for r in ok])
    worker = _median([r.children_mb for r in ok])
    return f"{driver:.0f} / {worker:.0f}" if worker >= 1 else f"{driver:.0f} / -"


def _cell(runs: list[ToolRun], value: float) -> str:
    if runs and not any(r.ok for r in runs):
        return "failed"
    return _s(value)


def _time_table(res: SizeResult, nproc: int) -> list[str]:
    tools = [(t, label) for t, label in TOOLS if res.runs.get(t)]
    meds: dict[str, dict[str, float]] = {}
    for tool, _ in tools:
        ok = [r for r in res.runs[tool] if r.ok]
        m = {step: _median([r.steps.get(step, float("nan")) for r in ok]) for step in res.steps}
        m["sum"] = _median([sum(r.steps.values()) for r in ok])
        m["wall"] = _median([r.wall for r in ok])
        meds[tool] = m
    head = ["", *(f"{label} (s)" for _, label in tools)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in [*res.steps, "sum", "wall"]:
        label = {"sum": "sum of the steps",
                 "wall": "**end to end** (whole process: start, imports, steps)"}.get(key, key)
        lines.append(f"| {label} | " + " | ".join(_cell(res.runs[t], meds[t][key]) for t, _ in tools) + " |")
    base = res.baseline
    lines += ["", "| run | end to end (s) | against PyStack3D | peak RSS (MB): driver / largest worker |",
              "|---|---|---|---|"]
    ref = meds.get("pystack3d", {}).get("wall", float("nan"))
    for tool, label in tools:
        lines.append(f"| {label} | {_cell(res.runs[tool], meds[tool]['wall'])} | "
                     f"{_ratio(meds[tool]['wall'], ref) if tool != 'pystack3d' else '-'} | {_mb(res.runs[tool])} |")
    if base is not None and base.ok:
        d = base.data
        mib = d["bytes"] / 2**20
        rows = [("tifffile alone: read every slice", d["read"]),
                ("tifffile alone: read + write every slice, serial", d["serial"])]
        if "threads" in d:
            rows.append((f"tifffile alone: read + write every slice, {nproc} threads", d["threads"]))
        passes = sum(1 for s in res.steps if s != "registration_calculation")
        best = d["threads"] if nproc > 1 and "threads" in d else d["serial"]
        for label, sec in rows:
            lines.append(f"| {label} ({mib / sec:.0f} MiB/s) | {_s(sec)} | - | |")
        lines.append(f"| throughput floor of a tool storing every step: {passes} read + write passes "
                     f"({'threads' if nproc > 1 else 'serial'}) | {_s(passes * best)} | - | |")
    elif base is not None:
        lines.append("| tifffile alone | failed | - | |")
    return lines


def _q(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _quality_table(res: SizeResult) -> list[str]:
    cols = [("input", "input (vs its own clean slice)"), *TOOLS]
    cols = [(k, label) for k, label in cols if k in res.quality]
    if not cols:
        return []
    q = res.quality
    rows: list[tuple[str, Any]] = [
        ("evaluated slices / output shape (slices, rows, cols)",
         lambda d: f"{d['slices']} / {tuple(d['shape'])}"),
        ("RMS error vs truth (gray levels; no intensity fit, one offset for the whole stack)",
         lambda d: _q(d["rms"], ".0f")),
        ("correlation with truth", lambda d: _q(d["corr"], ".4f")),
        ("residual RMS after a per-slice gain + 2nd-order surface fit (gray levels)",
         lambda d: _q(d["residual_rms"], ".0f")),
        ("background residual: RMS of the fitted surface (% of full scale)",
         lambda d: _q(d["background_pct"], ".2f")),
        ("gain jump across the true jumps, mean / max (% of the gain)",
         lambda d: f"{_q(d['gain_jump_mean'] * 100, '.2f')} / {_q(d['gain_jump_max'] * 100, '.2f')}"),
        ("curtains left: projection on the true curtains (input ~ 1)", lambda d: _q(d["stripes_left"], ".3f")),
        ("registration error vs truth, RMS / max over slices (px)",
         lambda d: f"{_q(d['reg_rms'], '.3f')} / {_q(d['reg_max'], '.3f')}"),
    ]
    lines = ["| figure | " + " | ".join(label for _, label in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for label, get in rows:
        cells = [get(q[k]) if isinstance(q[k], dict) else "failed" for k, _ in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    errors = [f"- {k}: {v}" for k, v in q.items() if isinstance(v, str)]
    return lines + ([""] + errors if errors else [])


def _failures(res: SizeResult) -> list[str]:
    out = []
    for tool, label in (*TOOLS, ("tifffile", "tifffile")):
        runs = res.runs.get(tool, []) if tool != "tifffile" else ([res.baseline] if res.baseline else [])
        for i, r in enumerate(runs):
            if not r.ok:
                out += ["", f"**{label} failed** (run {i + 1} of {len(runs)}):", "", "```", r.error.strip(), "```"]
    return out


def _warnings(res: SizeResult) -> list[str]:
    out = []
    for tool, label in TOOLS:
        runs = [r for r in res.runs.get(tool, []) if r.ok]
        if not runs:
            continue
        found = list(runs[0].data.get("warnings", []))
        found += [line.strip() for line in runs[0].data.get("stderr", "").splitlines() if "Warning" in line]
        found = list(dict.fromkeys(found))[:6]
        if found:
            out += ["", f"{label} warnings (first run):", *[f"- `{w[:200]}`" for w in found]]
    return out


def _scaling(results: Sequence[SizeResult]) -> list[str]:
    rows, per_slice = [], {}
    for res in results:
        cells = []
        for tool, _ in SCALING:
            wall = _median([r.wall for r in res.runs.get(tool, []) if r.ok])
            per_slice[(res.size, tool)] = wall / res.size.n
            cells += [_s(wall), f"{wall / res.size.n:.3f}" if not math.isnan(wall) else "-"]
        mpx = res.size.rows * res.size.cols / 1e6
        rows.append(f"| {res.size.label} | {res.size.n} | {mpx:.2f} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    lines = ["| size | slices | Mpx / slice | stack3d end to end (s) | stack3d s / slice | PyStack3D end to end (s) | "
             "PyStack3D s / slice |", "|---|---|---|---|---|---|---|", *rows]
    by_shape: dict[tuple[int, int], list[Size]] = {}
    for res in results:
        by_shape.setdefault((res.size.rows, res.size.cols), []).append(res.size)
    for sizes in by_shape.values():
        if len(sizes) > 1:
            lo, hi = min(sizes, key=lambda s: s.n), max(sizes, key=lambda s: s.n)
            parts = []
            for tool, label in SCALING:
                a, b = per_slice.get((lo, tool), math.nan), per_slice.get((hi, tool), math.nan)
                if not (math.isnan(a) or math.isnan(b)):
                    parts.append(f"{label} {a:.3f} -> {b:.3f} s per slice (x{b / a:.2f})")
            if parts:
                lines += ["", f"From {lo.n} to {hi.n} slices of {lo.rows}x{lo.cols}: " + "; ".join(parts) + "."]
    return lines


def render(results: Sequence[SizeResult], header: dict[str, Any]) -> str:
    """The whole report: ``header`` holds ``command``, ``machine``, ``envs``, ``nproc``,
    ``repeat``, ``notes``, ``changes``."""
    m = header["machine"]
    lines = ["## Speed and scale: stack3d against PyStack3D 2026.2", "",
             "```", header["command"], "```", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, {m['os']}; load average at the start: "
             f"{m['load']}.", ""]
    for name, env in header["envs"].items():
        if env:
            pkgs = ", ".join(f"{k} {v}" for k, v in env.items() if k != "python")
            lines.append(f"- {name} environment: Python {env.get('python', '?')}; {pkgs}")
    lines += ["", f"Process count: {header['nproc']} (PyStack3D `nproc`; stack3d "
              + ("serial executor" if header["nproc"] == 1 else f"processes executor, {header['nproc']} workers")
              + f"). Times: median of {header['repeat']} runs, interleaved. Peak RSS: `VmHWM` of the tool's "
              "process (driver) and `getrusage` of its largest finished child (worker), medians.", ""]
    lines += header["notes"]
    for res in results:
        s = res.size
        lines += ["", f"### {s.n} slices of {s.rows}x{s.cols} uint16 ({s.nbytes / 2**20:.0f} MiB per copy)", ""]
        if res.skipped:
            lines.append(res.skipped)
            continue
        lines += _time_table(res, header["nproc"]) + _failures(res) + _warnings(res)
        quality = _quality_table(res)
        if quality:
            lines += ["", "Quality against the ground truth (first run of each tool):", "", *quality]
    scaling = _scaling([r for r in results if not r.skipped])
    if scaling:
        lines += ["", "### Cost against the number of slices (end to end)", "", *scaling]
    if results and results[0].params_text:
        lines += ["", f"The `params.toml` both tools ran ({results[0].size.label}):", "", "```toml",
                  results[0].params_text.strip(), "```"]
    return "\n".join(lines) + "\n"
