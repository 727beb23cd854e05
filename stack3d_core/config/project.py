"""The project configuration: PyStack3D's ``params.toml``, read unchanged, plus three
optional tables of stack3d's own.

PyStack3D keys (top level): ``ind_min``, ``ind_max``, ``channels``, ``nproc``,
``process_steps``, ``history``, the project folder under any of its names
(``project_dir``, ``dirname``, ``input_dirname``), and one ``[<step>]`` table per step.

stack3d's tables:

* ``[engine]``: ``executor`` ("serial" | "processes" | "dask"), ``workers``,
  ``scheduler`` (a Dask scheduler address), ``device`` ("auto" | "cpu" | "gpu").
* ``[input]``: ``reader`` (a registered reader name; picked from the path when absent),
  ``path`` (relative to the project folder; default the project folder), ``pixel_size``
  (``[x, y]`` or ``[x, y, z]`` in µm, overriding what any reader finds), and the reader's
  own options.
* ``[output]``: ``writer``, ``path`` and the writer's options: the final stack is also
  exported there (the ``process/`` folders are always written).

:func:`parse_config` validates everything before any image is read and raises one
:class:`~stack3d_core.errors.ConfigError` listing every problem with its key path.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ..errors import ConfigError, ConfigIssue
from ..registry import suggest
from .strict import issues_from_exception, strict_structure, structure_table

if TYPE_CHECKING:
    from ..plugin.host import PluginHost
    from ..step import Step

__all__ = ["EngineConfig", "IOConfig", "ProjectConfig", "load_config", "parse_config"]

PROJECT_DIR_KEYS = ("project_dir", "dirname", "input_dirname")
PYSTACK3D_STEPS = (
    "cropping", "bkg_removal", "intensity_rescaling", "intensity_rescaling_area",
    "registration_calculation", "registration_transformation", "destriping", "resampling",
    "cropping_final",
)


@attrs.frozen(kw_only=True)
class EngineConfig:
    """The ``[engine]`` table: where the work runs."""

    executor: Literal["serial", "processes", "dask"] | None = attrs.field(
        default=None,
        metadata={"doc": "serial (in-process), processes (local worker processes) or dask; "
                  "default: serial when nproc is 1, else processes"},
    )
    workers: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1)),
        metadata={"doc": "number of worker processes (default: nproc)"},
    )
    scheduler: str | None = attrs.field(
        default=None, metadata={"doc": "address of a running Dask scheduler, e.g. tcp://host:8786"},
    )
    device: Literal["auto", "cpu", "gpu"] = attrs.field(
        default="auto", metadata={"doc": "compute device for steps that support a GPU"},
    )
    intermediate: str = attrs.field(
        default="tiff_folder",
        metadata={"doc": "format of the process/<step> images: tiff_folder (PyStack3D's layout) or any "
                  "format installed as both a reader and a writer, e.g. ome_zarr (one chunk per slice)"},
    )

    keep_intermediates: bool = attrs.field(
        default=False,
        metadata={"doc": "write every step's images to process/<step>/<channel> (PyStack3D's layout). "
                  "false: only the last step of the run (and steps too costly to recompute) store their "
                  "images; the others are fused into later passes. Every step's outputs/ is written either way"},
    )

    def validate(self) -> list[str]:
        if self.scheduler is not None and self.executor not in (None, "dask"):
            return [f"scheduler is only used with executor = \"dask\" (executor is {self.executor!r})"]
        return []


@attrs.frozen(kw_only=True)
class IOConfig:
    """The ``[input]`` or ``[output]`` table after validation."""

    name: str | None = None
    """Reader or writer name (``None``: picked from the path)."""
    path: Path | None = None
    """Absolute path (``None``: the default for the table)."""
    options: Any = None
    """The reader's or writer's validated ``Options`` instance."""
    pixel_size: tuple[float, ...] | None = None
    """``[input] pixel_size``: ``[x, y]`` or ``[x, y, z]`` in µm, overriding every reader."""


@attrs.frozen(kw_only=True)
class ProjectConfig:
    """A validated project. Step parameters are ready-made step instances."""

    project_dir: Path
    source: Path | None
    ind_min: int = 0
    ind_max: int = 99999
    channels: tuple[str, ...] = (".",)
    nproc: int = 1
    process_steps: tuple[str, ...] = ()
    history: tuple[str, ...] = ()
    steps: Mapping[str, Step] = attrs.field(factory=dict)
    engine: EngineConfig = attrs.field(factory=EngineConfig)
    input: IOConfig = attrs.field(factory=IOConfig)
    output: IOConfig = attrs.field(factory=IOConfig)
    warnings: tuple[str, ...] = ()
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    @property
    def executor(self) -> str:
        """The executor to use: ``[engine] executor`` or derived from ``nproc``."""
        if self.engine.executor is not None:
            return self.engine.executor
        if self.engine.scheduler is not None:
            return "dask"
        return "serial" if self.nproc <= 1 else "processes"

    @property
    def workers(self) -> int:
        return self.engine.workers or self.nproc

    @property
    def input_path(self) -> Path:
        return self.input.path or self.project_dir


_TOP_TYPES: dict[str, Any] = {
    "ind_min": int, "ind_max": int, "nproc": int,
    "channels": list[str], "process_steps": list[str], "history": list[str],
    **{k: str for k in PROJECT_DIR_KEYS},
}


def load_config(path: str | Path, host: PluginHost, *, project_dir: Path | None = None) -> ProjectConfig:
    """Read and validate a ``params.toml`` file.

    :param project_dir: overrides the folder named in the file (PyStack3D ignores that key
        when given a folder); default: the key if present, else the file's folder.
    :raises ConfigError: unreadable file, TOML syntax error, or any invalid key.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read: {exc.strerror or exc}")], path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue("", f"not valid TOML: {exc}")], path) from exc
    return parse_config(data, host, source=path, project_dir=project_dir)


