"""The optional per-slice scale and shear of the synthetic stack (``SynthSpec.scale_max``,
``shear_max``): exact ground truth when on, nothing changes when off."""

from __future__ import annotations

import json

import numpy as np

from stack3d_core.testing.synth import SynthSpec, from_truth, make_stack

SHAPE = (48, 64)
STATIC = dict(n_slices=20, shape=SHAPE, gains=False, background=False, stripes=False, noise_sigma=0.0,
              nonuniform_z=False, dz_um=1e-6, name_pattern="s_{index:03d}_z={z:.8f}um.tif")


def test_defaults_leave_every_output_and_the_truth_unchanged() -> None:
    plain = make_stack(SynthSpec(n_slices=12, shape=SHAPE, rotation_deg_max=2.0, seed=3))
    assert "scale_max" not in plain.truth["spec"] and "shear_max" not in plain.truth["spec"]
    assert not {"scale_x", "scale_y", "shear"} & set(plain.truth["slices"])
    assert "affine" not in plain.truth["conventions"]
    assert plain.scale_shear(5) == (1.0, 1.0, 0.0)
    # an older truth JSON (without the new keys) still loads and renders the same stack
    twin = from_truth(json.loads(plain.to_json()))
    assert json.dumps(twin.truth) == plain.to_json()
    assert np.array_equal(twin.volume(), plain.volume())


def test_scale_and_shear_are_smooth_bounded_and_in_the_matrices() -> None:
    st = make_stack(SynthSpec(**STATIC, scale_max=0.01, shear_max=0.02, rotation_deg_max=1.5, seed=2))
    sl = st.truth["slices"]
    sx, sy, sh = (np.array(sl[k]) for k in ("scale_x", "scale_y", "shear"))
    assert (sx[0], sy[0], sh[0]) == (1.0, 1.0, 0.0)
    assert np.isclose(np.abs(sx - 1).max(), 0.01) and np.isclose(np.abs(sy - 1).max(), 0.01)
    assert np.isclose(np.abs(sh).max(), 0.02) and not np.allclose(sx, sy)
    assert np.abs(np.diff(sx, 2)).max() < 0.01  # smooth in k
    assert st.truth["spec"]["scale_max"] == 0.01 and "affine" in st.truth["conventions"]
    h, w = SHAPE
    ctr = np.array([(w - 1) / 2, (h - 1) / 2])
    for k in (0, 7, 19):
        m = st.matrix(k)
        np.testing.assert_allclose(m @ st.sampling_matrix(k), np.eye(3), atol=1e-12)
        th = np.deg2rad(st.rotation(k))
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        lin = rot @ np.array([[sx[k], sh[k] * sy[k]], [0, sy[k]]])
        np.testing.assert_allclose(m[:2, :2], lin, atol=1e-12)
        np.testing.assert_allclose(m[:2, :2] @ ctr + m[:2, 2], ctr + np.array(st.shift(k)), atol=1e-9)
        np.testing.assert_allclose(np.array(sl["matrix"][k]), m, atol=0)
    twin = from_truth(json.loads(st.to_json()))
    assert twin.to_json() == st.to_json() and np.array_equal(twin.observed(7), st.observed(7))


def test_observed_slice_shows_the_material_at_the_mapped_point() -> None:
    st = make_stack(SynthSpec(**STATIC, scale_max=0.03, shear_max=0.03, rotation_deg_max=3.0, seed=5,
                              drift_px_per_slice=(0.7, -0.4)))
    k = 19
    obs = st.observed_float(k) / st.full_scale
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, SHAPE[0], 30), rng.integers(0, SHAPE[1], 30)
    ref = st.sampling_matrix(k) @ np.stack([cols, rows, np.ones(30)])
    expected = st.clean_points(ref[0], ref[1], np.full(30, st.z_um[k])) / st.full_scale
    np.testing.assert_allclose(obs[rows, cols], expected, atol=1e-6)


def test_switching_the_affine_part_on_changes_nothing_else() -> None:
    a = make_stack(SynthSpec(**STATIC, seed=4, rotation_deg_max=2.0))
    b = make_stack(SynthSpec(**STATIC, seed=4, rotation_deg_max=2.0, scale_max=0.01, shear_max=0.01))
    assert a.shift(9) == b.shift(9) and a.rotation(9) == b.rotation(9)
    np.testing.assert_array_equal(a.z_um, b.z_um)
    assert np.array_equal(a.clean(9), b.clean(9))
