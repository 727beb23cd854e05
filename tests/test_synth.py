"""Ground-truth tests of the synthetic stack generator (stack3d_core.testing.synth)."""

from __future__ import annotations

import json
import re
import time

import attrs
import numpy as np
import pytest

from stack3d_core.testing.synth import SynthSpec, from_truth, make_stack

SHAPE = (64, 96)                     # non-square on purpose
ALL_OFF = dict(gains=False, background=False, stripes=False, noise_sigma=0.0,
               nonuniform_z=False, jitter_px=0.0, drift_px_per_slice=(0.0, 0.0))


def small(**kw):
    base = dict(n_slices=12, shape=SHAPE)
    base.update(kw)
    return make_stack(**base)


def test_spec_fields_documented():
    for f in attrs.fields(SynthSpec):
        assert f.metadata.get("doc") and f.metadata.get("unit"), f.name


def test_determinism():
    a, b, c = small(seed=3).volume(), small(seed=3).volume(), small(seed=4).volume()
    assert a.dtype == np.uint8 and a.shape == (12, *SHAPE)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_truth_json_round_trip():
    st = small(n_slices=10, rotation_deg_max=2.0, dtype="uint16")
    text = json.dumps(st.truth)
    twin = from_truth(json.loads(text))
    assert json.dumps(twin.truth) == text
    assert twin.names == st.names
    for k in range(len(st)):
        assert np.array_equal(twin.observed(k), st.observed(k))
    for key in ("conventions", "spec", "slices", "gain_segments", "background", "curtains",
                "noise", "content", "names"):
        assert key in st.truth
    assert len(st.truth["slices"]["matrix"]) == 10


def test_components_are_independent_streams():
    a = small(stripes=True)
    b = small(stripes=False, gains=False, noise_sigma=0.0)
    assert np.array_equal(a.clean(5), b.clean(5))
    assert np.array_equal(a.matrix(5), b.matrix(5))
    np.testing.assert_array_equal(a.z_um, b.z_um)


def test_everything_off_is_quantised_clean():
    st = small(**ALL_OFF)
    for k in (0, 7):
        clean = st.clean(k).astype(np.float64)
        obs = st.observed(k).astype(np.float64)
        assert np.abs(obs - np.clip(np.rint(clean), 0, 255)).max() <= 1
        assert np.abs(obs - clean).max() <= 0.5 + 1e-3


def test_integer_drift_is_a_roll():
    st = small(**{**ALL_OFF, "drift_px_per_slice": (3.0, -2.0)}, dtype="uint16")
    for k in (1, 4, 9):
        dx, dy = st.shift(k)
        assert (dx, dy) == (3.0 * k, -2.0 * k)
        m = int(max(abs(dx), abs(dy)))
        rolled = np.roll(st.clean(k), (int(dy), int(dx)), axis=(0, 1))[m:-m, m:-m]
        shifted = st.clean_at(st.z_um[k], matrix=st.sampling_matrix(k))[m:-m, m:-m]
        np.testing.assert_allclose(shifted, rolled, atol=1e-2)
        obs = st.observed(k)[m:-m, m:-m].astype(np.float64)
        assert np.abs(obs - rolled).max() <= 0.5 + 1e-2


def test_subpixel_drift_matches_direct_evaluation():
    st = small(**{**ALL_OFF, "drift_px_per_slice": (0.37, -0.21), "jitter_px": 0.5},
               dtype="uint16")
    rng = np.random.default_rng(0)
    for k in (3, 11):
        dx, dy = st.shift(k)
        assert dx != round(dx)
        img = st.observed_float(k)
        r = rng.integers(0, SHAPE[0], 300)
        c = rng.integers(0, SHAPE[1], 300)
        # observed[r, c] = clean_k(x = c - dx, y = r - dy), by the slow direct formula
        ref = st.clean_points(c - dx, r - dy, st.z_um[k])
        np.testing.assert_allclose(img[r, c], ref, atol=1e-6 * 65535)
        assert np.abs(st.observed(k)[r, c] - ref).max() <= 0.5 + 1e-6
    one = st.clean_points(10.0, 20.0, st.z_um[3])             # scalars work too
    assert np.ndim(one) == 0 and one == pytest.approx(st.clean(3)[20, 10], abs=0.02)


