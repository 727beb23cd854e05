"""stack3d's core: the plugin system, the step / reader / writer contracts, configuration,
the engine and the CLI. Depends only on pluggy, attrs, cattrs and numpy; the built-in
steps (:mod:`stack3d_steps`) and formats (:mod:`stack3d_io`) are plugins like any other.
"""

from __future__ import annotations

from .api import Stack3d, run
from .config.project import ProjectConfig, load_config, parse_config
from .engine.pipeline import RunResult
from .errors import (
    ConfigError,
    ConfigIssue,
    DuplicateNameError,
    InputError,
    PluginLoadError,
    Stack3dError,
    StepError,
    UnknownNameError,
)
from .plugin import hookimpl
from .plugin.host import PluginHost, get_host
from .progress import ProgressEvent
from .stackio import NoOptions, StackMeta, StackReader, StackWriter, SubsetReader
from .step import SliceJob, Step, StepContext, StepKind

try:
    from importlib.metadata import version as _version

    __version__ = _version("stack3d")
except Exception:  # noqa: BLE001 - running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "DuplicateNameError",
    "InputError",
    "NoOptions",
    "PluginHost",
    "PluginLoadError",
    "ProgressEvent",
    "ProjectConfig",
    "RunResult",
    "SliceJob",
    "Stack3d",
    "Stack3dError",
    "StackMeta",
    "StackReader",
    "StackWriter",
    "Step",
    "StepContext",
    "StepError",
    "StepKind",
    "SubsetReader",
    "UnknownNameError",
    "__version__",
    "get_host",
    "hookimpl",
    "load_config",
    "parse_config",
    "run",
]
