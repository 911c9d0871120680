"""STEP's affective features at full strength: the 175 values per frame of STEP's ``get_affective_features``
(Bhattacharya et al. 2020, the code released with E-Gait), summarised over a window for a logistic regression.

Per frame (``STEP_FRAME_FEATURES``, 175 columns, in STEP's order):

- 48 joint positions: the 16 joints relative to the root (STEP's ``get_joints``), x y z per joint;
- 31 posture values: angles (radians) at the neck between the shoulders, at each shoulder, of the head
  about the up axis, at the elbows and shoulders, along the spine and the legs; distances of the hands, elbows
  and feet to the root and between hands and shoulders and between the feet; areas of the triangles of hands,
  elbows, feet and knees with the neck or the root;
- 96 dynamics: for the hands, the feet and the head the velocity (3), its magnitude, the acceleration (3) and
  the jerk magnitude (8 each); for the elbows, shoulders, knees and hips the velocity, its magnitude and the
  acceleration (7 each). Differences between consecutive frames of the root-relative joints (per frame, no
  frame rate), with STEP's start: the velocity, acceleration and jerk of a frame without a previous one are 0.

Window summary (``step_features``): the mean and the (population) standard deviation over the window's real
frames of each of the 175 values: ``(N, 350)``. STEP feeds the per-frame sequence to its network; a linear
control needs one vector per window.

Named differences from STEP's code (``docs/decisions.md``, "STEP's affective features"):
1. Alignment: STEP maps every gait onto the data set's first gait by a similarity transform (Procrustes on the
   first frame), so a feature depends on which gait comes first; here each window is rotated about the up axis
   so that its first frame's hip line lies along x (no scaling), a property of the window alone.
2. Padding: STEP computes over all 250 frames, zero padding included; here only real frames count (a dynamic
   value only where the frames it differences are real).
3. Left / right: STEP's code names joints 4-6 and 10-12 "right", cagelib (after the E-Gait README) "left"; the
   features are defined by joint index, so the columns are STEP's whatever the names.
Input: windows ``(N, T, 16, 3)``, y up, any representation that keeps the joints' positions (the root-relative
joints are what STEP uses; the root's own trajectory does not enter).
"""
from __future__ import annotations

import numpy as np

from ..representation import valid_frames
from ..skeleton import NUM_JOINTS, ROOT, UP_AXIS

# (a, b, c) index triples of STEP's within-frame features, in its order: "angle" at b of a-b-c; "dist" a-b;
# "area" of the triangle a b c; "up" the angle of a - b with the up axis.
POSTURE: tuple[tuple, ...] = (
    ("angle", 7, 2, 4), ("angle", 2, 4, 7), ("angle", 4, 7, 2), ("up", 3, 0),
    ("dist", 6, 0), ("dist", 9, 0), ("dist", 6, 4), ("dist", 9, 7), ("dist", 5, 0), ("dist", 8, 0),
    ("area", 9, 2, 6), ("area", 7, 2, 4), ("area", 9, 0, 6), ("area", 8, 2, 5),
    ("angle", 2, 4, 5), ("angle", 2, 7, 8), ("angle", 4, 5, 6), ("angle", 7, 8, 9),
    ("angle", 2, 1, 0), ("angle", 3, 2, 1),
    ("dist", 12, 0), ("dist", 15, 0),
    ("area", 15, 2, 12), ("area", 13, 2, 10), ("area", 15, 0, 12), ("area", 14, 2, 11),
    ("angle", 0, 10, 11), ("angle", 0, 13, 14), ("angle", 10, 11, 12), ("angle", 13, 14, 15),
    ("dist", 12, 15),
)
# (joint, with jerk) of STEP's between-frame features, in its order
DYNAMICS: tuple[tuple[int, bool], ...] = (
    (6, True), (9, True), (5, False), (8, False), (4, False), (7, False), (12, True), (15, True),
    (11, False), (14, False), (10, False), (13, False), (3, True),
)
STEP_FRAME_FEATURES: tuple[str, ...] = (
    tuple(f"pos{j}_{a}" for j in range(NUM_JOINTS) for a in "xyz")
    + tuple("_".join(str(v) for v in spec) for spec in POSTURE)
    + tuple(name for j, jerk in DYNAMICS for name in
            [f"vel{j}_{a}" for a in "xyz"] + [f"speed{j}"] + [f"acc{j}_{a}" for a in "xyz"]
            + ([f"jerk{j}"] if jerk else []))
)
STEP_FEATURE_NAMES: tuple[str, ...] = tuple(f"{f}_mean" for f in STEP_FRAME_FEATURES) + tuple(
    f"{f}_std" for f in STEP_FRAME_FEATURES)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def _angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """STEP's ``arccos(clip(u^ . v^))`` in radians; pi / 2 where a vector has zero length (u^ = 0)."""
    return np.arccos(np.clip(np.sum(_unit(u) * _unit(v), axis=-1), -1.0, 1.0))


