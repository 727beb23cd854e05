"""``stack3d synth`` and ``stack3d demo``: synthetic projects with ground truth, and the
end-to-end demonstration (synthetic stack → full installed pipeline → errors against the
ground truth).

Folder written by :func:`write_synthetic_project`::

    DIR/slice_0000_z=0.0000um.tif ...   observed slices (PyStack3D naming, z in µm)
    DIR/params.toml                     a pipeline of the installed steps, tuned for the stack
    DIR/ground_truth/truth.json         every defect parameter (see synth.CONVENTIONS)
    DIR/ground_truth/clean.npy          (n, rows, cols) float32 clean volume at each slice's
                                        true z, in the slice-0 frame, gray levels of the dtype
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cli.init_toml import toml_value
from .engine.pipeline import INTERMEDIATE_FORMAT, run_pipeline
from .engine.record import write_atomic
from .stackio import StackMeta
from .testing.synth import SyntheticStack, SynthSpec, make_stack

if TYPE_CHECKING:
    from .plugin.host import PluginHost

__all__ = ["DEMO_ORDER", "demo_params", "run_demo", "write_synthetic_project"]

DEMO_ORDER = ("cropping", "bkg_removal", "intensity_rescaling", "registration_calculation",
              "registration_transformation", "destriping", "resampling", "cropping_final")
"""PyStack3D's step order; the demo runs those that are installed."""


