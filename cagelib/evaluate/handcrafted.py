"""Hand-crafted affective gait features (STEP / Randhavane et al. style) and their linear probe.

After Randhavane et al. ("Identifying emotions from walking using affective and deep features") and
STEP (Bhattacharya et al. 2020): per-frame *posture* features (volume, angles, distances, areas) and
*movement* features (speed, acceleration and jerk magnitudes), summarised over a window by their mean
and standard deviation over the real (non-padding) frames, plus two window-level gait features
(stride length, step frequency): ``FEATURE_NAMES``, 62 columns (17 posture + 13 movement, x mean and
std, + 2).

Input: windows ``(N, T, 16, 3)`` in the ``first_frame`` representation (root of frame 0 at the origin,
view normalised, y up, metres; zero padding after ``lengths``). The root trajectory must be present,
since the speeds of the root and of the end effectors are world-frame speeds: the features of a task
are always computed on the first-frame-centred version of its windows (``GaitTask.x_first_frame``),
whatever representation the encoder sees, so a hand-crafted row is the same in every representation.
Output: float32 ``(N, len(FEATURE_NAMES))``, no NaN.

Invariances (by construction): every feature is invariant to rotation about the up axis and to a
constant translation. The bounding box is taken in each frame's *body* frame (rotated about the up
axis so that that frame's hip line lies along the first horizontal axis), so its volume does not
depend on heading.

Conventions: angles in radians via ``atan2(|u x v|, u . v)`` (0 for a zero-length vector, no NaN);
velocities ``(p_t - p_{t-1}) * fps``, accelerations and jerks by further finite differences, each
defined only where all the frames it uses are real. "Step frequency" is the dominant non-zero
frequency (Hz) of the foot-to-foot distance, which peaks once per step (twice per gait cycle).

``handcrafted_probe``: StandardScaler + multinomial logistic regression, ``C`` from ``C_GRID`` chosen
by a clip-grouped 3-fold inner cross-validation on the training side only (window accuracy), then
refit on the whole training side.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data.splits import repeated_grouped_kfold
from ..representation import valid_frames
from ..skeleton import JOINT_NAMES, ROOT, UP_AXIS

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried by the inner cross-validation
INNER_FOLDS = 3  # clip-grouped folds of the inner cross-validation

J = {name: i for i, name in enumerate(JOINT_NAMES)}

# Per-frame posture features (summarised by mean and std over the window).
POSTURE_FEATURES: tuple[str, ...] = (
    "bbox_volume",  # m^3, axis-aligned bounding box of all joints in the frame's body frame
    "angle_neck_hands",  # angle at the neck between neck->left_hand and neck->right_hand
    "angle_neck_shoulders",  # angle at the neck between neck->left_shoulder and neck->right_shoulder
    "angle_left_shoulder",  # angle at left_shoulder between neck and left_elbow (arm abduction)
    "angle_right_shoulder",  # angle at right_shoulder between neck and right_elbow
    "angle_left_elbow",  # angle at left_elbow between left_shoulder and left_hand
    "angle_right_elbow",  # angle at right_elbow between right_shoulder and right_hand
    "angle_back_vertical",  # angle at the neck between the up axis and the back (root->neck): lean
    "angle_head_back",  # angle at the neck between neck->head and neck->root (head bowed / raised)
    "dist_left_hand_root",  # m
    "dist_right_hand_root",
    "dist_left_foot_root",
    "dist_right_foot_root",
    "dist_feet",  # m, left_foot to right_foot
    "area_hands_neck",  # m^2, triangle left_hand, right_hand, neck
    "area_feet_root",  # m^2, triangle left_foot, right_foot, root
    "root_height",  # m, root above the lower foot (crouch / knee bend)
)
MOVEMENT_JOINTS: tuple[str, ...] = ("left_hand", "right_hand", "left_foot", "right_foot", "head", "root")
# Per-frame movement features (summarised by mean and std over the window).
MOVEMENT_FEATURES: tuple[str, ...] = (
    tuple(f"speed_{j}" for j in MOVEMENT_JOINTS)  # m/s
    + tuple(f"accel_{j}" for j in MOVEMENT_JOINTS)  # m/s^2
    + ("jerk",)  # m/s^3, jerk magnitude averaged over MOVEMENT_JOINTS
)
FRAME_FEATURES: tuple[str, ...] = POSTURE_FEATURES + MOVEMENT_FEATURES
# Window-level features.
WINDOW_FEATURES: tuple[str, ...] = (
    "stride_length",  # m, max foot-to-foot distance over the window
    "step_frequency",  # Hz, dominant frequency of the foot-to-foot distance
)
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"{f}_mean" for f in FRAME_FEATURES) + tuple(f"{f}_std" for f in FRAME_FEATURES) + WINDOW_FEATURES
)


def _angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle between vectors ``(..., 3)`` in [0, pi]; 0 when either has zero length."""
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), np.sum(u * v, axis=-1))


