"""Side outputs of ``sift_registration`` (written by ``finish`` for every channel) and the
hand-over of its matrices to the built-in ``registration_transformation``.

In ``outputs/`` of each channel:

* ``tmats_cumul.npy``: ``(n, 1, 3, 3)`` cumulative matrices ``T_k`` (slice-0 coordinates
  ``(x = column, y = row, 1)`` -> slice ``k``, inverse maps) after the drift options, in the
  convention of ``registration_transformation``'s ``tmats_cumul.npy``. With
  ``canvas = "union"`` the slices were warped with ``T_k @ S``, ``S`` the translation by
  the canvas offset (``sift_registration.json``);
* ``tmats.npy``: ``(n, 1, 3, 3)`` pair matrices ``T_k @ T_(k-1)^-1`` (``tmats[0] = T_0 = I``),
  the format of ``process/registration_calculation/tmats.npy``: their chain gives
  ``T_k`` back, so :func:`export_to_registration_calculation` lets the built-in
  ``registration_transformation`` re-apply the transforms (to other data, with its crop);
* ``qc_pairs.csv``: one row per pair ``(j, i)``: key points of both slices, matches after
  the ratio test, inliers, residual spread of the inliers under the pair's own model
  (mean, RMS, std in x and y, px), ``ok`` (usable), ``used`` (in the chain / the global
  solve), its robust ``weight`` and ``misfit_px`` (RMS misplacement of its inliers under
  the final cumulative solution), and why it failed;
* ``qc_slices.csv``: one row per slice: the slice it was chained from (``-1`` for the
  global solve), its flag (``reference``, ``ok``, ``kept_neighbour``, ``after_break``) and
  its applied transform (centre shift, rotation, scales, shear);
* ``sift_registration.json``: conventions, canvas, drift slope, parameters;
* ``tmats_evol.png`` (transforms over z) and ``qc_matches.png`` (matches / inliers over z).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
from stack3d_core.stepkit import save_array, write_text

from .cumulative import KEPT_NEIGHBOUR, relative_from_cumulative
from .pairs import QC_FIELDS

if TYPE_CHECKING:
    from stack3d_core import StepContext

    from .step import SiftRegistration, SiftState

__all__ = ["decompose", "export_to_registration_calculation", "write_outputs"]

CONVENTION = ("inverse maps on (x = column, y = row, 1), origin at the centre of the top-left pixel; "
              "tmats_cumul[k] maps slice-0 coordinates to slice k (T_0 = I); tmats[k] = T_k @ T_(k-1)^-1, "
              "so that T_k = tmats[k] @ T_(k-1) (registration_transformation's composition)")


def decompose(matrix: np.ndarray, shape: tuple[int, int]) -> dict[str, float]:
    """Displacement of the image centre (px), rotation (deg), scales and shear (scikit-image's
    ``AffineTransform`` definitions, image frame) of a 3x3 matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    h, w = shape
    ctr = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])
    dx, dy = (m @ ctr)[:2] - ctr[:2]
    rot = math.atan2(m[1, 0], m[0, 0])
    shear = math.atan2(-m[0, 1], m[1, 1]) - rot
    sx = math.hypot(m[0, 0], m[1, 0])
    sy = math.sqrt((m[0, 1] ** 2 + m[1, 1] ** 2) / (math.tan(shear) ** 2 + 1))
    return {"centre_dx_px": float(dx), "centre_dy_px": float(dy), "rotation_deg": math.degrees(rot),
            "scale_x": sx, "scale_y": sy, "shear_deg": math.degrees(shear)}


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_outputs(step: SiftRegistration, ctx: StepContext, state: SiftState) -> None:
    """Write every side output of one channel into ``ctx.outputs_dir``."""
    out = Path(ctx.outputs_dir)
    cumulative = state.cumulative if state.cumulative is not None else state.applied
    save_array(out / "tmats_cumul.npy", cumulative[:, None])
    save_array(out / "tmats.npy", relative_from_cumulative(cumulative)[:, None])
    report = state.report
    info: dict[str, Any] = {
        "convention": CONVENTION, "n": len(cumulative), "input_shape": list(ctx.meta.shape),
        "canvas": {"mode": step.params.canvas, "shape": list(state.shape), "offset_xy": list(state.offset),
                   "applied": "slice k is warped with tmats_cumul[k] @ [[1, 0, ox], [0, 1, oy], [0, 0, 1]]: "
                              "output pixel (c, r) is slice-0 point (c + ox, r + oy)"},
        "computed_on_channel": ctx.channels[0], "params": attrs.asdict(step.params),
        "reapply": "stack3d_sift.export_to_registration_calculation(project_dir) copies tmats.npy to "
                   "process/registration_calculation/, where registration_transformation reads it",
    }
    if report is not None:
        info.update(detrended=report.detrended, linear_drift_px_per_slice=report.drift_slope,
                    kept_neighbour=[k for k, f in enumerate(report.flags) if f == KEPT_NEIGHBOUR])
        write_text(out / "qc_pairs.csv", _csv(_pair_rows(report, ctx)))
        write_text(out / "qc_slices.csv", _csv(_slice_rows(report, cumulative, ctx)))
    write_text(out / "sift_registration.json", json.dumps(info, indent=1, default=list))
    if report is not None:
        from .plots import plot_matches, plot_transforms

        z = _axis(ctx)
        plot_transforms(report.solution.cumulative, cumulative, ctx.meta.shape, z, report.flags,
                        f"sift_registration [{ctx.channels[0]}]: cumulative transforms", out / "tmats_evol.png")
        plot_matches(report, z, "sift_registration: matches and inliers per pair", out / "qc_matches.png")


