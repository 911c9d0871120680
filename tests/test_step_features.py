"""STEP's 175 per-frame affective values (cagelib.evaluate.step_features): against a frame-by-frame loop
written from STEP's definitions, invariances, padding, names."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cagelib.evaluate.step_features import (STEP_FEATURE_NAMES, STEP_FRAME_FEATURES, _heading_aligned,
                                            step_features, step_frame_features)


def walk(n=3, t=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pose = rng.normal(0, 0.3, (1, 1, 16, 3))
    frames = np.arange(t)[None, :, None, None]
    x = pose + 0.1 * np.sin(0.5 * frames + rng.uniform(0, 6, (n, 1, 16, 3)))
    x[..., 0] += 0.05 * frames[..., 0]  # the root walks along x
    return x


def loop_reference(p: np.ndarray) -> np.ndarray:
    """STEP's get_affective_features for one aligned gait ``(T, 16, 3)``, frame by frame as its code reads."""
    def unit(v):
        n = np.linalg.norm(v)
        return v / n if n > 0 else v * 0

    def angle(a, b, c):
        return math.acos(np.clip(np.dot(unit(a - b), unit(c - b)), -1, 1))

    def area(a, b, c):
        x, y, z = np.linalg.norm(a - b), np.linalg.norm(b - c), np.linalg.norm(c - a)
        s = (x + y + z) / 2
        return math.sqrt(max(s * (s - x) * (s - y) * (s - z), 0.0))

    d = lambda a, b: np.linalg.norm(a - b)
    up = np.array([0.0, 1.0, 0.0])
    out = np.zeros((p.shape[0], 175))
    for t in range(p.shape[0]):
        j = p[t]
        row = list(j.reshape(-1)) + [
            angle(j[7], j[2], j[4]), angle(j[2], j[4], j[7]), angle(j[4], j[7], j[2]),
            math.acos(np.clip(np.dot(unit(j[3] - j[0]), up), -1, 1)),
            d(j[6], j[0]), d(j[9], j[0]), d(j[6], j[4]), d(j[9], j[7]), d(j[5], j[0]), d(j[8], j[0]),
            area(j[9], j[2], j[6]), area(j[7], j[2], j[4]), area(j[9], j[0], j[6]), area(j[8], j[2], j[5]),
            angle(j[2], j[4], j[5]), angle(j[2], j[7], j[8]), angle(j[4], j[5], j[6]), angle(j[7], j[8], j[9]),
            angle(j[2], j[1], j[0]), angle(j[3], j[2], j[1]), d(j[12], j[0]), d(j[15], j[0]),
            area(j[15], j[2], j[12]), area(j[13], j[2], j[10]), area(j[15], j[0], j[12]), area(j[14], j[2], j[11]),
            angle(j[0], j[10], j[11]), angle(j[0], j[13], j[14]), angle(j[10], j[11], j[12]),
            angle(j[13], j[14], j[15]), d(j[12], j[15])]
        out[t, :79] = row
        if t == 0:
            continue
        f = 79
        for joint, jerk in ((6, 1), (9, 1), (5, 0), (8, 0), (4, 0), (7, 0), (12, 1), (15, 1), (11, 0), (14, 0),
                            (10, 0), (13, 0), (3, 1)):
            vel = p[t, joint] - p[t - 1, joint]
            acc = vel - out[t - 1, f:f + 3]
            values = list(vel) + [np.linalg.norm(vel)] + list(acc)
            if jerk:
                values.append(np.linalg.norm(acc - out[t - 1, f + 4:f + 7]))
            out[t, f:f + len(values)] = values
            f += len(values)
    return out


def test_matches_step_frame_by_frame():
    x = walk()
    frame, valid = step_frame_features(x)
    assert frame.shape == (3, 12, 175) and valid.shape == frame.shape and len(STEP_FRAME_FEATURES) == 175
    aligned = _heading_aligned(x)
    for n in range(3):
        np.testing.assert_allclose(frame[n], loop_reference(aligned[n]), atol=1e-9)
    assert not valid[:, 0, 79:].any() and valid[:, 1:].all()  # frame 0 has no previous frame


def test_invariant_to_heading_and_translation():
    x = walk()
    yaw = 0.9
    r = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    moved = x @ r.T + np.array([3.0, 0.2, -1.0])
    np.testing.assert_allclose(step_features(moved), step_features(x), atol=1e-4)


def test_padding_does_not_count():
    x = walk(t=10)
    padded = np.concatenate([x, np.zeros((3, 6, 16, 3))], axis=1)
    np.testing.assert_allclose(step_features(padded, lengths=[10, 10, 10]), step_features(x), atol=1e-5)
    f = step_features(padded)  # the all-zero frames are found as padding
    assert f.shape == (3, len(STEP_FEATURE_NAMES)) == (3, 350) and np.isfinite(f).all()


def test_bad_shape_is_named():
    with pytest.raises(ValueError, match=r"\(N, T, 16, 3\)"):
        step_features(np.zeros((2, 5, 15, 3)))
