"""The Python API: :class:`Stack3d` (PyStack3D's entry point) and :func:`run`.

``Stack3d(input_name)`` accepts what PyStack3D accepts:

* a project folder holding exactly one ``.toml`` file (PyStack3D ignores the folder key
  inside it in this case, and so does stack3d);
* the path of a ``.toml`` file (the project folder is its ``project_dir`` / ``dirname`` /
  ``input_dirname`` key, else the file's folder);
* a multi-page TIFF: the project folder is the TIFF's folder, the single channel is
  ``"images"`` and no TOML is read; set ``stack.params[step] = {...}`` before ``eval``.

Unlike PyStack3D, stack3d never writes into the user's TOML: the history is kept in
``process/stack3d_run.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config.project import ProjectConfig, load_config, parse_config
from .engine.pipeline import RunResult, run_pipeline
from .errors import ConfigError, ConfigIssue, Stack3dError
from .plugin.host import PluginHost, get_host
from .progress import ProgressCallback, TqdmProgress

__all__ = ["Stack3d", "find_params_file", "run"]


def find_params_file(folder: Path) -> Path:
    """The single ``*.toml`` file of a project folder.

    :raises Stack3dError: none or several (PyStack3D's rule).
    """
    tomls = sorted(p for p in folder.glob("*.toml") if p.is_file())
    if not tomls:
        raise Stack3dError(f"{folder} holds no .toml parameter file; create one with `stack3d init {folder}`")
    if len(tomls) > 1:
        names = ", ".join(p.name for p in tomls)
        raise Stack3dError(f"{folder} holds several .toml files ({names}); keep exactly one")
    return tomls[0]


def run(
    config: ProjectConfig | Mapping[str, Any] | str | Path,
    *,
    steps: Sequence[str] | None = None,
    executor: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    redo: bool = False,
    host: PluginHost | None = None,
    project_dir: str | Path | None = None,
    keep_intermediates: bool | None = None,
) -> RunResult:
    """Run a pipeline: the lower-level entry point behind :class:`Stack3d` and the CLI.

    :param config: a validated :class:`ProjectConfig`, a dict shaped like ``params.toml``
        (then ``project_dir`` is required), a ``.toml`` path or a project folder.
    :param steps: steps to run (default: ``process_steps``).
    :param executor: ``"serial"``, ``"processes"`` or ``"dask"`` (default: ``[engine]``).
    :param workers: worker count (default: ``[engine] workers`` or ``nproc``).
    :param scheduler: address of a running Dask scheduler.
    :param progress: a callback receiving :class:`~stack3d_core.progress.ProgressEvent`.
    :param redo: run steps again even if the history says they are done.
    :param keep_intermediates: store every step's images (default: ``[engine]
        keep_intermediates``, false: steps are fused and only the last one stores images).
    """
    host = host or get_host()
    if not isinstance(config, ProjectConfig):
        if isinstance(config, Mapping):
            if project_dir is None:
                raise Stack3dError("run(dict) needs project_dir=")
            config = parse_config(config, host, project_dir=Path(project_dir))
        else:
            path = Path(config)
            if path.is_dir():
                config = load_config(find_params_file(path), host, project_dir=path.resolve())
            else:
                config = load_config(path, host, project_dir=Path(project_dir) if project_dir else None)
    return run_pipeline(config, host, steps=steps, executor=executor, workers=workers,
                        scheduler=scheduler, progress=progress, redo=redo, keep_intermediates=keep_intermediates)


class Stack3d:
    """A project, PyStack3D-style: ``Stack3d(input_name).eval(process_steps, nproc)``.

    :param input_name: project folder (with one ``.toml``), ``.toml`` path, or multi-page
        TIFF; ``None`` means the current folder.
    :param host: plugin host (default: every installed plugin).

    Attributes: ``project_dir``, ``fname_toml`` (``None`` for a multi-page TIFF), ``params``
    (a dict you may edit before :meth:`eval`).
    """

    def __init__(self, input_name: str | Path | None = None, *, host: PluginHost | None = None) -> None:
        import tomllib

        self.host = host or get_host()
        path = Path(input_name) if input_name is not None else Path.cwd()
        self.fname_toml: Path | None = None
        if path.is_dir():
            self.project_dir = path.resolve()
            self.fname_toml = find_params_file(path)
        elif path.suffix.lower() == ".toml":
            if not path.is_file():
                raise Stack3dError(f"{path} does not exist")
            self.fname_toml = path.resolve()
            self.project_dir = None  # type: ignore[assignment]  # from the file, below
        elif path.suffix.lower() in (".tif", ".tiff"):
            if not path.is_file():
                raise Stack3dError(f"{path} does not exist")
            self.project_dir = path.resolve().parent
            self.params: dict[str, Any] = {
                "history": [], "ind_min": 0, "ind_max": 99999, "channels": ["images"],
                "input": {"reader": "multipage_tiff", "path": path.name},
            }
            return
        else:
            raise Stack3dError(f"{path}: expected a project folder, a .toml file or a multi-page .tif")
        try:
            with self.fname_toml.open("rb") as fh:
                self.params = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([ConfigIssue("", f"not valid TOML: {exc}")], self.fname_toml) from exc
        if self.project_dir is None:
            self.project_dir = parse_config(
                {k: v for k, v in self.params.items() if k in ("project_dir", "dirname", "input_dirname")},
                self.host, source=self.fname_toml,
            ).project_dir

    @property
    def pathdir(self) -> Path:
        """PyStack3D 2025's name of :attr:`project_dir`."""
        return self.project_dir

    def config(self) -> ProjectConfig:
        """The validated configuration of :attr:`params` (raises ConfigError)."""
        return parse_config(copy.deepcopy(self.params), self.host, source=self.fname_toml,
                            project_dir=self.project_dir)

    def eval(
        self,
        process_steps: str | Sequence[str] | None = None,
        nproc: int | None = None,
        serial: bool = True,
        show_pbar: bool = True,
        *,
        redo: bool = False,
        keep_intermediates: bool | None = None,
    ) -> RunResult:
        """Run steps, as PyStack3D's ``eval``.

        :param process_steps: a step name or list (default: ``params["process_steps"]``).
        :param nproc: worker processes (default: ``params["nproc"]``, else 1); more than 1
            runs on local processes unless ``[engine]`` says otherwise.
        :param serial: chain the steps (each reads the previous one's output) and record
            the history; ``False`` makes every step read the same input (PyStack3D).
        :param show_pbar: progress bars on stderr.
        :param redo: run steps again even if the history says they are done.
        :param keep_intermediates: write every step's images to ``process/<step>``, as
            PyStack3D does (default: ``[engine] keep_intermediates``, false).
        """
        if isinstance(process_steps, str):
            process_steps = [process_steps]
        if nproc is not None and (isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1):
            raise Stack3dError(f"nproc must be a positive integer, got {nproc!r}")
        params = copy.deepcopy(self.params)
        if nproc is not None:
            params["nproc"] = nproc
            self.params["nproc"] = nproc
        config = parse_config(params, self.host, source=self.fname_toml, project_dir=self.project_dir)
        bar = TqdmProgress(None if show_pbar else False)
        try:
            return run_pipeline(config, self.host, steps=process_steps, progress=bar, redo=redo, chain=serial,
                                keep_intermediates=keep_intermediates)
        finally:
            bar.close()
