"""How much of a per-slice gain defect is left: the measure used by the intensity tests and
``benchmarks/accuracy/intensity.py``.

**Residual gain.** For slice ``k``, ``ĝ_k`` is the slope of the least-squares fit
``out_k ≈ ĝ_k · clean_k + b_k`` over the pixels (``clean_k``: the synthetic stack's clean
slice at the same depth, in the same frame; pixels at the dtype's limits are left out, as
clipping flattens them). On an uncorrected stack ``ĝ_k`` is the true gain ``g_k``.

**Gain jumps.** The truth's gain table changes value at the *boundaries*
``B = {k : g_k != g_(k-1)}`` (the starts and ends of ``truth["gain_segments"]``). The jump
left at a boundary is ``|ĝ_k − ĝ_(k−1)|``; the figures are its mean and max over ``B``.
For context, ``smooth`` is the median ``|ĝ_k − ĝ_(k−1)|`` away from boundaries (what the
correction adds between slices of equal gain) and ``spread`` is ``std(ĝ) / mean(ĝ)``.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

__all__ = ["GainJumps", "gain_boundaries", "gain_jumps", "gain_test_stack", "slice_gains"]


def slice_gains(outputs: np.ndarray, cleans: np.ndarray, top: float | None = None) -> np.ndarray:
    """``ĝ_k``: least-squares slope of ``outputs[k]`` against ``cleans[k]`` (float64, ``(n,)``).

    :param top: the dtype's maximum (default: from ``outputs.dtype`` if integer); pixels of
        ``outputs`` at 0 or ``top`` are ignored.
    """
    if top is None and np.dtype(outputs.dtype).kind in "iu":
        top = float(np.iinfo(outputs.dtype).max)
    gains = np.empty(len(outputs))
    for k, (out, clean) in enumerate(zip(outputs, cleans)):
        y = np.asarray(out, dtype=np.float64).ravel()
        x = np.asarray(clean, dtype=np.float64).ravel()
        keep = (y > 0) & (y < top) if top is not None else np.isfinite(y)
        x, y = x[keep], y[keep]
        xc = x - x.mean()
        gains[k] = float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))
    return gains


def gain_boundaries(gain_table: np.ndarray) -> np.ndarray:
    """Slices ``k >= 1`` whose true gain differs from slice ``k - 1``'s."""
    g = np.asarray(gain_table, dtype=np.float64)
    return np.flatnonzero(np.diff(g) != 0) + 1


@attrs.frozen
class GainJumps:
    """Gain-jump figures of one stack (unitless gains). See the module docstring."""

    mean: float
    max: float
    smooth: float
    spread: float

    def row(self) -> list[str]:
        return [f"{self.mean:.4f}", f"{self.max:.4f}", f"{self.smooth:.4f}", f"{self.spread:.4f}"]


def gain_jumps(gains: np.ndarray, boundaries: np.ndarray) -> GainJumps:
    """The jumps of ``gains`` at ``boundaries`` (see the module docstring)."""
    gains = np.asarray(gains, dtype=np.float64)
    steps = np.abs(np.diff(gains))  # steps[k - 1] = |g_k - g_(k-1)|
    at = np.asarray(boundaries, dtype=int) - 1
    away = np.setdiff1d(np.arange(len(steps)), at)
    return GainJumps(mean=float(steps[at].mean()) if at.size else 0.0,
                     max=float(steps[at].max()) if at.size else 0.0,
                     smooth=float(np.median(steps[away])) if away.size else 0.0,
                     spread=float(np.std(gains) / np.mean(gains)))


def gain_test_stack(n: int = 48, shape: tuple[int, int] = (96, 96), *, seed: int = 0,
                    segments: int = 4, multiplicative: bool = False, noise: float = 0.003,
                    dtype: str = "uint8") -> dict[str, Any]:
    """A synthetic stack whose only defect is per-slice gain (and tiny noise).

    ``multiplicative=False``: the generator's gain **and offset** jumps
    (``g_k · I + o_k``, mid-grey kept). ``True``: a pure gain ``g_k · (I + noise)``, with
    the same ``g_k``, the defect ``intensity_rescaling_area`` models (a mean-preserving
    offset hides the jump from a ROI mean).

    :returns: ``{"observed": (n, H, W) dtype, "clean": (n, H, W) float32, "gain": (n,),
        "boundaries": (m,), "names": tuple, "stack": SyntheticStack}``.
    """
    from stack3d_core.testing.synth import make_stack

    stack = make_stack(n_slices=n, shape=shape, seed=seed, dtype=dtype, gains=True, background=False,
                       stripes=False, noise_sigma=noise, nonuniform_z=False, jitter_px=0.0,
                       drift_px_per_slice=(0.0, 0.0), n_gain_segments=segments)
    gain = np.asarray(stack.truth["slices"]["gain"], dtype=np.float64)
    clean = np.stack([stack.clean(k) for k in range(n)])
    if multiplicative:
        top = stack.full_scale
        noisy = clean + np.stack([stack.noise(k) for k in range(n)])
        observed = np.clip(np.rint(gain[:, None, None] * noisy), 0, top).astype(dtype)
    else:
        observed = stack.volume()
    return {"observed": observed, "clean": clean, "gain": gain,
            "boundaries": gain_boundaries(gain), "names": stack.names, "stack": stack}