def _triangle_area(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=-1)


def _body_frame_bbox_volume(x: np.ndarray) -> np.ndarray:
    """Volume of each frame's bounding box after rotating the frame about the up axis so that its
    hip line points along the first horizontal axis: ``(N, T, V, 3) -> (N, T)``."""
    a, b = (UP_AXIS + 1) % 3, (UP_AXIS + 2) % 3  # for y up: a = z, b = x
    hip = x[:, :, J["right_hip"]] - x[:, :, J["left_hip"]]  # (N, T, 3)
    angle = np.arctan2(hip[..., a], hip[..., b])  # (N, T) heading of the hip line
    c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]  # (N, T, 1)
    rel = x - x[:, :, ROOT : ROOT + 1]  # (N, T, V, 3)
    horiz_b = c * rel[..., b] + s * rel[..., a]  # (N, T, V) along the hip line
    horiz_a = -s * rel[..., b] + c * rel[..., a]  # (N, T, V) perpendicular (facing direction)
    extent = lambda v: v.max(axis=-1) - v.min(axis=-1)  # (N, T, V) -> (N, T)
    return extent(horiz_b) * extent(horiz_a) * extent(rel[..., UP_AXIS])


def _posture(x: np.ndarray) -> np.ndarray:
    """Per-frame posture features ``(N, T, V, 3) -> (N, T, len(POSTURE_FEATURES))``."""
    p = lambda name: x[:, :, J[name]]  # (N, T, 3)
    up = np.zeros(3, dtype=x.dtype)
    up[UP_AXIS] = 1.0
    neck, root = p("neck"), p("root")
    dist = lambda u, v: np.linalg.norm(p(u) - p(v), axis=-1)
    feats = [
        _body_frame_bbox_volume(x),
        _angle(p("left_hand") - neck, p("right_hand") - neck),
        _angle(p("left_shoulder") - neck, p("right_shoulder") - neck),
        _angle(neck - p("left_shoulder"), p("left_elbow") - p("left_shoulder")),
        _angle(neck - p("right_shoulder"), p("right_elbow") - p("right_shoulder")),
        _angle(p("left_shoulder") - p("left_elbow"), p("left_hand") - p("left_elbow")),
        _angle(p("right_shoulder") - p("right_elbow"), p("right_hand") - p("right_elbow")),
        _angle(np.broadcast_to(up, neck.shape), neck - root),
        _angle(p("head") - neck, root - neck),
        dist("left_hand", "root"), dist("right_hand", "root"),
        dist("left_foot", "root"), dist("right_foot", "root"),
        dist("left_foot", "right_foot"),
        _triangle_area(p("left_hand"), p("right_hand"), neck),
        _triangle_area(p("left_foot"), p("right_foot"), root),
        root[..., UP_AXIS] - np.minimum(p("left_foot")[..., UP_AXIS], p("right_foot")[..., UP_AXIS]),
    ]
    return np.stack(feats, axis=-1)  # (N, T, F_p)


