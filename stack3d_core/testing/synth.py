"""A synthetic FIB-SEM-like stack with exact ground truth (numpy + attrs only).

>>> import json
>>> stack = make_stack(n_slices=8, shape=(64, 96))
>>> img = stack.observed(3)                 # uint8 slice with every defect
>>> same = from_truth(json.loads(json.dumps(stack.truth)))

**Clean volume.** A continuous function ``C(x, y, z)`` (see :mod:`._synth_content`):
two-phase texture from plane waves plus spherical pores (dark) and particles (bright),
evaluated exactly at any point, so shifted or rotated slices need no interpolation.

**Coordinates.** ``x`` = column, ``y`` = row, in pixels, origin at the centre of the
top-left pixel (0, 0), rows grow downward. The *reference frame* is the frame of slice 0
(the clean volume's own frame). Depth: ``z_um[k]`` is the true position of slice ``k`` in
µm (the value written in its file name, exactly); the clean volume is sampled at
``z_px = z_um / pixel_size_um``.

**Units.** Parameters and the truth JSON use fractions of the full dtype scale (1.0 = 255
for uint8, 65535 for uint16). Image-returning methods return float32 in full-scale units
(0..dtype max), except :meth:`SyntheticStack.observed` (the dtype itself).

**Defects, in physical order** (each can be switched off in :class:`SynthSpec`):

1. non-uniform z steps; 2. drift/jitter/rotation (and optionally per-axis scale and
   shear: ``scale_max``, ``shear_max``, off by default): ``observed_k[q] = C(M_k^-1 q, z_k)``,
   where ``M_k`` (:meth:`SyntheticStack.matrix`) maps reference coordinates
   ``(x=col, y=row, 1)`` to the coordinates of the same material point in observed slice
   ``k`` -- i.e. the inverse map that ``skimage.transform.warp(observed_k, M_k)`` needs to
   bring slice ``k`` back into the slice-0 frame (PyStack3D/pystackreg convention);
3. gain and offset ``g_k * I + o_k``; 4. polynomial background; 5. curtains (stripes, in
   the detector frame); 6. Gaussian noise; 7. rounding (``numpy.rint``) and clipping to the
   dtype.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np

from . import _synth_defects as _d
from ._synth_content import Content, generate_spheres, generate_waves

__all__ = ["SynthSpec", "SyntheticStack", "from_truth", "make_stack"]

TRUTH_FORMAT = "stack3d.synth"
TRUTH_VERSION = 1
_TAG = {"z": 1, "motion": 2, "gains": 3, "waves": 4, "spheres": 5, "curtains": 6, "noise": 7,
        "scale": 8, "shear": 9}
_AFFINE_SPEC = ("scale_max", "shear_max")
"""Optional spec fields left out of the truth JSON at their default (0), so that stacks
without them keep their truth byte for byte (and older truth files still load)."""
_DTYPES = {"uint8": 255, "uint16": 65535}


def _f(doc: str, unit: str, default: Any, **kw: Any) -> Any:
    return attrs.field(default=default, metadata={"doc": doc, "unit": unit}, **kw)


_pos = attrs.validators.gt(0)
_nonneg = attrs.validators.ge(0)


@attrs.frozen(kw_only=True)
class SynthSpec:
    """Everything that defines a synthetic stack (intensities: full-scale fractions)."""

    n_slices: int = _f("number of slices", "slices", 64, validator=attrs.validators.ge(1))
    shape: tuple[int, int] = _f("slice shape (rows H, columns W)", "px", (256, 256))
    dtype: str = _f("output dtype", "uint8 | uint16", "uint8",
                    validator=attrs.validators.in_(tuple(_DTYPES)))
    seed: int = _f("seed of every random component", "-", 0, validator=_nonneg)
    pixel_size_um: float = _f("in-plane pixel size", "µm", 0.01, validator=_pos)
    dz_um: float = _f("nominal slice spacing", "µm", 0.01, validator=_pos)
    drift_px_per_slice: tuple[float, float] = _f("linear drift (dx, dy) per slice", "px/slice",
                                                 (0.2, -0.1))
    jitter_px: float = _f("std of the random per-slice shift (x and y)", "px", 0.5,
                          validator=_nonneg)
    rotation_deg_max: float = _f("max |rotation| about the image centre (smooth in k)", "deg",
                                 0.0, validator=_nonneg)
    scale_max: float = _f("max |scale - 1| per axis about the image centre (independent smooth "
                          "curves in k for x and y; 0: off)", "fraction", 0.0,
                          validator=[_nonneg, attrs.validators.lt(0.5)])
    shear_max: float = _f("max |shear| (x += shear * y about the image centre, smooth in k; 0: off)",
                          "-", 0.0, validator=[_nonneg, attrs.validators.lt(0.5)])
    gains: bool = _f("apply gain/offset jumps", "-", True)
    background: bool = _f("add the polynomial background", "-", True)
    stripes: bool = _f("add curtains (vertical stripes)", "-", True)
    noise_sigma: float = _f("std of the Gaussian noise (0: off)", "full scale", 0.01,
                            validator=_nonneg)
    nonuniform_z: bool = _f("jittered and occasionally doubled z steps", "-", True)
    name_pattern: str = _f("file-name pattern, fields index and z (µm)", "-",
                           "slice_{index:04d}_z={z:.4f}um.tif")
    z_jitter: float = _f("relative z-step jitter, uniform in +-z_jitter", "dz", 0.2,
                         validator=[_nonneg, attrs.validators.lt(1)])
    z_double_prob: float = _f("probability that a z step is doubled", "-", 0.03,
                              validator=_nonneg)
    n_waves: int = _f("number of plane waves of the texture", "-", 96, validator=_nonneg)
    wavelength_px: tuple[float, float] = _f("texture wavelength range (log-uniform)", "px",
                                            (4.0, 50.0))
    texture_levels: tuple[float, float] = _f("grey levels of the two texture phases",
                                             "full scale", (0.3, 0.65))
    texture_sharpness: float = _f("tanh gain of the texture (higher: sharper phases)", "-", 2.0)
    sphere_fraction: float = _f("volume fraction of pores + particles", "-", 0.06,
                                validator=_nonneg)
    pore_fraction: float = _f("share of the spheres that are pores", "-", 0.5)
    radius_px: tuple[float, float] = _f("sphere radius range (uniform)", "px", (3.0, 20.0))
    pore_value: float = _f("pore grey level", "full scale", 0.08)
    particle_value: float = _f("particle grey level", "full scale", 0.88)
    edge_px: float = _f("width of the soft sphere edge (smoothstep)", "px", 1.0, validator=_pos)
    n_gain_segments: int | None = _f("gain/offset jump segments (None: n_slices // 32, >= 1)",
                                     "-", None)
    background_terms: tuple[tuple[int, int, int, float], ...] = _f(
        "background terms (px, py, pz, coefficient) on x=col/(W-1), y=row/(H-1), z=k/(n-1)",
        "full scale",
        ((0, 0, 0, -0.02), (1, 0, 0, 0.10), (0, 1, 0, -0.12), (0, 2, 0, 0.12), (1, 0, 1, -0.08)))
    stripe_density: float = _f("mean number of active curtains per slice and image column",
                               "1/px", 0.02, validator=_nonneg)
    stripe_sigma_px: tuple[float, float] = _f("curtain Gaussian width range", "px", (0.5, 2.0))
    stripe_length_px: tuple[float, float] = _f("curtain decay length range from the top edge",
                                               "px", (50.0, 300.0))
    stripe_full_height_fraction: float = _f("share of curtains spanning the whole height", "-",
                                            0.3)
    stripe_amplitude: tuple[float, float] = _f("curtain |amplitude| range (random sign)",
                                               "full scale", (0.05, 0.15))
    stripe_tilt_deg_max: float = _f("max |tilt| of a curtain from vertical", "deg", 3.0)
    stripe_run_slices: tuple[int, int] = _f("range of consecutive slices a curtain lasts",
                                            "slices", (5, 40))

    @property
    def full_scale(self) -> int:
        """The dtype maximum (255 or 65535)."""
        return _DTYPES[self.dtype]


CONVENTIONS = {
    "units": "Intensities in this JSON are fractions of the full dtype scale (1.0 = full_scale"
             " = 255 for uint8, 65535 for uint16). Lengths in px unless the key says _um;"
             " angles in degrees.",
    "switches": "Tables are saved even for a defect that is off; spec.gains, spec.background,"
                " spec.stripes, spec.noise_sigma > 0 and spec.nonuniform_z say what is applied.",
    "image_coordinates": "x = column, y = row, in px; origin at the centre of the top-left"
                         " pixel (0, 0); rows grow downward.",
    "z": "slices.z_um[k] is the true position of slice k in µm, identical to the value in"
         " names[k]; the clean volume is sampled at depth z_px = z_um / pixel_size_um.",
    "order": "observed_k = clip(rint(full_scale * (gain_k * C(inverse(M_k) @ (col, row, 1),"
             " z_px_k) + offset_k + background_k + stripes_k + noise_k)), 0, full_scale)",
    "matrix": "slices.matrix[k] (3x3, row-major) maps reference = slice-0 coordinates"
              " (x=col, y=row, 1) to the coordinates of the same material point in observed"
              " slice k: q = R(theta_k) (p - ctr) + ctr + (dx_k, dy_k), ctr = ((W-1)/2,"
              " (H-1)/2), R = [[cos, -sin], [sin, cos]]. It is the inverse map of"
              " skimage.transform.warp: warp(observed_k, M_k) gives slice k in the slice-0"
              " frame. Without rotation observed_k[r, c] = clean_k(x = c - dx_k, y = r - dy_k).",
    "gain": "gain_k and offset_k per slice, from gain_segments [start, stop, gain, offset]"
            " (start <= k < stop, later segments win); elsewhere 1 and 0 (all 1 and 0 when"
            " spec.gains is false); slices.gain/offset hold the values applied.",
    "background": "sum over terms [px, py, pz, c] of c * xh**px * yh**py * zh**pz, xh ="
                  " linspace(0, 1, W)[col], yh = linspace(0, 1, H)[row] (top row 0), zh ="
                  " k / (n - 1) (0 if n == 1); detector frame (does not move with drift).",
    "stripes": "curtains active for k_start <= k < k_stop add A_k * exp(-(col - xc)**2 /"
               " (2 sigma**2)) * p(row), xc = x0 + tan(tilt_deg) * row, p = (1 - row /"
               " length)**2 for row < length else 0, or 1 if length == 0, A_k = amplitude *"
               " (1 + variation * sin(2 pi (k - k_start) / period + phase)); Gaussian"
               " evaluated within ceil(5 sigma) + 1 columns of xc; detector frame.",
    "noise": "noise_k = sigma * numpy.random.default_rng([seed, 7, k]).standard_normal((H, W))",
    "content": "C = lo + (hi - lo) (1 + tanh(s T / sigma_T)) / 2, T = sum amplitude *"
               " cos(kx x + ky y + kz z_px + phase), sigma_T = sqrt(sum amplitude**2 / 2);"
               " then spheres in table order: C += alpha (v - C), alpha = smoothstep((h - d) /"
               " (2 h)), d = |(x, y, z_px) - centre| - radius, h = edge_px / 2, v = pore_value"
               " (kind 0) or particle_value (kind 1). Spheres exist only near the field of"
               " view of the stack (reference px box in content.sphere_box).",
}

AFFINE_CONVENTION = (
    "present only when spec.scale_max or spec.shear_max is set: slices.scale_x/scale_y/shear[k] give"
    " K_k = [[scale_x, shear * scale_y], [0, scale_y]] and the matrix becomes q = R(theta) K (p - ctr)"
    " + ctr + (dx_k, dy_k) (scale per axis, then shear x += shear * y, then rotation, all about"
    " ctr); without these keys K = I.")


class SyntheticStack:
    """A synthetic stack built from a :class:`SynthSpec`; holds only small tables and
    renders any slice on demand (memory: a few slices).

    Attributes: ``spec``; ``truth`` (JSON-ready dict, see :data:`CONVENTIONS`); ``names``;
    ``z_um`` (float64, µm); ``z_px``; ``shape``; ``full_scale``.
    """

    def __init__(self, spec: SynthSpec, tables: dict[str, Any]) -> None:
        self.spec = spec
        self.shape: tuple[int, int] = (int(spec.shape[0]), int(spec.shape[1]))
        self.full_scale: int = spec.full_scale
        n = spec.n_slices
        sl = tables["slices"]
        self.z_um = np.asarray(sl["z_um"], dtype=np.float64)
        self.z_px = self.z_um / spec.pixel_size_um
        self._dx = np.asarray(sl["dx_px"], dtype=np.float64)
        self._dy = np.asarray(sl["dy_px"], dtype=np.float64)
        self._theta = np.asarray(sl["theta_deg"], dtype=np.float64)
        self._affine = any(k in sl for k in ("scale_x", "scale_y", "shear"))
        self._sx = np.asarray(sl.get("scale_x", np.ones(n)), dtype=np.float64)
        self._sy = np.asarray(sl.get("scale_y", np.ones(n)), dtype=np.float64)
        self._shear = np.asarray(sl.get("shear", np.zeros(n)), dtype=np.float64)
        if not all(len(a) == n for a in (self.z_um, self._dx, self._dy, self._theta, self._sx, self._sy,
                                         self._shear)):
            raise ValueError("per-slice tables do not match n_slices")
        self._segments = [list(s) for s in tables["gain_segments"]]
        self._gain, self._offset = _d.gain_tables(n, self._segments if spec.gains else [])
        ct = tables["content"]
        self.content = Content(waves=ct["waves"], spheres=ct["spheres"],
                               levels=spec.texture_levels, sharpness=spec.texture_sharpness,
                               pore_value=spec.pore_value, particle_value=spec.particle_value,
                               edge_px=spec.edge_px)
        self._curtains = {k: np.asarray(v, dtype=np.int64 if k.startswith("k_") else np.float64)
                          for k, v in tables["curtains"].items()}
        self.names: tuple[str, ...] = tuple(
            spec.name_pattern.format(index=k, z=z) for k, z in enumerate(self.z_um.tolist()))
        for a in (self.z_um, self.z_px):
            a.flags.writeable = False
        self.truth: dict[str, Any] = self._build_truth(tables)

    def _build_truth(self, tables: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec
        mats = [self.matrix(k).tolist() for k in range(spec.n_slices)]
        spec_dict = attrs.asdict(spec)
        conventions = dict(CONVENTIONS)
        slices = {"z_um": self.z_um.tolist(), "dx_px": self._dx.tolist(), "dy_px": self._dy.tolist(),
                  "theta_deg": self._theta.tolist()}
        if self._affine:
            conventions["affine"] = AFFINE_CONVENTION
            slices.update(scale_x=self._sx.tolist(), scale_y=self._sy.tolist(), shear=self._shear.tolist())
        for key in _AFFINE_SPEC:
            if spec_dict[key] == 0:
                del spec_dict[key]
        return {
            "format": TRUTH_FORMAT, "version": TRUTH_VERSION,
            "conventions": conventions,
            "spec": spec_dict,
            "full_scale": self.full_scale, "shape": list(self.shape),
            "names": list(self.names),
            "slices": {**slices, "gain": self._gain.tolist(), "offset": self._offset.tolist(),
                       "matrix": mats},
            "gain_segments": self._segments,
            "background": {"enabled": spec.background,
                           "terms": [list(t) for t in spec.background_terms]},
            "curtains": tables["curtains"],
            "noise": {"sigma": spec.noise_sigma, "seed": [spec.seed, _TAG["noise"]]},
            "content": tables["content"],
        }

    # -- small per-slice quantities -------------------------------------------------
    def __len__(self) -> int:
        return self.spec.n_slices

    def shift(self, k: int) -> tuple[float, float]:
        """Translation ``(dx, dy)`` of slice ``k`` in px (content moves by +d)."""
        return float(self._dx[k]), float(self._dy[k])

    def rotation(self, k: int) -> float:
        """Rotation of slice ``k`` about the image centre, degrees."""
        return float(self._theta[k])

    def scale_shear(self, k: int) -> tuple[float, float, float]:
        """``(scale_x, scale_y, shear)`` of slice ``k`` (``(1, 1, 0)`` unless ``scale_max`` or
        ``shear_max`` is set)."""
        return float(self._sx[k]), float(self._sy[k]), float(self._shear[k])

    def matrix(self, k: int) -> np.ndarray:
        """3x3 ``M_k``: reference (slice-0) ``(x=col, y=row, 1)`` -> coordinates of the same
        material in observed slice ``k`` (inverse map for ``skimage.transform.warp``)."""
        if self._affine:
            return _d.motion_matrix(self._dx[k], self._dy[k], self._theta[k], self.shape,
                                    self._sx[k], self._sy[k], self._shear[k])
        return _d.motion_matrix(self._dx[k], self._dy[k], self._theta[k], self.shape)

    def sampling_matrix(self, k: int) -> np.ndarray:
        """``M_k^-1``: observed ``(col, row, 1)`` of slice ``k`` -> reference coordinates."""
        if self._affine:
            return _d.inverse_motion_matrix(self._dx[k], self._dy[k], self._theta[k], self.shape,
                                            self._sx[k], self._sy[k], self._shear[k])
        return _d.inverse_motion_matrix(self._dx[k], self._dy[k], self._theta[k], self.shape)

    def gain_offset(self, k: int) -> tuple[float, float]:
        """``(gain, offset)`` of slice ``k``; offset in full-scale fractions."""
        return float(self._gain[k]), float(self._offset[k])

    @property
    def spheres(self) -> dict[str, np.ndarray]:
        """Sphere table (reference px; ``z`` in px of depth; ``kind`` 0 pore, 1 particle)."""
        c = self.content
        kind = np.asarray(self.truth["content"]["spheres"]["kind"], dtype=np.int64)
        return {"x": c.sx.copy(), "y": c.sy.copy(), "z_px": c.sz.copy(),
                "radius": c.sr.copy(), "kind": kind}

    # -- images ------------------------------------------------------------------
    def _fs(self, a: np.ndarray) -> np.ndarray:
        return (a * self.full_scale).astype(np.float32)

    def clean_at(self, z_um: float, *, matrix: np.ndarray | None = None,
                 shape: tuple[int, int] | None = None) -> np.ndarray:
        """Clean slice at depth ``z_um`` (float32, full-scale units).

        ``matrix`` (3x3, default identity) maps output ``(col, row, 1)`` to reference
        coordinates (an inverse map, as for warp); ``shape`` defaults to the stack's.
        """
        s = np.eye(3) if matrix is None else np.asarray(matrix, dtype=np.float64)
        return self._fs(self.content.render(z_um / self.spec.pixel_size_um, s,
                                            shape or self.shape))

    def clean(self, k: int) -> np.ndarray:
        """Clean slice at ``z_um[k]`` in the slice-0 frame (float32, full-scale units)."""
        return self.clean_at(float(self.z_um[k]))

    def clean_points(self, x: Any, y: Any, z_um: Any) -> np.ndarray:
        """``C`` at arbitrary reference points (float64, full-scale units), by direct
        summation; an independent check of the fast grid renderer."""
        return self.content.at_points(x, y, np.asarray(z_um) / self.spec.pixel_size_um) \
            * self.full_scale

    def _background(self, k: int) -> np.ndarray:
        if not self.spec.background:
            return np.zeros(self.shape)
        return _d.background_image(self.spec.background_terms, k, len(self), self.shape)

    def _stripes(self, k: int) -> np.ndarray:
        if not self.spec.stripes:
            return np.zeros(self.shape)
        return _d.stripes_image(self._curtains, k, self.shape)

    def _noise(self, k: int) -> np.ndarray:
        if self.spec.noise_sigma <= 0:
            return np.zeros(self.shape)
        rng = np.random.default_rng([self.spec.seed, _TAG["noise"], int(k)])
        return self.spec.noise_sigma * rng.standard_normal(self.shape)

    def background(self, k: int) -> np.ndarray:
        """Background added to slice ``k`` (float32, full-scale units; zeros if off)."""
        return self._fs(self._background(k))

    def stripes(self, k: int) -> np.ndarray:
        """Curtain image added to slice ``k`` (float32, full-scale units; zeros if off)."""
        return self._fs(self._stripes(k))

    def noise(self, k: int) -> np.ndarray:
        """Noise added to slice ``k`` (float32, full-scale units; zeros if off)."""
        return self._fs(self._noise(k))

    def observed_float(self, k: int) -> np.ndarray:
        """Slice ``k`` with all defects before quantisation (float64, full-scale units)."""
        k = int(k)
        if not 0 <= k < len(self):
            raise IndexError(f"slice {k} out of range 0..{len(self) - 1}")
        img = self.content.render(float(self.z_px[k]), self.sampling_matrix(k), self.shape)
        g, o = self.gain_offset(k)
        if g != 1.0 or o != 0.0:
            img *= g
            img += o
        if self.spec.background:
            img += self._background(k)
        if self.spec.stripes:
            img += self._stripes(k)
        if self.spec.noise_sigma > 0:
            img += self._noise(k)
        img *= self.full_scale
        return img

    def observed(self, k: int) -> np.ndarray:
        """Slice ``k`` as acquired: every enabled defect, rounded and clipped to the dtype."""
        img = np.rint(self.observed_float(k))
        np.clip(img, 0, self.full_scale, out=img)
        return img.astype(self.spec.dtype)

    def iter_observed(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(name, observed slice)`` in order, one slice at a time."""
        for k, name in enumerate(self.names):
            yield name, self.observed(k)

    def volume(self) -> np.ndarray:
        """All observed slices as one ``(n, H, W)`` array (small stacks only)."""
        return np.stack([self.observed(k) for k in range(len(self))])

    def to_json(self, **kw: Any) -> str:
        """``json.dumps(self.truth)``."""
        return json.dumps(self.truth, **kw)