def demo_params(spec: SynthSpec, host: PluginHost) -> dict[str, Any]:
    """A ``params.toml`` dict running every installed step of :data:`DEMO_ORDER`."""
    rows, cols = spec.shape
    margin = max(2, min(rows, cols) // 16)
    tables: dict[str, Any] = {
        # keep the field of view minus a margin (bottom-left origin: [xmin, xmax, ymin, ymax])
        "cropping": {"area": [margin, cols - margin, margin, rows - margin]},
        "bkg_removal": {"orders": [1, 2, 1], "cross_terms": True, "skip_factors": [4, 4, 2]},
        "intensity_rescaling": {"nbins": 256, "filter_size": -1},
        "registration_calculation": {"transformation": "TRANSLATION"},
        "registration_transformation": {"mode": "edge", "cropping": True},
        # curtains of the synthetic stack: narrow along x, long along y (see benchmarks/accuracy)
        "destriping": {"maxit": 50, "cvg_threshold": 1e-2, "filters": [
            {"name": "Gabor", "noise_level": 30, "sigma": [0.5, 80], "theta": 0},
            {"name": "Gabor", "noise_level": 80, "sigma": [0.5, 200], "theta": 0}]},
        "resampling": {"policy": "slice_{slice_nb}_z={z_coord}um.tif", "dz": spec.dz_um},
        "cropping_final": {"area": [margin, cols - 3 * margin, margin, rows - 3 * margin]},
    }
    steps = [s for s in DEMO_ORDER if s in host.steps]
    params: dict[str, Any] = {"ind_min": 0, "ind_max": 99999, "channels": ["."], "nproc": 1,
                              "process_steps": steps, "history": []}
    for name in steps:
        params[name] = tables.get(name, {})
    return params


def _inline(value: Any) -> str:
    """TOML for table values, with lists of dicts as arrays of inline tables."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        items = [", ".join(f"{k} = {toml_value(v)}" for k, v in d.items()) for d in value]
        return "[" + ", ".join("{ " + item + " }" for item in items) + "]"
    return toml_value(value)


def _dump_toml(params: dict[str, Any]) -> str:
    lines = ["# written by `stack3d synth`: the installed steps, tuned for this synthetic stack"]
    tables = {k: v for k, v in params.items() if isinstance(v, dict)}
    lines += [f"{k} = {toml_value(v)}" for k, v in params.items() if not isinstance(v, dict)]
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_inline(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_synthetic_project(folder: Path, spec: SynthSpec, host: PluginHost,
                            stack: SyntheticStack | None = None) -> SyntheticStack:
    """Write a synthetic project (slices, ``params.toml``, ``ground_truth/``) into ``folder``."""
    stack = stack or make_stack(spec)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    meta = StackMeta(n=len(stack), shape=stack.shape, dtype=spec.dtype,
                     pixel_size=(spec.pixel_size_um, spec.pixel_size_um, spec.dz_um),
                     z_positions=tuple(stack.z_um.tolist()))
    writer = host.writers.get(INTERMEDIATE_FORMAT)(folder, meta, stack.names)
    truth_dir = folder.with_name(f".{folder.name}.truth.partial")
    shutil.rmtree(truth_dir, ignore_errors=True)
    truth_dir.mkdir()
    try:
        clean = np.lib.format.open_memmap(truth_dir / "clean.npy", mode="w+", dtype=np.float32,
                                          shape=(len(stack), *stack.shape))
        for k in range(len(stack)):
            writer.write(k, stack.observed(k), {})
            clean[k] = stack.clean(k)
        clean.flush()
        del clean
        write_atomic(truth_dir / "truth.json", stack.to_json(indent=1))
        writer.commit()
    except BaseException:
        writer.abort()
        shutil.rmtree(truth_dir, ignore_errors=True)
        raise
    if (folder / "ground_truth").exists():
        shutil.rmtree(folder / "ground_truth")
    truth_dir.rename(folder / "ground_truth")
    write_atomic(folder / "params.toml", _dump_toml(demo_params(spec, host)))
    return stack


def _locate(small: np.ndarray, big: np.ndarray) -> tuple[int, int]:
    """Offset ``(row, col)`` of ``small`` inside ``big`` (normalised FFT cross-correlation,
    restricted to positions where ``small`` fits): where a cropped, registered output sits
    in the ground-truth frame."""
    h, w = small.shape
    big = big.astype(np.float64)
    a = np.zeros_like(big)
    a[:h, :w] = (small - small.mean()) / (small.std() or 1.0)
    corr = np.fft.irfft2(np.fft.rfft2(big - big.mean()) * np.conj(np.fft.rfft2(a)), s=big.shape)
    valid = corr[: big.shape[0] - h + 1, : big.shape[1] - w + 1]
    r, c = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(r), int(c)


def _metrics(images: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """RMS difference (gray levels) and Pearson correlation of two stacks."""
    a = images.astype(np.float64).ravel()
    b = truth.astype(np.float64).ravel()
    rms = float(np.sqrt(np.mean((a - b) ** 2)))
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return rms, corr


def run_demo(folder: Path, *, n_slices: int = 48, shape: tuple[int, int] = (256, 256),
             executor: str = "serial", workers: int = 2, show_progress: bool = True,
             host: PluginHost | None = None) -> str:
    """Synthesise a stack, run every installed step on it, and report against the truth.

    :returns: the report (Markdown), also written to ``folder / "report.md"``.
    """
    from .config.project import load_config
    from .plugin.host import get_host
    from .progress import TqdmProgress

    host = host or get_host()
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    spec = SynthSpec(n_slices=n_slices, shape=shape, dtype="uint8", seed=0)
    t0 = time.perf_counter()
    stack = write_synthetic_project(folder, spec, host)
    t_synth = time.perf_counter() - t0
    config = load_config(folder / "params.toml", host)
    bar = TqdmProgress(None if show_progress else False)
    try:
        result = run_pipeline(config, host, executor=executor, workers=workers, progress=bar)
    finally:
        bar.close()

    reader_cls = host.readers.get(INTERMEDIATE_FORMAT)
    raw = np.stack([reader_cls(folder).read(".", k) for k in range(len(stack))])
    clean = np.load(folder / "ground_truth" / "clean.npy", mmap_mode="r")
    out_reader = reader_cls(result.last_dir) if result.last_dir else reader_cls(folder)
    out_meta = out_reader.meta(".")
    output = np.stack([out_reader.read(".", k) for k in range(out_meta.n)])
    # the truth of each output slice: the clean volume at its z (resampling changes the z
    # grid), in the slice-0 frame; then the window the output covers (crops, registration)
    z_out = out_meta.z_positions if out_meta.z_positions is not None else tuple(stack.z_um)
    truth_full = np.stack([stack.clean_at(float(z)) for z in z_out])
    mid = len(output) // 2
    r0, c0 = _locate(output[mid].astype(np.float64), truth_full[mid])
    truth_out = truth_full[:, r0 : r0 + output.shape[1], c0 : c0 + output.shape[2]]
    rms_in, corr_in = _metrics(raw, clean)
    rms_out, corr_out = _metrics(output, truth_out)
    rows, cols = spec.shape
    missing = [s for s in DEMO_ORDER if s not in host.steps]
    lines = [
        f"# stack3d demo: {len(stack)} slices of {rows}x{cols} {spec.dtype}",
        "",
        f"Project: `{folder}` (synthesised in {t_synth:.1f} s; ground truth in `ground_truth/`)",
        f"Executor: {executor}" + (f" x {workers}" if executor != "serial" else ""),
        "",
        "| step | time (s) |",
        "|---|---|",
        *[f"| {name} | {result.seconds[name]:.2f} |" for name in result.ran],
        "",
        "Errors against the clean ground truth (the output compared with the exact clean volume at its",
        f"slices' z, in the region it covers: offset ({r0}, {c0}) px in the slice-0 frame):",
        "",
        "| quantity | input | output |",
        "|---|---|---|",
        f"| RMS error (gray levels) | {rms_in:.2f} | {rms_out:.2f} |",
        f"| correlation with truth | {corr_in:.4f} | {corr_out:.4f} |",
        f"| shape (slices, rows, cols) | {tuple(raw.shape)} | {tuple(output.shape)} |",
        "",
    ]
    if missing:
        lines.append(f"Not installed yet (skipped): {', '.join(missing)}.")
    if result.warnings:
        lines += ["", "Warnings:", *[f"- {w}" for w in result.warnings]]
    figure = _cut_planes(folder / "report.png", raw, output, truth_out)
    if figure:
        lines += ["", f"Cut planes (XY, XZ) of input, output and truth: `{figure}`"]
    report = "\n".join(lines) + "\n"
    write_atomic(folder / "report.md", report)
    write_atomic(folder / "report.json", json.dumps({
        "rms_in": rms_in, "rms_out": rms_out, "corr_in": corr_in, "corr_out": corr_out,
        "steps": list(result.ran), "seconds": result.seconds}, indent=1))
    return report


def _cut_planes(path: Path, raw: np.ndarray, output: np.ndarray, truth: np.ndarray) -> Path | None:
    """XY and XZ cut planes of the three stacks side by side (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    stacks = (("input", raw), ("output", output), ("truth", truth))
    fig, axes = plt.subplots(2, 3, figsize=(10, 6), layout="constrained")
    for col, (label, vol) in enumerate(stacks):
        k, r = vol.shape[0] // 2, vol.shape[1] // 2
        axes[0, col].imshow(vol[k], cmap="gray")
        axes[0, col].set_title(f"{label}: XY, slice {k}")
        axes[1, col].imshow(vol[:, r, :], cmap="gray", aspect="auto")
        axes[1, col].set_title(f"{label}: XZ, row {r}")
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
