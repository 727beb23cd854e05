"""Running PyStack3D side by side with stack3d, for compatibility tests and benchmarks.

PyStack3D is never a dependency of stack3d: it runs in a Python interpreter of its own,
named by ``STACK3D_PYSTACK3D_PYTHON`` (or this interpreter when ``pystack3d`` happens to
be importable here), in a subprocess. Standard library only.

* :func:`find_pystack3d_python`: the interpreter to use, or ``None``;
* :func:`require_pystack3d`: the same in a test module, which is skipped without one;
* :func:`run_pystack3d`: ``Stack3d(folder).eval(process_steps=...)`` in that interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ENV_PYSTACK3D_PYTHON", "SKIP_REASON", "find_pystack3d_python", "require_pystack3d", "run_pystack3d"]

ENV_PYSTACK3D_PYTHON = "STACK3D_PYSTACK3D_PYTHON"
"""Environment variable naming a Python interpreter that has PyStack3D installed."""

SKIP_REASON = f"PyStack3D is not installed (set {ENV_PYSTACK3D_PYTHON} to an interpreter that has it)"
"""Why a compatibility test is skipped when :func:`find_pystack3d_python` finds nothing."""

_RUNNER = """\
import json, sys
if sys.argv[4] == "1":
    import warnings
    warnings.simplefilter("ignore")
from pystack3d import Stack3d
Stack3d(sys.argv[1]).eval(process_steps=json.loads(sys.argv[2]), nproc=int(sys.argv[3]), show_pbar=False)
"""


def find_pystack3d_python(explicit: str | None = None, *, this_interpreter: bool = True,
                          fallbacks: Sequence[str] = (), must_exist: bool = False) -> str | None:
    """The Python interpreter to run PyStack3D with, or ``None`` when there is none.

    The first non-empty candidate of ``explicit``, ``$STACK3D_PYSTACK3D_PYTHON`` and
    ``fallbacks`` is returned; failing that, ``sys.executable`` when ``this_interpreter``
    and ``pystack3d`` is importable here.

    :param explicit: an interpreter given by the caller (a ``--pystack3d`` option).
    :param this_interpreter: fall back to this interpreter if it has PyStack3D (the
        benchmarks turn it off: they only run an interpreter they were given).
    :param fallbacks: further paths to try after the environment variable.
    :param must_exist: skip the candidates that are not an existing path.
    """
    for candidate in (explicit, os.environ.get(ENV_PYSTACK3D_PYTHON), *fallbacks):
        if candidate and (not must_exist or Path(candidate).exists()):
            return candidate
    if this_interpreter and importlib.util.find_spec("pystack3d") is not None:
        return sys.executable
    return None


def require_pystack3d(explicit: str | None = None) -> str:
    """The PyStack3D interpreter (:func:`find_pystack3d_python`) for a test module.

    Call it at module level: without an interpreter the whole module is skipped
    (``pytest.skip(SKIP_REASON, allow_module_level=True)``).
    """
    python = find_pystack3d_python(explicit)
    if python is None:
        import pytest

        pytest.skip(SKIP_REASON, allow_module_level=True)
    return python


def run_pystack3d(folder: str | os.PathLike[str], steps: Sequence[str], nproc: int = 1, *,
                  python: str | None = None, timeout: float | None = 600, check: bool = True,
                  ignore_warnings: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``Stack3d(folder).eval(process_steps=steps, nproc=nproc, show_pbar=False)`` in
    PyStack3D's interpreter; stdout and stderr are captured (text).

    :param folder: the PyStack3D project folder (slices and ``params.toml``).
    :param steps: the ``process_steps`` to run.
    :param python: the interpreter (default: :func:`find_pystack3d_python`).
    :param timeout: seconds before :class:`subprocess.TimeoutExpired` (``None``: no limit).
    :param check: raise :class:`AssertionError`, with stdout and stderr, when PyStack3D
        fails; ``False`` returns the failed process for the caller to look at.
    :param ignore_warnings: ``warnings.simplefilter("ignore")`` before importing PyStack3D.
    :raises RuntimeError: no interpreter was given and none is found.
    """
    if python is None:
        python = find_pystack3d_python()
        if python is None:
            raise RuntimeError(SKIP_REASON)
    args = [str(folder), json.dumps(list(steps)), str(nproc), "1" if ignore_warnings else "0"]
    proc = subprocess.run([python, "-c", _RUNNER, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"PyStack3D failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