def test_matrix_convention_with_rotation():
    st = small(**{**ALL_OFF, "drift_px_per_slice": (0.6, -0.4), "jitter_px": 0.7,
                  "rotation_deg_max": 3.0}, n_slices=20, dtype="uint16")
    np.testing.assert_array_equal(st.matrix(0), np.eye(3))
    assert max(abs(st.rotation(k)) for k in range(20)) == pytest.approx(3.0)
    rng = np.random.default_rng(1)
    for k in (5, 13, 19):
        mk = st.matrix(k)
        np.testing.assert_allclose(mk @ st.sampling_matrix(k), np.eye(3), atol=1e-12)
        np.testing.assert_allclose(np.array(st.truth["slices"]["matrix"][k]), mk)
        # reference points p (slice-0 frame) land in observed slice k at q = M_k p
        p = np.stack([rng.uniform(5, SHAPE[1] - 5, 200), rng.uniform(5, SHAPE[0] - 5, 200),
                      np.ones(200)])
        q = mk @ p
        qi = np.rint(q[:2]).astype(int)
        ok = (qi[0] >= 0) & (qi[0] < SHAPE[1]) & (qi[1] >= 0) & (qi[1] < SHAPE[0])
        qi, p = qi[:, ok], (np.linalg.inv(mk) @ np.vstack([qi[:, ok], np.ones(ok.sum())]))
        obs = st.observed_float(k)[qi[1], qi[0]]
        np.testing.assert_allclose(obs, st.clean_points(p[0], p[1], st.z_um[k]), atol=0.07)


def test_particle_centres_follow_the_matrix():
    st = make_stack(**{**ALL_OFF, "drift_px_per_slice": (1.5, 0.8), "jitter_px": 0.6,
                       "rotation_deg_max": 3.0}, n_slices=24, shape=(96, 128),
                    sphere_fraction=0.2)
    sph = st.spheres
    checked = 0
    for k in range(24):
        z = st.z_px[k]
        obs, mk = st.observed(k).astype(float), st.matrix(k)
        rho = np.sqrt(np.maximum(sph["radius"] ** 2 - (sph["z_px"] - z) ** 2, 0))
        for i in np.nonzero((sph["kind"] == 1) & (rho > 4))[0]:
            q = mk @ [sph["x"][i], sph["y"][i], 1.0]
            c, r = int(round(q[0])), int(round(q[1]))
            if not (0 <= r < 96 and 0 <= c < 128):
                continue
            p = np.linalg.solve(mk, [c, r, 1.0])          # reference point of that pixel
            d = np.sqrt((sph["x"] - p[0]) ** 2 + (sph["y"] - p[1]) ** 2
                        + (sph["z_px"] - z) ** 2) - sph["radius"]
            if np.any(d[i + 1:] < 0.5):                  # painted over by a later sphere
                continue
            assert obs[r, c] == pytest.approx(0.88 * 255, abs=1.0)
            checked += 1
    assert checked >= 3


def test_background_matches_polynomial():
    st = small(n_slices=9)
    terms = st.truth["background"]["terms"]
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    x, y = xx / (w - 1), yy / (h - 1)
    for k in (0, 4, 8):
        z = k / 8
        ref = sum(c * x**px * y**py * z**pz for px, py, pz, c in terms)
        np.testing.assert_allclose(st.background(k), ref * 255, atol=1e-3)
    assert np.ptp(st.background(0)) > 0.08 * 255           # amplitude ~0.15 full scale
    assert not np.any(small(background=False).background(3))