def _sphere_box(spec: SynthSpec, motion: dict[str, list[float]],
                z_um: list[float]) -> list[float]:
    """Reference-frame box (px) seen by any slice, widened by a 16 px margin."""
    h, w = spec.shape
    corners = np.array([[0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], float)
    n = len(motion["dx_px"])
    sx, sy, sh = (motion.get(key, [default] * n) for key, default in
                  (("scale_x", 1.0), ("scale_y", 1.0), ("shear", 0.0)))
    pts = [_d.inverse_motion_matrix(dx, dy, th, (h, w), *affine)[:2] @ corners
           for dx, dy, th, *affine in zip(motion["dx_px"], motion["dy_px"], motion["theta_deg"], sx, sy, sh)]
    xy = np.concatenate(pts, axis=1)
    m = 16.0 + spec.edge_px
    z = np.asarray(z_um) / spec.pixel_size_um
    return [float(np.floor(xy[0].min() - m)), float(np.ceil(xy[0].max() + m)),
            float(np.floor(xy[1].min() - m)), float(np.ceil(xy[1].max() + m)),
            float(np.floor(z.min() - m)), float(np.ceil(z.max() + m))]


def make_stack(spec: SynthSpec | None = None, **overrides: Any) -> SyntheticStack:
    """Build a stack from ``spec`` (default :class:`SynthSpec`) with field ``overrides``.

    Each random component has its own stream ``default_rng([seed, tag])``, so switching a
    defect off leaves the others (and the material) unchanged.
    """
    spec = attrs.evolve(spec or SynthSpec(), **overrides)
    n, (h, w), seed = spec.n_slices, spec.shape, spec.seed
    if h < 1 or w < 1:
        raise ValueError(f"shape must be positive, got {spec.shape}")

    def rng(tag: str) -> np.random.Generator:
        return np.random.default_rng([seed, _TAG[tag]])

    z_um = _d.generate_z(rng("z"), n, spec.dz_um, spec.nonuniform_z, spec.z_jitter,
                         spec.z_double_prob, _d.z_decimals(spec.name_pattern))
    motion = _d.generate_motion(rng("motion"), n, spec.drift_px_per_slice, spec.jitter_px,
                                spec.rotation_deg_max)
    if spec.scale_max > 0 or spec.shear_max > 0:
        motion.update(_d.generate_affine(rng("scale"), rng("shear"), n, spec.scale_max, spec.shear_max))
    segments = _d.generate_gain_segments(rng("gains"), n, spec.n_gain_segments)
    waves = generate_waves(rng("waves"), spec.n_waves, spec.wavelength_px)
    box = _sphere_box(spec, motion, z_um)
    spheres = generate_spheres(seed, tuple(box), spec.sphere_fraction, spec.pore_fraction,
                               spec.radius_px)
    curtains = _d.generate_curtains(
        rng("curtains"), n, w, spec.stripe_density, spec.stripe_sigma_px,
        spec.stripe_length_px, spec.stripe_full_height_fraction, spec.stripe_amplitude,
        spec.stripe_tilt_deg_max, spec.stripe_run_slices)
    tables = {"slices": {"z_um": z_um, **motion}, "gain_segments": segments,
              "content": {"waves": waves, "spheres": spheres, "sphere_box": box},
              "curtains": curtains}
    return SyntheticStack(spec, tables)


def _spec_from_dict(d: dict[str, Any]) -> SynthSpec:
    kw: dict[str, Any] = {}
    names = {f.name for f in attrs.fields(SynthSpec)}
    for key, val in d.items():
        if key not in names:
            raise ValueError(f"unknown SynthSpec field in truth: {key!r}")
        if key == "background_terms":
            val = tuple((int(a), int(b), int(c), float(v)) for a, b, c, v in val)
        elif isinstance(val, list):
            val = tuple(val)
        kw[key] = val
    return SynthSpec(**kw)


def from_truth(truth: dict[str, Any]) -> SyntheticStack:
    """Rebuild a stack from its ``truth`` dict (e.g. after a JSON round trip). Uses the
    saved tables, not the generators, so it renders identically."""
    if truth.get("format") != TRUTH_FORMAT or truth.get("version") != TRUTH_VERSION:
        raise ValueError(f"not a {TRUTH_FORMAT} v{TRUTH_VERSION} truth dict")
    spec = _spec_from_dict(truth["spec"])
    sl = truth["slices"]
    tables = {"slices": {k: sl[k] for k in ("z_um", "dx_px", "dy_px", "theta_deg", "scale_x", "scale_y", "shear")
                         if k in sl},
              "gain_segments": truth["gain_segments"], "content": truth["content"],
              "curtains": truth["curtains"]}
    return SyntheticStack(spec, tables)