def parse_config(
    data: Mapping[str, Any],
    host: PluginHost,
    *,
    source: Path | None = None,
    project_dir: Path | None = None,
) -> ProjectConfig:
    """Validate a parsed ``params.toml`` (see the module docstring)."""
    issues: list[ConfigIssue] = []
    warnings: list[str] = []
    top: dict[str, Any] = {}
    step_tables: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOP_TYPES:
            try:
                top[key] = strict_structure(value, _TOP_TYPES[key])
            except Exception as exc:  # noqa: BLE001
                issues.extend(issues_from_exception(exc, key, _TOP_TYPES[key]))
        elif key in ("engine", "input", "output"):
            continue
        elif key in host.steps:
            step_tables[key] = value
        elif isinstance(value, Mapping):
            requested = key in data.get("process_steps", []) if isinstance(data.get("process_steps"), list) else False
            hint = suggest(key, [*host.steps.names(), "engine", "input", "output"])
            if requested:
                continue  # reported once, under process_steps
            if key not in PYSTACK3D_STEPS:
                issues.append(ConfigIssue(key, f"unknown table [{key}]{hint}; installed steps: "
                                               f"{', '.join(host.steps.names()) or 'none'}"))
            else:
                warnings.append(f"table [{key}] is for a step that is not installed; it was not checked")
        else:
            issues.append(ConfigIssue(key, f"unknown key{suggest(key, list(_TOP_TYPES))}"))

    ind_min, ind_max = top.get("ind_min", 0), top.get("ind_max", 99999)
    if ind_min < 0:
        issues.append(ConfigIssue("ind_min", f"must be >= 0 (got {ind_min})"))
    if ind_max < ind_min:
        issues.append(ConfigIssue("ind_max", f"must be >= ind_min ({ind_min}), got {ind_max}"))
    if top.get("nproc", 1) < 1:
        issues.append(ConfigIssue("nproc", f"must be >= 1 (got {top['nproc']})"))
    channels = tuple(top.get("channels") or ["."])
    if len(set(channels)) != len(channels):
        issues.append(ConfigIssue("channels", f"channel names repeat: {list(channels)}"))
    for i, ch in enumerate(channels):
        if ch in ("", "..") or Path(ch).is_absolute() or ".." in Path(ch).parts:
            issues.append(ConfigIssue(f"channels[{i}]", f"{ch!r} is not a subfolder name"))

    process_steps = tuple(top.get("process_steps", ()))
    seen: set[str] = set()
    for i, name in enumerate(process_steps):
        if name in seen:
            issues.append(ConfigIssue(f"process_steps[{i}]", f"step '{name}' is listed twice"))
        seen.add(name)
        if name not in host.steps:
            hint = suggest(name, host.steps.names())
            more = " (is the plugin that provides it installed? see `stack3d plugins`)" if not hint else ""
            issues.append(ConfigIssue(f"process_steps[{i}]", f"unknown step '{name}'{hint}{more}"))
    history = tuple(top.get("history", ()))

    steps: dict[str, Step] = {}
    for name in sorted(set(step_tables) | {s for s in process_steps if s in host.steps}):
        cls = host.steps.get(name)
        params, found = structure_table(cls.Params, step_tables.get(name, {}), name)
        if name not in step_tables and found:
            found = [ConfigIssue(name, f"table [{name}] is missing (step '{name}' is in process_steps)")]
        issues.extend(found)
        if params is not None:
            steps[name] = cls(params)

    base = project_dir
    if base is None:
        named = next((top[k] for k in PROJECT_DIR_KEYS if top.get(k)), None)
        if named is None:
            base = source.parent if source is not None else Path.cwd()
        else:  # a relative folder in the file is relative to the file
            base = Path(named).expanduser()
            if source is not None and not base.is_absolute():
                base = source.parent / base
    base = base.resolve()

    engine, found = structure_table(EngineConfig, data.get("engine", {}), "engine")
    issues.extend(found)
    if engine is not None and not (engine.intermediate in host.readers and engine.intermediate in host.writers):
        both = sorted(set(host.readers.names()) & set(host.writers.names()))
        issues.append(ConfigIssue("engine.intermediate", f"{engine.intermediate!r} is not installed as both a "
                                  f"reader and a writer{suggest(engine.intermediate, both)}; choose one of {both}"))
    input_cfg, found = _io_table(data.get("input", {}), "input", host, base)
    issues.extend(found)
    output_cfg, found = _io_table(data.get("output", {}), "output", host, base)
    issues.extend(found)

    if issues:
        raise ConfigError(issues, source)
    return ProjectConfig(
        project_dir=base, source=source, ind_min=ind_min, ind_max=ind_max, channels=channels,
        nproc=top.get("nproc", 1), process_steps=process_steps, history=history, steps=steps,
        engine=engine or EngineConfig(), input=input_cfg, output=output_cfg,
        warnings=tuple(warnings), raw=dict(data),
    )


