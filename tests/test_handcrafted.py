"""Hand-crafted gait features: invariances, known speeds and step frequency, padding; the logistic probe."""
from __future__ import annotations

import numpy as np
import pytest

from cagelib.data.tasks import DataConfig, embedded_set, gait_task
from cagelib.evaluate.handcrafted import C_GRID, FEATURE_NAMES, J, gait_features, handcrafted_probe, select_c
from cagelib.skeleton import UP_AXIS

FPS = 30.0


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    """40 real (unpadded) first-frame emotion4 windows ``(40, 48, 16, 3)``, float64."""
    task = gait_task(DataConfig(max_pretrain_windows=8), embedded_set())
    return task.x_first_frame[task.lengths == 48][:40].astype(np.float64)


def rotate_up(x: np.ndarray, angle: float) -> np.ndarray:
    a, b = (UP_AXIS + 1) % 3, (UP_AXIS + 2) % 3
    c, s = np.cos(angle), np.sin(angle)
    out = x.copy()
    out[..., b], out[..., a] = c * x[..., b] - s * x[..., a], s * x[..., b] + c * x[..., a]
    return out


def column(f: np.ndarray, name: str) -> np.ndarray:
    return f[..., FEATURE_NAMES.index(name)]


def test_feature_names_and_shape(windows):
    f = gait_features(windows, FPS)
    assert f.shape == (40, 62) == (len(windows), len(FEATURE_NAMES)) and f.dtype == np.float32
    assert len(set(FEATURE_NAMES)) == 62 and np.isfinite(f).all()
    assert f.std(axis=0).min() > 0  # every feature varies over real windows


def test_invariant_to_rotation_about_up_and_translation(windows):
    f = gait_features(windows, FPS)
    g = gait_features(rotate_up(windows, 1.234) + np.array([0.7, 0.0, -2.0]), FPS)
    np.testing.assert_allclose(g, f, rtol=1e-3, atol=1e-3)
    tilted = windows.copy()
    tilted[..., UP_AXIS] *= 1.5  # not a rotation about up: posture features must change
    assert np.abs(gait_features(tilted, FPS) - f).max() > 1e-2


def test_constant_velocity_speeds(windows):
    v = np.array([0.3, 0.0, -1.2])  # m/s
    t = np.arange(48)[:, None, None] / FPS
    moving = (windows[0, 0][None] + t * v)[None]  # (1, 48, 16, 3): a rigid pose translated at v
    h = gait_features(moving, FPS)[0]
    for joint in ("left_hand", "right_hand", "left_foot", "right_foot", "head", "root"):
        assert column(h, f"speed_{joint}_mean") == pytest.approx(np.linalg.norm(v), abs=1e-4)
        assert abs(column(h, f"accel_{joint}_mean")) < 1e-3
    assert abs(column(h, "jerk_mean")) < 1e-2
    posture_std = [h[i] for i, n in enumerate(FEATURE_NAMES)
                   if n.endswith("_std") and not n.startswith(("speed", "accel", "jerk"))]
    assert np.abs(posture_std).max() < 1e-5


@pytest.mark.parametrize("cycle_hz", [0.8, 1.0, 1.25])
def test_step_frequency_is_twice_the_gait_cycle(windows, cycle_hz):
    osc = np.repeat(windows[0, 0][None, None], 96, axis=1).copy()  # (1, 96, 16, 3)
    s = 0.3 * np.sin(2 * np.pi * cycle_hz * np.arange(96) / FPS)  # feet in antiphase along the walking axis
    osc[0, :, J["left_foot"], 2] += s
    osc[0, :, J["right_foot"], 2] -= s
    # the foot-to-foot distance peaks once per step, twice per cycle
    assert column(gait_features(osc, FPS)[0], "step_frequency") == pytest.approx(2 * cycle_hz, abs=0.15)


def test_padding_equals_the_unpadded_window_and_no_nan(windows):
    short = windows[:3].copy()
    short[:, 20:] = 0.0
    a, b = gait_features(short, FPS), gait_features(windows[:3, :20], FPS)
    keep = np.array([n != "step_frequency" for n in FEATURE_NAMES])  # its FFT grid depends on T
    np.testing.assert_allclose(a[:, keep], b[:, keep], atol=1e-4)
    np.testing.assert_array_equal(gait_features(short, FPS, lengths=[20, 20, 20]), a)
    assert np.isfinite(gait_features(np.zeros((2, 48, 16, 3)), FPS)).all()
    assert np.isfinite(gait_features(windows[:2, :2], FPS)).all()


def test_probe_selects_c_on_the_training_side_and_predicts():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(24), 5)  # 24 clips of 5 windows
    y = groups % 3
    f = rng.normal(size=(120, 6)) + 3.0 * np.eye(3, 6)[y]
    train, test = groups < 18, groups >= 18
    preds = handcrafted_probe(f[train], y[train], f[test], None, seed=0, train_groups=groups[train])
    assert preds.dtype == np.int64 and preds.shape == (test.sum(),)
    assert np.mean(preds == y[test]) > 0.9
    assert select_c(f[train], y[train], groups[train]) in C_GRID
    # the test labels play no part: scrambling them leaves the predictions unchanged
    np.testing.assert_array_equal(
        preds, handcrafted_probe(f[train], y[train], f[test], rng.permutation(y[test]), 0, groups[train]))
