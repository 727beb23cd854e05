"""Every hook is documented where it is declared, in docs/plugins.md, and has a test
named ``test_hook_<hook name>`` (the datasette rule)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from stack3d_core.plugin import spec

REPO = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, fn in vars(spec).items() if name.startswith("stack3d_") and callable(fn))


def test_there_are_hooks() -> None:
    assert {"stack3d_register_steps", "stack3d_after_step"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_where_declared(name: str) -> None:
    doc = inspect.getdoc(getattr(spec, name)) or ""
    assert len(doc) > 80, f"{name} needs a real docstring in stack3d_core/plugin/spec.py"
    assert "versionadded" in doc


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_in_the_plugin_docs(name: str) -> None:
    params = ", ".join(inspect.signature(getattr(spec, name)).parameters)
    heading = f"### `{name}({params})`"
    assert heading in (REPO / "docs" / "plugins.md").read_text(), f"docs/plugins.md lacks {heading}"


def _test_names() -> set[str]:
    names = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    return names


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    assert f"test_hook_{name}" in _test_names(), f"write a test named test_hook_{name}"