def _heading_aligned(x: np.ndarray) -> np.ndarray:
    """Root-relative joints ``(N, T, V, 3)``, rotated about the up axis so that each window's first frame has
    its hip line (joint 13 - joint 10) along the first horizontal axis (difference 1 of the module docstring)."""
    rel = x - x[:, :, ROOT : ROOT + 1]  # (N, T, V, 3) STEP's get_joints
    a, b = (UP_AXIS + 2) % 3, (UP_AXIS + 1) % 3  # y up: a = x, b = z
    hip = rel[:, 0, 13] - rel[:, 0, 10]  # (N, 3)
    angle = np.arctan2(hip[:, b], hip[:, a])[:, None, None]  # (N, 1, 1)
    c, s = np.cos(angle), np.sin(angle)
    out = rel.copy()
    out[..., a] = c * rel[..., a] + s * rel[..., b]
    out[..., b] = -s * rel[..., a] + c * rel[..., b]
    return out


def step_frame_features(x, lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """STEP's 175 per-frame values of windows ``(N, T, 16, 3)`` -> ``(features (N, T, 175), valid (N, T, 175))``;
    ``valid`` says where a value uses real frames only (``lengths``: real frames per window, default the
    frames that are not all zero)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[2:] != (NUM_JOINTS, 3):
        raise ValueError(f"x must be (N, T, {NUM_JOINTS}, 3), got {x.shape}")
    real = valid_frames(x, lengths)  # (N, T)
    p = _heading_aligned(x)  # (N, T, V, 3)
    up = np.zeros(3)
    up[UP_AXIS] = 1.0
    posture = []
    for kind, *j in POSTURE:
        if kind == "angle":
            posture.append(_angle(p[:, :, j[0]] - p[:, :, j[1]], p[:, :, j[2]] - p[:, :, j[1]]))
        elif kind == "up":
            posture.append(_angle(p[:, :, j[0]] - p[:, :, j[1]], np.broadcast_to(up, p.shape[:2] + (3,))))
        elif kind == "dist":
            posture.append(np.linalg.norm(p[:, :, j[0]] - p[:, :, j[1]], axis=-1))
        else:  # area, Heron's formula as STEP (0 for a degenerate triangle)
            a_, b_, c_ = (p[:, :, i] for i in j)
            sides = [np.linalg.norm(u - v, axis=-1) for u, v in ((a_, b_), (b_, c_), (c_, a_))]
            s = sum(sides) / 2
            posture.append(np.sqrt(np.maximum(s * (s - sides[0]) * (s - sides[1]) * (s - sides[2]), 0.0)))
    previous = np.concatenate([np.zeros_like(real[:, :1]), real[:, :-1]], axis=1)  # (N, T) frame t-1 real
    moving = real & previous
    dynamics, masks = [], []
    for joint, jerk in DYNAMICS:
        q = p[:, :, joint]  # (N, T, 3)
        vel = np.where(moving[..., None], np.concatenate([np.zeros_like(q[:, :1]), np.diff(q, axis=1)], 1), 0.0)
        acc = vel - np.concatenate([np.zeros_like(vel[:, :1]), vel[:, :-1]], axis=1)  # STEP: v_0 = 0
        columns = [vel, np.linalg.norm(vel, axis=-1, keepdims=True), acc]
        if jerk:
            columns.append(np.linalg.norm(acc - np.concatenate([np.zeros_like(acc[:, :1]), acc[:, :-1]], 1),
                                          axis=-1, keepdims=True))
        block = np.concatenate(columns, axis=-1)  # (N, T, 7 or 8)
        dynamics.append(block)
        masks.append(np.repeat(moving[..., None], block.shape[-1], -1))
    frame = np.concatenate([p.reshape(*p.shape[:2], -1), np.stack(posture, -1)] + dynamics, axis=-1)  # (N, T, 175)
    valid = np.concatenate([np.repeat(real[..., None], 48 + len(POSTURE), -1)] + masks, axis=-1)
    return frame, valid


def step_features(x, lengths=None) -> np.ndarray:
    """Windows ``(N, T, 16, 3)`` -> float32 ``(N, 350)``: the mean and std over real frames of STEP's 175
    per-frame values (``STEP_FEATURE_NAMES``); 0 where no frame counts, never NaN."""
    frame, valid = step_frame_features(x, lengths)
    w = valid.astype(np.float64)
    n = np.maximum(w.sum(axis=1), 1.0)  # (N, 175)
    mean = (frame * w).sum(axis=1) / n
    std = np.sqrt(np.maximum((((frame - mean[:, None]) ** 2) * w).sum(axis=1) / n, 0.0))
    return np.nan_to_num(np.concatenate([mean, std], axis=1)).astype(np.float32)
