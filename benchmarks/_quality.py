"""Quality figures of a processed stack against the synthetic ground truth, computed the
same way for any tool's output (stack3d, PyStack3D): a folder of TIFF slices whose names
carry their z (``..._z=0.0100um.tif``) and, when registration ran, ``tmats_cumul.npy``.

Figures (``evaluate_stack``), on a subset of the output slices (``pick_slices``):

* **RMS error / correlation**: the output against the clean volume at each output slice's
  z (:meth:`SyntheticStack.clean_at`), in the region the output covers: one offset for the
  whole stack, found on the middle evaluated slice (``stack3d_core.demo``'s ``_locate`` and
  ``_metrics``), so registration drift counts too;
* per slice, after locating that slice alone (integer px), a least-squares fit
  ``output ≈ a * truth + P(x, y)`` with ``P`` a full 2nd-order polynomial:
  **background residual** = RMS of ``P - mean(P)`` (% of full scale); **residual RMS** =
  RMS of ``output - a * truth - P`` (gray levels: noise, stripes, blur, interpolation);
  **stripe residual** (:func:`stripe_residual`) of that residual; **gain jumps**: ``|a_j -
  a_i| / mean(a)`` across each true gain jump (``i``, ``j``: the output slices just before and
  after it in z);
* **registration error** (:func:`grid_error`): RMS and max over the slices of the RMS
  distance between a 16 x 16 grid mapped by the applied cumulative matrix and by the
  true one (px; both slice-0 referenced; the truth moved into the cropped frame).

The input's figures (observed slice against the clean slice in its own frame) give the
starting point. Importable as ``_quality`` with ``benchmarks/`` on ``sys.path``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["evaluate_input", "evaluate_stack", "fit_gain_background", "gain_jumps", "grid_error", "pick_slices",
           "slice_z", "stripes_left", "warp"]

_Z = re.compile(r"z=([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)um")


def slice_z(name: str) -> float | None:
    """The z (µm) in a slice's file name (``..._z=0.0100um.tif``), or ``None``."""
    m = _Z.search(name)
    return float(m.group(1)) if m else None


def pick_slices(n: int, count: int, extra: Sequence[int] = ()) -> list[int]:
    """``count`` evenly spaced indices of ``range(n)`` (ends included) plus ``extra``."""
    even = np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int)).tolist()
    return sorted(set(even) | {int(i) for i in extra if 0 <= i < n})


def _poly_basis(shape: tuple[int, int], step: int = 1) -> np.ndarray:
    rows, cols = shape
    y, x = np.mgrid[0:rows:step, 0:cols:step].astype(np.float64)
    x = x.ravel() / max(cols - 1, 1) - 0.5
    y = y.ravel() / max(rows - 1, 1) - 0.5
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def fit_gain_background(image: np.ndarray, truth: np.ndarray, step: int = 2) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``image ≈ a * truth + P(x, y)`` (``P``: 2nd order, fitted on every
    ``step``-th pixel): returns ``a``, the surface ``P`` and the residual (float64)."""
    img = image.astype(np.float64)
    tru = truth.astype(np.float64)
    basis = _poly_basis(img.shape, step)
    design = np.concatenate([tru[::step, ::step].reshape(-1, 1), basis], axis=1)
    coef, *_ = np.linalg.lstsq(design, img[::step, ::step].ravel(), rcond=None)
    surface = (_poly_basis(img.shape) @ coef[1:]).reshape(img.shape)
    return float(coef[0]), surface, img - coef[0] * tru - surface


def warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``out(p) = image(matrix @ p)`` for ``p = (x=col, y=row, 1)`` (bilinear, edge mode):
    how registration applies a cumulative matrix."""
    from scipy.ndimage import affine_transform

    m = np.asarray(matrix, dtype=np.float64)
    rc = np.array([[m[1, 1], m[1, 0]], [m[0, 1], m[0, 0]]])
    return affine_transform(image.astype(np.float64), rc, offset=(m[1, 2], m[0, 2]), order=1, mode="nearest")


def stripes_left(residual: np.ndarray, stripes: np.ndarray) -> tuple[float, float]:
    """``(<residual, stripes>, <stripes, stripes>)``: the projection of a residual on the true
    curtain image in the same frame (the ratio is the share of the curtains left: 1 in the
    input, 0 when they are all removed)."""
    s = stripes.astype(np.float64)
    return float((residual * s).sum()), float((s * s).sum())


