"""docs/plugins.md: the worked example is exactly what `stack3d new-plugin gamma` writes
(whose output test_plugin_distributions.py installs and tests)."""

from __future__ import annotations

import re
from pathlib import Path

from stack3d_core.cli.scaffold import scaffold

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def test_worked_example_files_are_the_scaffold(tmp_path: Path) -> None:
    blocks = re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```\n", DOC.read_text(), flags=re.S)
    assert {name for name, _ in blocks} >= {"pyproject.toml", "stack3d_gamma/step.py", "stack3d_gamma/plugin.py",
                                            "tests/test_gamma.py"}
    root = scaffold(tmp_path, "gamma", "step")
    for name, text in blocks:
        assert (root / name).read_text() == text, f"docs/plugins.md shows an outdated {name}: regenerate it"
