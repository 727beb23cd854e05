"""The speed benchmark script runs as the README and ``benchmarks/RESULTS.md`` say (on a
tiny stack): it writes its Markdown report with the per-step table, the end-to-end table,
the tifffile baseline and the quality figures of the runs it scores.

Timings are not checked here (they belong to the benchmark's own runs); this guards the
script against breaking while the engine changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_speed_benchmark_writes_its_report(tmp_path: Path) -> None:
    tools = ["stack3d", "stack3d-stored-noplots", "stack3d-pc", "tifffile"]
    python = os.environ.get("STACK3D_PYSTACK3D_PYTHON")
    if python:
        tools.append("pystack3d")
    out = tmp_path / "report.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--size", "6x96x96", "--repeat", "1",
           "--tools", ",".join(tools), "--quality-slices", "3", "--workdir", str(tmp_path / "work"),
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "6 slices of 96x96 uint16" in text
    for label in ("stack3d, phase_correlation", "stack3d, keep_intermediates, without the plots plugin",
                  "tifffile alone: read + write every slice", "**end to end**", "RMS error vs truth",
                  "registration error vs truth"):
        assert label in text, label
    for step in ("bkg_removal", "registration_calculation", "destriping", "cropping_final"):
        assert f"| {step} |" in text, step
    assert "FAILED" not in text and "quality figures failed" not in text
    if python:
        assert "PyStack3D" in text
    assert not any((tmp_path / "work").iterdir())  # the temporary projects are removed