def _io_table(
    data: Any, table: str, host: PluginHost, base: Path
) -> tuple[IOConfig, list[ConfigIssue]]:
    """Validate ``[input]`` or ``[output]``: name, path, and the named class's options."""
    if not isinstance(data, Mapping):
        return IOConfig(), [ConfigIssue(table, "expected a table")]
    issues: list[ConfigIssue] = []
    kind = "reader" if table == "input" else "writer"
    registry = host.readers if kind == "reader" else host.writers
    name = data.get(kind)
    path_value = data.get("path")
    path: Path | None = None
    if path_value is not None:
        if not isinstance(path_value, str):
            issues.append(ConfigIssue(f"{table}.path", "expected a string"))
        else:
            path = Path(path_value).expanduser()
            path = (path if path.is_absolute() else base / path).resolve()
    if table == "input" and path is not None and not path.exists():
        issues.append(ConfigIssue(f"{table}.path", f"{path} does not exist"))
    cls = None
    if name is not None:
        if not isinstance(name, str):
            issues.append(ConfigIssue(f"{table}.{kind}", "expected a string"))
        elif name not in registry:
            issues.append(ConfigIssue(f"{table}.{kind}", f"unknown {kind} '{name}'"
                                      f"{suggest(name, registry.names())}; known: {', '.join(registry.names())}"))
        else:
            cls = registry.get(name)
    if table == "output" and path is not None and name is None and not issues:
        try:
            cls = host.writer_for(path)
            name = cls.name
        except Exception as exc:  # noqa: BLE001 - reported as a config issue
            issues.append(ConfigIssue(f"{table}.path", str(exc)))
    if table == "output" and name is not None and path is None:
        issues.append(ConfigIssue(f"{table}.path", f"required with writer = {name!r}: where to write the result"))
    pixel_size = None
    if table == "input" and "pixel_size" in data:
        value = data["pixel_size"]
        ok = isinstance(value, list) and len(value) in (2, 3) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
        if ok:
            pixel_size = tuple(float(v) for v in value)
        else:
            issues.append(ConfigIssue(f"{table}.pixel_size", f"expected [x, y] or [x, y, z] in µm, all > 0; got {value!r}"))
    option_keys = {k: v for k, v in data.items() if k not in (kind, "path", "pixel_size")}
    options = None
    if cls is None and name is None and option_keys:
        # the class is picked from the path at run time; options need a named class
        issues.append(ConfigIssue(table, f"options {sorted(option_keys)} need {kind} = \"...\" to be set"))
    if cls is not None:
        options, found = structure_table(cls.Options, option_keys, table)
        issues.extend(found)
    return IOConfig(name=name if cls is not None else None, path=path, options=options, pixel_size=pixel_size), issues