def grid_error(cumulative: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-slice RMS distance (px) between a 16 x 16 grid over ``shape`` mapped by the
    ``(n, 3, 3)`` matrices ``cumulative`` and by ``truth``."""
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(0, h - 1, 16), np.linspace(0, w - 1, 16), indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    d = np.einsum("kab,bp->kap", cumulative[:, :2] - truth[:, :2], pts)
    return np.sqrt((d**2).sum(axis=1).mean(axis=1))


def gain_jumps(gains: dict[int, float], z_out: Sequence[float], z_in: Sequence[float],
               true_gain: Sequence[float]) -> list[float]:
    """``|a_after - a_before| / mean(a)`` at each true gain jump (input slices ``k - 1`` ->
    ``k``), ``before``/``after``: the last output slice at or before ``z_in[k - 1]`` and
    the first at or after ``z_in[k]``, when both are in ``gains``."""
    if not gains:
        return []
    mean = float(np.mean(list(gains.values())))
    z_out = np.asarray(z_out, dtype=np.float64)
    out = []
    for k in range(1, len(true_gain)):
        if true_gain[k] == true_gain[k - 1]:
            continue
        before = np.nonzero(z_out <= z_in[k - 1] + 1e-9)[0]
        after = np.nonzero(z_out >= z_in[k] - 1e-9)[0]
        if len(before) and len(after) and int(before[-1]) in gains and int(after[0]) in gains:
            out.append(abs(gains[int(after[0])] - gains[int(before[-1])]) / mean)
    return out


def jump_slices(z_out: Sequence[float], z_in: Sequence[float], true_gain: Sequence[float],
                limit: int = 40) -> list[int]:
    """The output slices :func:`gain_jumps` needs (at most ``limit`` jumps)."""
    z_out = np.asarray(z_out, dtype=np.float64)
    wanted: list[int] = []
    for k in range(1, len(true_gain)):
        if true_gain[k] != true_gain[k - 1] and len(wanted) < 2 * limit:
            before = np.nonzero(z_out <= z_in[k - 1] + 1e-9)[0]
            after = np.nonzero(z_out >= z_in[k] - 1e-9)[0]
            if len(before) and len(after):
                wanted += [int(before[-1]), int(after[0])]
    return wanted


def _summary(figures: dict[str, list[float]], jumps: list[float], stripes: tuple[float, float]) -> dict[str, Any]:
    out: dict[str, Any] = {key: float(np.mean(vals)) if vals else float("nan") for key, vals in figures.items()}
    out["gain_jump_mean"] = float(np.mean(jumps)) if jumps else float("nan")
    out["gain_jump_max"] = float(np.max(jumps)) if jumps else float("nan")
    out["stripes_left"] = stripes[0] / stripes[1] if stripes[1] > 0 else float("nan")
    return out


def _translation(offset: tuple[float, float]) -> np.ndarray:
    return np.array([[1.0, 0.0, offset[0]], [0.0, 1.0, offset[1]], [0.0, 0.0, 1.0]])


def _shifted(matrix: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """``matrix`` (acting on a frame cropped at ``offset = (x0, y0)``) in the uncropped frame."""
    return _translation(offset) @ matrix @ _translation((-offset[0], -offset[1]))


def evaluate_input(stack: Any, count: int = 24) -> dict[str, Any]:
    """The input's figures: each observed slice against the clean slice in its own frame."""
    truth_gain = stack.truth["slices"]["gain"]
    z_in = stack.z_um.tolist()
    idx = pick_slices(len(stack), count, jump_slices(z_in, z_in, truth_gain))
    figures: dict[str, list[float]] = {"background_pct": [], "residual_rms": []}
    gains: dict[int, float] = {}
    sq, num, pairs, proj = 0.0, 0, [], np.zeros(2)
    for k in idx:
        obs = stack.observed(k).astype(np.float64)
        clean = stack.clean_at(float(stack.z_um[k]), matrix=stack.sampling_matrix(k)).astype(np.float64)
        sq += float(((obs - clean) ** 2).sum())
        num += obs.size
        pairs.append((obs[::2, ::2].ravel(), clean[::2, ::2].ravel()))
        gains[k], surface, resid = fit_gain_background(obs, clean)
        figures["background_pct"].append(float(np.std(surface)) * 100 / stack.full_scale)
        figures["residual_rms"].append(float(np.sqrt(np.mean(resid**2))))
        dot, norm = stripes_left(resid, stack.stripes(k))
        proj += (dot * stack.gain_offset(k)[0] / gains[k], norm)
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    out = _summary(figures, gain_jumps(gains, z_in, z_in, truth_gain), tuple(proj))
    out.update(rms=float(np.sqrt(sq / num)), corr=float(np.corrcoef(a, b)[0, 1]), slices=len(idx),
               shape=(len(stack), *stack.shape), reg_rms=float("nan"), reg_max=float("nan"))
    return out


def _stripes_out(stack: Any, z: float, cumul: np.ndarray | None, crop: tuple[float, float],
                 image: np.ndarray) -> tuple[np.ndarray, float]:
    """The true curtains of the output slice ``image`` at depth ``z``, in its frame: the
    curtains of the input slices around ``z`` (linear in z, as resampling), warped by the
    tool's own cumulative matrices, and cropped where ``image`` sits in the observed slice
    warped the same way. Also the true gain there."""
    from stack3d_core.demo import _locate

    z_in = stack.z_um
    k = int(np.clip(np.searchsorted(z_in, z, side="right") - 1, 0, len(stack) - 1))
    w = 0.0 if k + 1 >= len(stack) else float(np.clip((z - z_in[k]) / (z_in[k + 1] - z_in[k]), 0.0, 1.0))

    def registered(img: np.ndarray, i: int) -> np.ndarray:
        return img.astype(np.float64) if cumul is None else warp(img, _shifted(cumul[i], crop))

    ref = registered(stack.observed(k), k)
    r, c = _locate(image.astype(np.float64), ref)
    stripes = (1 - w) * registered(stack.stripes(k), k)
    gain = (1 - w) * stack.gain_offset(k)[0]
    if w > 0:
        stripes += w * registered(stack.stripes(k + 1), k + 1)
        gain += w * stack.gain_offset(k + 1)[0]
    return stripes[r:r + image.shape[0], c:c + image.shape[1]], gain


def evaluate_stack(folder: Path, stack: Any, *, tmats: Path | None = None, crop_offset: tuple[float, float] = (0, 0),
                   count: int = 24, truth_cache: dict[float, np.ndarray] | None = None) -> dict[str, Any]:
    """The figures of the output slices in ``folder`` (sorted ``*.tif``) against ``stack``'s
    truth; ``tmats``: the applied ``tmats_cumul.npy`` (``(n, blocks, 3, 3)``) computed on
    slices cropped at ``crop_offset = (x0, y0)`` px (the first cropping); ``truth_cache``:
    clean slices by z, shared between tools."""
    import tifffile

    from stack3d_core.demo import _locate, _metrics

    files = sorted(p for p in Path(folder).glob("*.tif") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no output slice in {folder}")
    z_out = [slice_z(p.name) for p in files]
    if any(z is None for z in z_out):
        raise ValueError(f"output names without z in {folder}: {files[0].name}")
    cache = {} if truth_cache is None else truth_cache
    truth_gain = stack.truth["slices"]["gain"]
    idx = pick_slices(len(files), count, jump_slices(z_out, stack.z_um.tolist(), truth_gain))
    cumul = None
    if tmats is not None and Path(tmats).is_file():
        cumul = np.load(tmats)
        cumul = cumul[:, 0] if cumul.ndim == 4 else cumul
        cumul = cumul if len(cumul) == len(stack) else None

    def truth_at(z: float) -> np.ndarray:
        key = round(float(z), 9)
        if key not in cache:
            cache[key] = stack.clean_at(key)
        return cache[key]

    images = {j: tifffile.imread(files[j]) for j in idx}
    shape = next(iter(images.values())).shape
    mid = idx[len(idx) // 2]
    r0, c0 = _locate(images[mid].astype(np.float64), truth_at(z_out[mid]))
    common = np.stack([truth_at(z_out[j])[r0:r0 + shape[0], c0:c0 + shape[1]] for j in idx])
    rms, corr = _metrics(np.stack([images[j] for j in idx]), common)
    figures: dict[str, list[float]] = {"background_pct": [], "residual_rms": []}
    gains: dict[int, float] = {}
    proj = np.zeros(2)
    for j in idx:
        full = truth_at(z_out[j])
        r, c = _locate(images[j].astype(np.float64), full)
        gains[j], surface, resid = fit_gain_background(images[j], full[r:r + shape[0], c:c + shape[1]])
        figures["background_pct"].append(float(np.std(surface)) * 100 / stack.full_scale)
        figures["residual_rms"].append(float(np.sqrt(np.mean(resid**2))))
        stripes, gain = _stripes_out(stack, float(z_out[j]), cumul, crop_offset, images[j])
        dot, norm = stripes_left(resid, stripes)
        proj += (dot * gain / gains[j], norm)
    out = _summary(figures, gain_jumps(gains, z_out, stack.z_um.tolist(), truth_gain), tuple(proj))
    out.update(rms=rms, corr=corr, slices=len(idx), shape=(len(files), *shape), offset=(r0, c0),
               reg_rms=float("nan"), reg_max=float("nan"))
    if cumul is not None:
        back = (-crop_offset[0], -crop_offset[1])  # the truth, moved into the cropped frame
        truth = np.stack([_shifted(stack.matrix(k), back) for k in range(len(stack))])
        err = grid_error(cumul, truth, stack.shape)
        out.update(reg_rms=float(np.sqrt(np.mean(err**2))), reg_max=float(err.max()))
    return out
