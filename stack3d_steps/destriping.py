"""``destriping``: remove vertical stripes (FIB curtains) from every slice.

Two methods, as PyStack3D:

* **VSNR** (default): the ``filters`` given (Gabor kernels elongated along the stripes,
  Dirac for white noise), ``maxit`` iterations at most, early stop at ``cvg_threshold``,
  ``norm=False`` (the slice is divided by its maximum, processed and multiplied back). On
  the CPU it runs stack3d's own implementation (:mod:`stack3d_steps._vsnr_fast`, ~3x faster
  than pyvsnr, same results within float32 rounding); ``backend = "pyvsnr"`` calls pyvsnr.
* **wavelet–Fourier** when ``wavelet_decomposition`` is given: the vertical detail
  coefficients of a ``pywt.wavedec2`` decomposition are high-pass filtered along the rows
  in Fourier, then the image is rebuilt (see :mod:`stack3d_steps._destriping_algos`).

Images are ``[row, column]``; stripes are vertical, i.e. they run along columns (``theta
= 0`` for a Gabor filter with ``sigma = [small, large]``: narrow across columns, long along
rows). The output has the input's shape and is returned as floats; the engine rounds
(PyStack3D truncates, so outputs differ by at most one gray level).

The backend of VSNR is chosen explicitly, never by pyvsnr's ``algo='auto'``. ``backend``:
``"auto"`` (default) runs pyvsnr on CuPy when ``device`` allows it and
``cupy.is_available()``, stack3d's implementation otherwise; ``"stack3d"`` always runs
stack3d's implementation (CPU); ``"pyvsnr"`` runs pyvsnr, on ``numpy`` (FFTs by pyFFTW) or
on CuPy as the device says. Device precedence: the step's ``device``, then the environment
variable ``STACK3D_DEVICE`` (``cpu`` / ``gpu`` / ``auto``) when set, then ``[engine] device``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
import numpy as np

from stack3d_core import Step, StepContext, StepKind
from stack3d_core.stepkit import write_text

from ._destriping_algos import requested_device, resolve_implementation, vsnr_destripe, wavelet_destripe

__all__ = ["STEPS", "Destriping", "DestripingParams", "VsnrFilter", "WaveletDecomposition"]


def _positive_pair(_: Any, attribute: attrs.Attribute, value: tuple[float, float] | None) -> None:
    if value is not None and (len(value) != 2 or min(value) <= 0 or not all(np.isfinite(value))):
        raise ValueError(f"{attribute.name} must be a pair [sigma_x, sigma_y] of positive numbers "
                         f"(got {list(value)})")


@attrs.frozen(kw_only=True)
class VsnrFilter:
    """One VSNR filter: ``{ name = "Gabor", noise_level = 20, sigma = [0.5, 200], theta = 0 }``
    or ``{ name = "Dirac", noise_level = 10 }``."""

    name: Literal["Gabor", "Dirac"] = attrs.field(
        validator=attrs.validators.in_(("Gabor", "Dirac")),
        metadata={"doc": "'Gabor' (structured noise: stripes, curtains) or 'Dirac' (white noise)",
                  "unit": "-"})
    noise_level: float = attrs.field(
        validator=[attrs.validators.gt(0), attrs.validators.lt(float("inf"))],
        metadata={"doc": "η, the noise level of this component; larger removes more", "unit": "-"})
    sigma: tuple[float, float] | None = attrs.field(
        default=None, validator=_positive_pair,
        metadata={"doc": "Gabor only (required): [σx, σy], widths of the Gaussian kernel across "
                         "(x = column) and along (y = row) the stripes before rotation; ignored "
                         "for Dirac, as in PyStack3D", "unit": "px"})
    theta: float = attrs.field(
        default=0.0, validator=attrs.validators.and_(attrs.validators.ge(-360.0), attrs.validators.le(360.0)),
        metadata={"doc": "Gabor only: rotation of the kernel, in degrees (0: vertical stripes); "
                         "ignored for Dirac", "unit": "deg"})

    def __attrs_post_init__(self) -> None:
        if self.name == "Gabor" and self.sigma is None:
            raise ValueError("sigma: required key missing (a Gabor filter needs sigma = [sigma_x, sigma_y])")

    def as_pyvsnr(self) -> dict[str, Any]:
        """The dict pyvsnr expects."""
        if self.name == "Dirac":
            return {"name": "Dirac", "noise_level": self.noise_level}
        assert self.sigma is not None
        return {"name": "Gabor", "noise_level": self.noise_level,
                "sigma": (float(self.sigma[0]), float(self.sigma[1])), "theta": float(self.theta)}


@attrs.frozen(kw_only=True)
class WaveletDecomposition:
    """``wavelet_decomposition = { wavelet = "coif3", level = 4, sigma = 4 }``."""

    wavelet: str = attrs.field(default="coif3", metadata={
        "doc": "a discrete wavelet name of PyWavelets (pywt.wavelist(kind='discrete'))", "unit": "-"})
    level: int = attrs.field(default=4, validator=attrs.validators.ge(1), metadata={
        "doc": "decomposition level (PyStack3D passes None when the key is absent: the maximum "
               "level; stack3d uses 4)", "unit": "-"})
    sigma: float = attrs.field(default=4.0, validator=attrs.validators.gt(0), metadata={
        "doc": "width σ of the damping 1 - exp(-m²/(2σ²)) of the vertical detail coefficients "
               "along rows, m being the frequency in cycles per column length", "unit": "cycles"})


def _filters_ok(_: Any, attribute: attrs.Attribute, value: tuple[VsnrFilter, ...] | None) -> None:
    if value is not None and len(value) == 0:
        raise ValueError("filters is empty: give at least one filter table")


@attrs.frozen(kw_only=True)
class DestripingParams:
    """Parameters of ``destriping`` (PyStack3D's keys and defaults, plus ``device``)."""

    TEMPLATE: ClassVar[dict[str, Any]] = {
        "maxit": 50, "cvg_threshold": 1e-2,
        "filters": [{"name": "Gabor", "noise_level": 20, "sigma": [0.5, 200], "theta": 0}]}
    """Values ``stack3d init`` writes (PyStack3D's template): VSNR needs filters."""


    filters: tuple[VsnrFilter, ...] | None = attrs.field(
        default=None, validator=_filters_ok,
        metadata={"doc": "VSNR filters, an array of tables {name, noise_level, sigma, theta}; "
                         "required unless wavelet_decomposition is given", "unit": "-"})
    maxit: int = attrs.field(default=100, validator=attrs.validators.ge(1), metadata={
        "doc": "maximum number of VSNR (ADMM) iterations", "unit": "iterations"})
    cvg_threshold: float = attrs.field(default=0.0, validator=attrs.validators.ge(0), metadata={
        "doc": "stop VSNR once max|X̂ - X̂_prev| / max|X̂| <= this (0: always run maxit)", "unit": "-"})
    wavelet_decomposition: WaveletDecomposition | None = attrs.field(default=None, metadata={
        "doc": "use the wavelet–Fourier method instead of VSNR: {wavelet, level, sigma}", "unit": "-"})
    device: Literal["auto", "cpu", "gpu"] = attrs.field(default="auto", metadata={
        "doc": "VSNR device (stack3d only): 'cpu', 'gpu' = CuPy (error if unavailable), "
               "'auto' = STACK3D_DEVICE if set, else [engine] device, else CuPy when "
               "cupy.is_available()", "unit": "-"})
    backend: Literal["auto", "stack3d", "pyvsnr"] = attrs.field(default="auto", metadata={
        "doc": "VSNR implementation (stack3d only): 'auto' = pyvsnr on CuPy on a GPU, stack3d's "
               "own on the CPU; 'stack3d' = stack3d's own (CPU, float32, ~3x faster than pyvsnr); "
               "'pyvsnr' = pyvsnr (numpy + pyFFTW on the CPU, CuPy on a GPU)", "unit": "-"})

    def validate(self) -> list[str]:
        problems = []
        if self.backend == "stack3d" and self.device == "gpu":
            problems.append("backend = 'stack3d' runs on the CPU but device = 'gpu': use backend = 'auto' "
                            "or 'pyvsnr' for the GPU (pyvsnr on CuPy), or device = 'cpu'")
        if self.wavelet_decomposition is not None:
            import pywt

            name = self.wavelet_decomposition.wavelet
            if name not in pywt.wavelist(kind="discrete"):
                problems.append(f"wavelet_decomposition.wavelet: {name!r} is not a discrete wavelet of "
                                "PyWavelets (e.g. 'coif3', 'db4', 'sym4', 'haar')")
        return problems


@attrs.frozen
class DestripingState:
    """What the workers need: the method and its resolved settings."""

    method: Literal["vsnr", "wavelet"]
    filters: tuple[dict[str, Any], ...] = ()
    device: str = "auto"
    backend: str = "auto"


class Destriping(Step):
    """VSNR or wavelet–Fourier destriping, slice by slice."""

    name = "destriping"
    description = "remove vertical stripes (curtains): VSNR (stack3d or pyvsnr) or wavelet–Fourier filtering"
    Params = DestripingParams
    kind = StepKind.MAP
    recompute = False  # tens of FFTs per slice: stored when a later step needs several passes

    def combine(self, ctx: StepContext, measures: Any) -> DestripingState:
        p = self.params
        if p.wavelet_decomposition is not None:
            import pywt

            wd = p.wavelet_decomposition
            if p.filters is not None:
                ctx.warn("both filters and wavelet_decomposition are set: the wavelet method is used "
                         "and filters are ignored (as in PyStack3D)")
            top = pywt.dwt_max_level(min(ctx.meta.shape), pywt.Wavelet(wd.wavelet).dec_len)
            if wd.level > top:
                ctx.warn(f"wavelet_decomposition.level = {wd.level} exceeds the useful maximum {top} for "
                         f"{wd.wavelet} on {ctx.meta.shape[0]}x{ctx.meta.shape[1]} slices: every coefficient "
                         "is affected by the image borders")
            return DestripingState("wavelet")
        if p.filters is None:
            raise ValueError("set destriping.filters (VSNR) or destriping.wavelet_decomposition")
        device = requested_device(p.device)
        if device == "auto":  # then [engine] device decides
            device = ctx.device
        if p.backend == "stack3d" and device == "gpu":
            ctx.warn("destriping.backend = 'stack3d' runs on the CPU: the GPU requested by STACK3D_DEVICE "
                     "or [engine] device is not used (backend = 'auto' or 'pyvsnr' runs pyvsnr on CuPy)")
        ctx.log.info("destriping: VSNR, backend %s, device %s (driver sees implementation %s)", p.backend,
                     device, resolve_implementation(p.backend, "cpu" if device == "cpu" else "auto"))
        return DestripingState("vsnr", tuple(f.as_pyvsnr() for f in p.filters), device, p.backend)

    def apply(self, image: np.ndarray, index: int, state: DestripingState) -> np.ndarray:
        p = self.params
        if state.method == "wavelet":
            wd = p.wavelet_decomposition
            assert wd is not None
            return wavelet_destripe(image, wavelet=wd.wavelet, level=wd.level, sigma=wd.sigma)
        return vsnr_destripe(image, state.filters, maxit=p.maxit, cvg_threshold=p.cvg_threshold,
                             backend=resolve_implementation(state.backend, state.device))

    def finish(self, ctx: StepContext, state: DestripingState, stats: np.ndarray) -> None:
        p = self.params
        if state.method == "wavelet":
            wd = p.wavelet_decomposition
            assert wd is not None
            how = f"wavelet-Fourier: wavelet={wd.wavelet}, level={wd.level}, sigma={wd.sigma}"
        else:
            impl = resolve_implementation(state.backend, "cpu" if state.device == "cpu" else "auto")
            name = {"stack3d": "stack3d", "numpy": "pyvsnr, numpy", "cupy": "pyvsnr, CuPy"}[impl]
            how = (f"VSNR ({name}, norm=False): maxit={p.maxit}, cvg_threshold={p.cvg_threshold}, "
                   f"backend={state.backend}, device={state.device}\nfilters:\n"
                   + "".join(f"  {f}\n" for f in state.filters))
        write_text(ctx.outputs_dir / "log.txt", f"Slices: {ctx.meta.n} of {ctx.meta.shape}\nMethod: {how}\n")
        before, after = getattr(ctx, "reader", None), getattr(ctx, "output_reader", None)
        if before is not None and after is not None and ctx.meta.n:
            k = ctx.meta.n // 2
            plot_destriping(before.read(ctx.channel, k), after.read(ctx.channel, k),
                            ctx.outputs_dir / "destriping.png", f"destriping: slice {k} ({ctx.names[k]})")


def plot_destriping(before: np.ndarray, after: np.ndarray, path: Path, title: str) -> None:
    """Input, output and removed part (input − output) of one slice, and the column mean of
    the removed part (the stripe profile across x)."""
    from ._figures import new_figure, save_figure

    removed = before.astype(np.float64) - after.astype(np.float64)
    fig, axes = new_figure(2, 2, figsize=(10, 8), margins={"left": 0.05, "right": 0.97, "top": 0.92, "wspace": 0.2})
    lo, hi = np.percentile(before, (1, 99))
    for ax, img, label in ((axes[0, 0], before, "input"), (axes[0, 1], after, "output")):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    bound = float(np.percentile(np.abs(removed), 99.5)) or 1.0
    im = axes[1, 0].imshow(removed, cmap="coolwarm", vmin=-bound, vmax=bound, interpolation="nearest")
    axes[1, 0].set_title("removed (input - output)")
    fig.colorbar(im, ax=axes[1, 0], shrink=0.8)
    axes[1, 1].plot(removed.mean(axis=0), lw=0.8)
    axes[1, 1].set_xlabel("x (column)")
    axes[1, 1].set_ylabel("mean over rows of the removed part")
    axes[1, 1].set_title("stripe profile")
    fig.suptitle(title)
    save_figure(fig, path)


STEPS: list[type[Step]] = [Destriping]
"""The steps this module provides (collected by :mod:`stack3d_steps.plugin`)."""