def _movement(x: np.ndarray, valid: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame movement features and their validity: ``(N, T, F_m)``, ``(N, T, F_m)`` bool.

    Speed at frame t uses frames t-1, t; acceleration t-2..t; jerk t-3..t (all must be real).
    """
    joints = x[:, :, [J[j] for j in MOVEMENT_JOINTS]]  # (N, T, K, 3)
    zeros = lambda k: np.zeros((x.shape[0], k) + joints.shape[2:], dtype=x.dtype)
    T = x.shape[1]
    # k-th finite differences aligned on their last frame (zero before frame k; windows may be shorter than k)
    v = np.concatenate([zeros(1), np.diff(joints, axis=1)], axis=1)[:, :T] * fps  # (N, T, K, 3) m/s
    a = np.concatenate([zeros(2), np.diff(joints, n=2, axis=1)], axis=1)[:, :T] * fps**2
    j = np.concatenate([zeros(3), np.diff(joints, n=3, axis=1)], axis=1)[:, :T] * fps**3
    ok = [valid.copy()]  # ok[k][n, t]: frames t-k..t all real
    for k in range(1, 4):
        prev = np.concatenate([np.zeros_like(valid[:, :k]), valid[:, :max(T - k, 0)]], axis=1)[:, :T]
        ok.append(ok[-1] & prev)
    speed, accel = np.linalg.norm(v, axis=-1), np.linalg.norm(a, axis=-1)  # (N, T, K)
    jerk = np.linalg.norm(j, axis=-1).mean(axis=-1, keepdims=True)  # (N, T, 1)
    feats = np.concatenate([speed, accel, jerk], axis=-1)  # (N, T, 2K + 1)
    k = len(MOVEMENT_JOINTS)
    mask = np.concatenate([np.repeat(ok[1][..., None], k, -1), np.repeat(ok[2][..., None], k, -1), ok[3][..., None]], -1)
    return feats, mask


def _masked_mean_std(f: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std over time of ``f (N, T, F)`` where ``mask``; 0 where no frame counts."""
    w = mask.astype(np.float64)
    n = w.sum(axis=1)  # (N, F)
    safe = np.maximum(n, 1.0)
    mean = (f * w).sum(axis=1) / safe
    var = (((f - mean[:, None]) ** 2) * w).sum(axis=1) / safe
    return mean, np.sqrt(np.maximum(var, 0.0))


def _step_frequency(d: np.ndarray, valid: np.ndarray, fps: float, n_fft: int = 256) -> np.ndarray:
    """Dominant non-zero frequency (Hz) of ``d (N, T)`` over its real frames (mean removed,
    Hann-windowed over the real frames, zero-padded FFT to ``n_fft`` points for a finer grid);
    0 for a window with fewer than 4 real frames or a flat signal."""
    w = valid.astype(np.float64)
    n = w.sum(axis=1, keepdims=True)  # (N, 1)
    centred = (d - (d * w).sum(axis=1, keepdims=True) / np.maximum(n, 1.0)) * w
    t = np.arange(d.shape[1])[None, :]
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * (t + 0.5) / np.maximum(n, 1.0))) * w  # (N, T) over real frames
    spectrum = np.abs(np.fft.rfft(centred * hann, n=max(n_fft, d.shape[1]), axis=1))  # (N, n_fft//2+1)
    freqs = np.fft.rfftfreq(max(n_fft, d.shape[1]), d=1.0 / fps)
    spectrum[:, 0] = 0.0
    peak = freqs[np.argmax(spectrum, axis=1)]
    return np.where((n[:, 0] >= 4) & (spectrum.max(axis=1) > 1e-12), peak, 0.0)


def gait_features(x: np.ndarray, fps: float, lengths=None) -> np.ndarray:
    """Hand-crafted features ``(N, T, 16, 3)`` (first_frame representation) -> float32 ``(N, F)``,
    columns named by ``FEATURE_NAMES``. ``lengths`` (real frames per window) defaults to the frames
    that are not all-zero (cagelib's zero padding)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[2:] != (len(JOINT_NAMES), 3):
        raise ValueError(f"x must be (N, T, {len(JOINT_NAMES)}, 3), got {x.shape}")
    valid = valid_frames(x, lengths)  # (N, T)
    posture = _posture(x)  # (N, T, F_p)
    movement, move_mask = _movement(x, valid, fps)  # (N, T, F_m)
    frame = np.concatenate([posture, movement], axis=-1)  # (N, T, F_p + F_m)
    mask = np.concatenate([np.repeat(valid[..., None], posture.shape[-1], -1), move_mask], axis=-1)
    mean, std = _masked_mean_std(frame, mask)  # (N, F_p + F_m) each
    d = posture[..., POSTURE_FEATURES.index("dist_feet")]  # (N, T)
    stride_length = np.where(valid, d, 0.0).max(axis=1)
    out = np.concatenate([mean, std, stride_length[:, None], _step_frequency(d, valid, fps)[:, None]], axis=1)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _logistic_regression(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def select_c(train_f: np.ndarray, train_y: np.ndarray, train_groups=None, seed: int = 0) -> float:
    """The ``C_GRID`` value with the best mean window accuracy over ``INNER_FOLDS`` clip-grouped,
    label-stratified folds of the training side (first on ties). Without ``train_groups`` every
    window is its own group."""
    train_y = np.asarray(train_y)
    groups = np.arange(len(train_y)) if train_groups is None else np.asarray(train_groups)
    inner = repeated_grouped_kfold(groups, train_y, INNER_FOLDS, 1, seed)
    scores = [np.mean([np.mean(_logistic_regression(c).fit(train_f[a], train_y[a]).predict(train_f[b]) == train_y[b])
                       for a, b in inner]) for c in C_GRID]
    return C_GRID[int(np.argmax(scores))]


def handcrafted_probe(train_f, train_y, test_f, test_y=None, seed: int = 0, train_groups=None) -> np.ndarray:
    """Predicted labels ``(M,)`` int64 of test features ``test_f (M, F)``: StandardScaler + logistic
    regression fit on ``(train_f (N, F), train_y (N,))`` with ``C`` from ``select_c`` (training side
    only; ``train_groups``: the clip of each training window). ``test_y`` is never used (a uniform
    fold signature: no test-set selection)."""
    train_f, test_f = np.asarray(train_f, dtype=np.float64), np.asarray(test_f, dtype=np.float64)
    train_y = np.asarray(train_y, dtype=np.int64)
    c = select_c(train_f, train_y, train_groups, seed)
    return _logistic_regression(c).fit(train_f, train_y).predict(test_f).astype(np.int64)
