"""Preprocessing: invariance to heading and position, canonical orientation, padding, no NaN."""
from __future__ import annotations

import numpy as np
import pytest

from cagelib.data import center_root, load_embedded, normalize_view, pad_or_crop, preprocess
from cagelib.data.preprocess import preprocess_gaitset
from cagelib.skeleton import JOINT_NAMES, ROOT

LEFT_HIP, RIGHT_HIP = JOINT_NAMES.index("left_hip"), JOINT_NAMES.index("right_hip")


def yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def random_clip(T=30, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(T, 16, 3)) + np.linspace(0, 3, T)[:, None, None]).astype(np.float32)


@pytest.mark.parametrize("center", ["first_frame", "per_frame"])
def test_rotated_and_translated_copy_gives_the_same_result(center):
    config = dict(length=40, center=center)
    x = random_clip()
    for seed, angle in enumerate([0.3, 2.5, -1.7, np.pi]):
        moved = x @ yaw(angle).T.astype(np.float32) + np.array([5.0, -1.0, -3.0 + seed], dtype=np.float32)
        a, la = preprocess(x, **config)
        b, lb = preprocess(moved, **config)
        np.testing.assert_allclose(a, b, atol=2e-5)
        assert la == lb == 30


def test_canonical_orientation():
    out, _ = preprocess(random_clip(), length=30)
    np.testing.assert_allclose(out[0, ROOT], 0.0, atol=1e-6)  # first frame's root at the origin
    hip = out[0, RIGHT_HIP] - out[0, LEFT_HIP]
    assert hip[0] > 0 and abs(hip[2]) < 1e-5  # left -> right hip along +x
    per_frame, _ = preprocess(random_clip(), length=30, center="per_frame")
    np.testing.assert_allclose(per_frame[:, ROOT], 0.0, atol=1e-6)  # root at the origin in every frame


def test_a_forward_walk_faces_minus_z_after_normalisation():
    gs = load_embedded()
    i = int(np.flatnonzero(gs.meta["group"] == "dataset-1/walk_happy_001")[0])
    out, n = preprocess(gs.positions[i])
    travel = out[n - 1, ROOT] - out[0, ROOT]
    assert travel[2] < -3.0 and abs(travel[0]) < 0.5 * abs(travel[2])  # ~10 m walk towards -z


def test_normalize_view_keeps_lengths_and_heights():
    x = random_clip()
    y = normalize_view(x)
    np.testing.assert_allclose(np.linalg.norm(y - y[:, :1], axis=-1), np.linalg.norm(x - x[:, :1], axis=-1), atol=1e-5)
    np.testing.assert_allclose(y[..., 1], x[..., 1], atol=1e-6)  # rotation about y leaves heights
    np.testing.assert_allclose(y[0, ROOT], x[0, ROOT], atol=1e-6)  # pivot: the first frame's root


def test_pad_crop_lengths_and_padding_stays_zero():
    x = random_clip(T=30)
    padded, n = pad_or_crop(x, 250)
    assert padded.shape == (250, 16, 3) and n == 30 and not padded[30:].any()
    cropped, n = pad_or_crop(x, 10)
    np.testing.assert_array_equal(cropped, x[:10])
    centre, _ = pad_or_crop(x, 10, crop="center")
    np.testing.assert_array_equal(centre, x[10:20])
    batch = np.stack([x, x])  # (2, 30, 16, 3) with the second clip's last 18 frames being padding
    batch[1, 12:] = 0
    out, lengths = preprocess(batch, lengths=np.array([30, 12]))
    assert out.shape == (2, 250, 16, 3)
    np.testing.assert_array_equal(lengths, [30, 12])
    assert not out[1, 12:].any() and not out[0, 30:].any()
    single, _ = preprocess(x[:12])
    np.testing.assert_allclose(out[1], single, atol=1e-6)  # a padded clip = the same clip alone
    assert np.isfinite(out).all()


def test_degenerate_inputs_give_no_nan():
    still = np.zeros((5, 16, 3), dtype=np.float32)  # all joints at one point: no hip line to align
    out, _ = preprocess(still, length=8)
    assert np.isfinite(out).all() and not out.any()
    with pytest.raises(ValueError, match="NaN"):
        preprocess(np.full((5, 16, 3), np.nan))
    with pytest.raises(ValueError, match="center must be one of"):
        center_root(still, "mean")


def test_preprocess_gaitset_on_real_clips():
    gs = load_embedded()
    sub = gs.subset(np.arange(0, len(gs), 100))
    x, lengths = preprocess_gaitset(sub)
    assert x.shape == (len(sub), 250, 16, 3) and x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_array_equal(lengths, np.minimum(sub.lengths, 250))