def test_stripes_match_independent_render():
    st = small(n_slices=30, stripe_density=0.05)
    cur = {k: np.asarray(v, float) for k, v in st.truth["curtains"].items()}
    h, w = SHAPE
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    for k in (0, 10, 29):
        ref = np.zeros(SHAPE)
        for i in np.nonzero((cur["k_start"] <= k) & (k < cur["k_stop"]))[0]:
            amp = cur["amplitude"][i] * (1 + cur["variation"][i] * np.sin(
                2 * np.pi * (k - cur["k_start"][i]) / cur["period"][i] + cur["phase"][i]))
            length = cur["length"][i]
            prof = (np.ones_like(rows) if length == 0
                    else np.where(rows < length, (1 - rows / length) ** 2, 0.0))
            xc = cur["x0"][i] + np.tan(np.deg2rad(cur["tilt_deg"][i])) * rows
            ref += amp * prof * np.exp(-(cols - xc) ** 2 / (2 * cur["sigma"][i] ** 2))
        np.testing.assert_allclose(st.stripes(k), ref * 255, atol=1e-3)
    # curtains are narrow vertical features persisting over consecutive slices
    s4, s5 = st.stripes(4), st.stripes(5)
    assert np.corrcoef(s4.ravel(), s5.ravel())[0, 1] > 0.5
    col_energy = np.sort((s4.astype(float) ** 2).sum(axis=0))[::-1]
    n90 = np.searchsorted(np.cumsum(col_energy), 0.9 * col_energy.sum()) + 1
    assert 0 < n90 <= w // 3                      # energy sits in a few columns


def test_observed_is_defects_in_physical_order():
    st = small(rotation_deg_max=1.0, dtype="uint16")
    fs = 65535
    for k in range(len(st)):
        g, o = st.gain_offset(k)
        content = st.clean_at(st.z_um[k], matrix=st.sampling_matrix(k)).astype(float)
        ref = g * content + o * fs + st.background(k) + st.stripes(k) + st.noise(k)
        np.testing.assert_allclose(st.observed_float(k), ref, atol=0.02)
    assert st.gain_offset(0) == (1.0, 0.0)
    gains = np.array(st.truth["slices"]["gain"])
    for start, stop, g, o in st.truth["gain_segments"]:
        assert g in gains[start:stop] and o != 0
    assert set(np.round(gains, 3)) - {1.0}, "no gain jump"
    noise = st.noise(3) / fs
    assert noise.std() == pytest.approx(0.01, rel=0.1)


def test_z_positions_and_names():
    st = small(n_slices=60)
    dz = np.diff(st.z_um)
    assert np.all(dz > 0) and st.z_um[0] == 0.0
    assert dz.min() < 0.95 * 0.01 and dz.max() > 1.5 * 0.01       # jitter + doubled step
    for name, z in zip(st.names, st.z_um):
        m = re.fullmatch(r"slice_(\d{4})_z=([0-9.]+)um\.tif", name)
        assert m and abs(float(m.group(2)) - z) < 1e-4
    np.testing.assert_array_equal(st.z_px, st.z_um / 0.01)
    uni = small(n_slices=60, nonuniform_z=False)
    np.testing.assert_allclose(np.diff(uni.z_um), 0.01, atol=1e-9)


@pytest.mark.parametrize("dtype, fs", [("uint8", 255), ("uint16", 65535)])
def test_dtype_range(dtype, fs):
    v = small(dtype=dtype, n_slices=6).volume()
    assert v.dtype == np.dtype(dtype)
    assert 0.2 * fs < v.mean() < 0.8 * fs
    assert v.max() > 0.6 * fs and v.min() < 0.35 * fs
    clean = small(dtype=dtype, n_slices=6).clean(2)
    assert 0.04 * fs < clean.min() and clean.max() < 0.96 * fs


def test_single_slice_and_bad_specs():
    st = make_stack(n_slices=1, shape=(16, 24))
    assert st.observed(0).shape == (16, 24) and st.z_um.tolist() == [0.0]
    with pytest.raises(ValueError):
        make_stack(dtype="float32")
    with pytest.raises(IndexError):
        st.observed(1)


def test_render_time_1024():
    st = make_stack(n_slices=4, shape=(1024, 1024))
    st.observed(1)
    t0 = time.perf_counter()
    img = st.observed(2)
    dt = time.perf_counter() - t0
    print(f"\n1024x1024 observed slice: {dt:.3f} s")
    assert img.shape == (1024, 1024)
    assert dt < 5.0                                            # loose: shared CI machines
