"""The clean volume of the synthetic stack: a continuous function ``C(x, y, z)``.

Coordinates are in pixels of the *reference frame* (the frame of slice 0): ``x`` is the
column, ``y`` the row (origin at the centre of the top-left pixel, rows grow downward) and
``z`` the depth along the milling direction in pixels (``z_px = z_um / pixel_size_um``).
Values are fractions of the full dtype scale (0 = black, 1 = dtype maximum).

``C`` is evaluated exactly (no interpolation), so a slice sampled on any affine grid of
``(x, y)`` (a sub-pixel shift, a rotation) is the exact ground truth. It is made of

* a **texture**: ``T = sum_m A_m cos(kx_m x + ky_m y + kz_m z + phi_m)`` (random 3D wave
  vectors, wavelengths log-uniform, amplitude proportional to the wavelength, i.e. 1/f),
  mapped to two soft phases by ``lo + (hi - lo) * (1 + tanh(s * T / sigma_T)) / 2`` with
  ``sigma_T = sqrt(sum A_m**2 / 2)``;
* **spheres** (pores and particles) painted over the texture in table order:
  ``C <- C + alpha * (v - C)`` with ``alpha = smoothstep((h - d) / (2 h))``,
  ``d = |(x, y, z) - centre| - radius`` and ``h`` half the edge width, so ``alpha`` is 1
  inside, 0 beyond ``radius + h`` and continuous in x, y and z.

Only numpy is used. Under an affine map of the pixel grid each wave's phase is
``a * col + b * row + c``, so the texture of a whole slice is one real matrix product
``[A cos(b r + c), -A sin(b r + c)] @ [cos(a col), sin(a col)].T``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Content", "generate_spheres", "generate_waves"]


def generate_waves(rng: np.random.Generator, n_waves: int,
                   wavelength_px: tuple[float, float]) -> dict[str, list[float]]:
    """Random plane waves: isotropic 3D directions, log-uniform wavelengths (px),
    amplitude proportional to the wavelength, uniform phase (rad)."""
    lam_min, lam_max = wavelength_px
    lam = np.exp(rng.uniform(np.log(lam_min), np.log(lam_max), n_waves))
    vec = rng.standard_normal((n_waves, 3))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    k = vec * (2.0 * np.pi / lam)[:, None]
    amp = lam / lam_max
    phase = rng.uniform(0.0, 2.0 * np.pi, n_waves)
    return {"kx": k[:, 0].tolist(), "ky": k[:, 1].tolist(), "kz": k[:, 2].tolist(),
            "amplitude": amp.tolist(), "phase": phase.tolist()}


SPHERE_TILE_PX = 64.0
_TILE_OFFSET = 1 << 20


def generate_spheres(seed: int, box: tuple[float, float, float, float, float, float],
                     volume_fraction: float, pore_fraction: float,
                     radius_px: tuple[float, float]) -> dict[str, list[Any]]:
    """Random spheres whose support may reach ``box = (xmin, xmax, ymin, ymax, zmin,
    zmax)`` (reference px).

    Space is cut into cubic tiles of :data:`SPHERE_TILE_PX`; tile ``(i, j, l)`` draws its
    own spheres from ``default_rng([seed, 5, i + 2**20, j + 2**20, l + 2**20])``: a Poisson
    count with mean ``volume_fraction * tile volume / E[4/3 pi r^3]`` (``r`` uniform in
    ``radius_px``), uniform centres in the tile. The material is therefore the same for a
    given seed whatever the box (drift, slice count). Centres and radii are rounded to
    1e-3 px (short JSON). The table is sorted by (z, y, x), which is also the painting
    order. ``kind`` is 0 for a pore, 1 for a particle.
    """
    rmin, rmax = radius_px
    if rmax > rmin:
        mean_r3 = (rmax**4 - rmin**4) / (4.0 * (rmax - rmin))
    else:
        mean_r3 = rmin**3
    t = SPHERE_TILE_PX
    mean_n = volume_fraction * t**3 / (4.0 / 3.0 * np.pi * mean_r3) if mean_r3 > 0 else 0.0
    reach = rmax + 1.0
    lo = [int(np.floor((box[2 * a] - reach) / t)) for a in range(3)]
    hi = [int(np.floor((box[2 * a + 1] + reach) / t)) for a in range(3)]
    cols: list[np.ndarray] = []
    for i in range(lo[0], hi[0] + 1):
        for j in range(lo[1], hi[1] + 1):
            for m in range(lo[2], hi[2] + 1):
                rng = np.random.default_rng(
                    [seed, 5, i + _TILE_OFFSET, j + _TILE_OFFSET, m + _TILE_OFFSET])
                n = int(rng.poisson(max(mean_n, 0.0)))
                if n == 0:
                    continue
                tab = np.empty((n, 5))
                tab[:, 0] = (i + rng.uniform(0.0, 1.0, n)) * t
                tab[:, 1] = (j + rng.uniform(0.0, 1.0, n)) * t
                tab[:, 2] = (m + rng.uniform(0.0, 1.0, n)) * t
                tab[:, 3] = rng.uniform(rmin, rmax, n)
                tab[:, 4] = rng.uniform(0.0, 1.0, n) >= pore_fraction
                cols.append(tab)
    tab = np.concatenate(cols) if cols else np.empty((0, 5))
    tab[:, :4] = np.round(tab[:, :4], 3)
    lim = tab[:, 3:4] + 1.0
    keep = np.all((tab[:, 0:3] + lim >= [box[0], box[2], box[4]])
                  & (tab[:, 0:3] - lim <= [box[1], box[3], box[5]]), axis=1)
    tab = tab[keep]
    tab = tab[np.lexsort((tab[:, 0], tab[:, 1], tab[:, 2]))]
    return {"x": tab[:, 0].tolist(), "y": tab[:, 1].tolist(), "z": tab[:, 2].tolist(),
            "radius": tab[:, 3].tolist(), "kind": tab[:, 4].astype(np.int64).tolist()}


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class Content:
    """Evaluates the clean volume from explicit wave and sphere tables.

    ``waves``: dict of lists ``kx, ky, kz`` (rad/px), ``amplitude``, ``phase`` (rad).
    ``spheres``: dict of lists ``x, y, z, radius`` (px, reference frame) and ``kind``.
    ``levels``: (lo, hi) texture phase values; ``sharpness``: tanh gain ``s``;
    ``pore_value``/``particle_value``: sphere values; ``edge_px``: width of the soft edge
    (all values in full-scale fractions).
    """

    def __init__(self, *, waves: dict[str, list[float]], spheres: dict[str, list[Any]],
                 levels: tuple[float, float], sharpness: float, pore_value: float,
                 particle_value: float, edge_px: float) -> None:
        self.kx = np.asarray(waves["kx"], dtype=np.float64)
        self.ky = np.asarray(waves["ky"], dtype=np.float64)
        self.kz = np.asarray(waves["kz"], dtype=np.float64)
        self.amp = np.asarray(waves["amplitude"], dtype=np.float64)
        self.phase = np.asarray(waves["phase"], dtype=np.float64)
        self.sigma_t = float(np.sqrt(np.sum(self.amp**2) / 2.0)) or 1.0
        self.sx = np.asarray(spheres["x"], dtype=np.float64)
        self.sy = np.asarray(spheres["y"], dtype=np.float64)
        self.sz = np.asarray(spheres["z"], dtype=np.float64)
        self.sr = np.asarray(spheres["radius"], dtype=np.float64)
        kind = np.asarray(spheres["kind"], dtype=np.int64)
        self.sv = np.where(kind == 0, pore_value, particle_value).astype(np.float64)
        self.r_max = float(self.sr.max()) if self.sr.size else 0.0
        self.lo, self.hi = float(levels[0]), float(levels[1])
        self.sharpness = float(sharpness)
        self.h = 0.5 * float(edge_px)

    # -- texture -------------------------------------------------------------------
    def _phase_map(self, t: np.ndarray) -> np.ndarray:
        u = np.tanh(t * (self.sharpness / self.sigma_t))
        return self.lo + (self.hi - self.lo) * 0.5 * (1.0 + u)

    def texture_grid(self, z_px: float, sampling: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Texture on the grid ``(x, y) = sampling @ (col, row, 1)`` (float64, fraction)."""
        h, w = shape
        s = np.asarray(sampling, dtype=np.float64)
        a = self.kx * s[0, 0] + self.ky * s[1, 0]          # rad per column
        b = self.kx * s[0, 1] + self.ky * s[1, 1]          # rad per row
        c = self.kx * s[0, 2] + self.ky * s[1, 2] + self.kz * z_px + self.phase
        ph_r = np.outer(np.arange(h, dtype=np.float64), b) + c
        ph_c = np.outer(np.arange(w, dtype=np.float64), a)
        left = np.concatenate([self.amp * np.cos(ph_r), -self.amp * np.sin(ph_r)], axis=1)
        right = np.concatenate([np.cos(ph_c), np.sin(ph_c)], axis=1)
        return self._phase_map(left @ right.T)

    # -- spheres -------------------------------------------------------------------
    def _candidates(self, z_px: float) -> np.ndarray:
        """Indices (table order) of spheres whose support reaches the plane ``z_px``."""
        reach = self.r_max + self.h
        i0, i1 = np.searchsorted(self.sz, [z_px - reach, z_px + reach], side="left")
        idx = np.arange(i0, min(i1 + 1, self.sz.size))
        return idx[np.abs(self.sz[idx] - z_px) < self.sr[idx] + self.h]

    def paint_spheres(self, img: np.ndarray, z_px: float, sampling: np.ndarray) -> None:
        """Paint sphere cross-sections at ``z_px`` into ``img`` (in place)."""
        h_img, w_img = img.shape
        s = np.asarray(sampling, dtype=np.float64)
        inv = np.linalg.inv(s)
        for i in self._candidates(z_px):
            xc, yc, zc, rad = self.sx[i], self.sy[i], self.sz[i], self.sr[i]
            dz2 = (z_px - zc) ** 2
            reach = np.sqrt(max((rad + self.h) ** 2 - dz2, 0.0))
            corners = np.array([[xc - reach, xc + reach, xc - reach, xc + reach],
                                [yc - reach, yc - reach, yc + reach, yc + reach],
                                [1.0, 1.0, 1.0, 1.0]])
            cr = inv[:2] @ corners                       # output (col, row) of the corners
            c0 = max(int(np.floor(cr[0].min())), 0)
            c1 = min(int(np.ceil(cr[0].max())) + 1, w_img)
            r0 = max(int(np.floor(cr[1].min())), 0)
            r1 = min(int(np.ceil(cr[1].max())) + 1, h_img)
            if c0 >= c1 or r0 >= r1:
                continue
            cols = np.arange(c0, c1, dtype=np.float64)
            rows = np.arange(r0, r1, dtype=np.float64)[:, None]
            x = s[0, 0] * cols + s[0, 1] * rows + s[0, 2]
            y = s[1, 0] * cols + s[1, 1] * rows + s[1, 2]
            d = np.sqrt((x - xc) ** 2 + (y - yc) ** 2 + dz2) - rad
            alpha = _smoothstep((self.h - d) / (2.0 * self.h))
            sub = img[r0:r1, c0:c1]
            sub += alpha * (self.sv[i] - sub)

    # -- public evaluation ---------------------------------------------------------
    def render(self, z_px: float, sampling: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The clean slice at depth ``z_px`` on the grid ``sampling @ (col, row, 1)``."""
        img = self.texture_grid(z_px, sampling, shape)
        self.paint_spheres(img, z_px, sampling)
        return img

    def at_points(self, x: np.ndarray, y: np.ndarray, z_px: np.ndarray | float) -> np.ndarray:
        """``C`` at arbitrary points (reference px), by direct summation (slow path:
        an independent check of :meth:`render`)."""
        x, y, z = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                      np.asarray(z_px, np.float64))
        shape = x.shape
        x, y, z = x.ravel(), y.ravel(), z.ravel()
        t = np.zeros(x.shape)
        for m in range(self.amp.size):
            t += self.amp[m] * np.cos(self.kx[m] * x + self.ky[m] * y + self.kz[m] * z
                                      + self.phase[m])
        val = self._phase_map(t)
        if z.size == 0:
            return val.reshape(shape)
        reach = self.r_max + self.h
        i0, i1 = np.searchsorted(self.sz, [z.min() - reach, z.max() + reach], side="left")
        for i in range(i0, min(i1 + 1, self.sz.size)):
            d = np.sqrt((x - self.sx[i]) ** 2 + (y - self.sy[i]) ** 2
                        + (z - self.sz[i]) ** 2) - self.sr[i]
            hit = d < self.h
            if np.any(hit):
                alpha = _smoothstep((self.h - d[hit]) / (2.0 * self.h))
                val[hit] += alpha * (self.sv[i] - val[hit])
        return val.reshape(shape)