def _axis(ctx: StepContext) -> tuple[np.ndarray, str]:
    z = ctx.meta.z_positions
    if z is not None and len(z) == ctx.meta.n and np.all(np.diff(np.asarray(z)) > 0):
        return np.asarray(z, dtype=np.float64), "z (µm)"
    return np.arange(ctx.meta.n, dtype=np.float64), "slice"


def _pair_rows(report: Any, ctx: StepContext) -> list[dict[str, Any]]:
    sol = report.solution
    used = {(ln.j, ln.i): (float(w), float(r)) for ln, w, r in zip(sol.links, sol.weights, sol.residuals)
            if not ln.anchor}
    rows = []
    for (j, i), r in sorted(report.pairs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        row: dict[str, Any] = {"j": j, "i": i, "offset": i - j, "name_i": ctx.names[i]}
        row.update({f: (int(v) if f in ("keypoints_j", "keypoints_i", "matches", "inliers") else v)
                    for f, v in zip(QC_FIELDS, r.qc)})
        weight, misfit = used.get((j, i), (0.0, float("nan")))
        row.update(ok=int(r.ok), used=int((j, i) in used), weight=weight, misfit_px=misfit, reason=r.reason)
        rows.append(row)
    return rows


def _slice_rows(report: Any, cumulative: np.ndarray, ctx: StepContext) -> list[dict[str, Any]]:
    rows = []
    for k in range(len(cumulative)):
        row: dict[str, Any] = {"index": k, "name": ctx.names[k], "chained_from": int(report.solution.source[k]),
                               "flag": report.flags[k]}
        row.update(decompose(cumulative[k], ctx.meta.shape))
        rows.append(row)
    return rows


def export_to_registration_calculation(project_dir: str | Path, channel: str | None = None,
                                       step: str = "sift_registration", target_dir: str | Path | None = None) -> Path:
    """Hand ``sift_registration``'s matrices to the built-in ``registration_transformation``.

    Copies ``process/<step>/<channel>/outputs/tmats.npy`` of ``project_dir`` (default:
    the single-channel ``outputs/`` or the first channel folder) to
    ``<target_dir>/process/registration_calculation/tmats.npy`` with a
    ``registration.json`` (``nb_blocks = [1, 1]``, the slice shape): what
    ``registration_calculation`` leaves. ``registration_transformation`` then composes them
    into the same ``T_k`` (within 1e-9 px) and warps with the same bilinear
    ``scipy.ndimage`` call: on the same input it reproduces ``canvas = "same"`` (and can add
    its ``cropping``). ``target_dir`` (default ``project_dir``): the project whose images
    ``registration_transformation`` will read, e.g. the raw data when the matrices were
    computed on a filtered copy; in ``project_dir`` itself the history already holds
    ``sift_registration``, whose registered slices the next step would read instead.
    Returns the written ``tmats.npy``.
    """
    process = Path(project_dir) / "process"
    base = process / step
    if channel not in (None, "."):
        outputs = base / str(channel) / "outputs"
    elif (base / "outputs" / "tmats.npy").is_file():
        outputs = base / "outputs"
    else:
        found = sorted(base.glob("*/outputs/tmats.npy"))
        if not found:
            raise FileNotFoundError(f"no {step} matrices under {base}: run {step} first")
        outputs = found[0].parent
    tmats = np.load(outputs / "tmats.npy")
    meta = json.loads((outputs / "sift_registration.json").read_text())
    target = Path(target_dir if target_dir is not None else project_dir) / "process" / "registration_calculation"
    (target / "outputs").mkdir(parents=True, exist_ok=True)
    save_array(target / "tmats.npy", tmats)
    write_text(target / "outputs" / "registration.json", json.dumps({
        "shape": meta["input_shape"], "n": len(tmats), "nb_blocks": [1, 1], "transformation": "AFFINE",
        "method": "sift_registration", "convention": CONVENTION, "source": str(outputs)}, indent=1))
    return target / "tmats.npy"
