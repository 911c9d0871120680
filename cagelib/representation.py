"""Input representations of a preprocessed window: what the root joint carries.

Every window of ``cagelib.data.tasks`` is first centred on the root of its *first* frame and rotated to
a canonical facing direction (``cagelib.data.preprocess``, "according to ISC"). That keeps the walking
trajectory in every joint: a window of a fast walk spans metres, a slow one centimetres, so a linear
probe on such inputs mostly reads walking speed and path, not the body's movement. The three
representations (NumPy in, NumPy out, ``(N, T, 16, 3)`` -> the same shape, float32):

- ``"first_frame"``: the preprocessed window unchanged; the trajectory is kept as position.
- ``"root_relative"``: each frame's root subtracted from every joint (the root sits at the origin in
  every frame, its joint is all zeros): the trajectory is removed, only the posture and its motion
  relative to the pelvis remain.
- ``"root_velocity"``: ``root_relative``, with the root joint (otherwise always 0) carrying the root's
  velocity in m/s, ``v_t = (r_t - r_{t-1}) * fps`` with ``v_0 = 0``: the trajectory as velocity rather
  than position, so speed is available but on a scale comparable with the other joints.

``DEFAULT_REPRESENTATION`` is the one default of the package (``DataConfig.representation``); the
measurement behind it is in ``docs/decisions.md``. Padding frames (``t >= lengths``; all-zero frames
when ``lengths`` is None) stay zero in every representation.
"""
from __future__ import annotations

import numpy as np

from .skeleton import ROOT

REPRESENTATIONS = ("first_frame", "root_relative", "root_velocity")
DEFAULT_REPRESENTATION = "root_relative"


def valid_frames(x: np.ndarray, lengths=None) -> np.ndarray:
    """Boolean ``(N, T)``, True on real frames: ``t < lengths[i]``, or, without ``lengths``, frames
    that are not all-zero (cagelib zero-pads; a real skeleton never collapses onto the origin)."""
    if lengths is not None:
        return np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return np.any(x != 0, axis=(2, 3))


def root_velocity(root: np.ndarray, valid: np.ndarray, fps: float) -> np.ndarray:
    """Velocity ``(N, T, 3)`` in units/s of a root trajectory ``(N, T, 3)``: ``(r_t - r_{t-1}) * fps``,
    zero at frame 0 and wherever frame ``t`` or ``t - 1`` is padding."""
    previous = np.concatenate([root[:, :1], root[:, :-1]], axis=1)  # r_{t-1}, with r_{-1} := r_0
    prev_valid = np.concatenate([valid[:, :1], valid[:, :-1]], axis=1)
    return (root - previous) * np.float32(fps) * (valid & prev_valid)[..., None]


def to_representation(x: np.ndarray, name: str, fps: float, lengths=None) -> np.ndarray:
    """First-frame-centred, view-normalised windows ``(N, T, 16, 3)`` -> representation ``name``
    (module docstring), float32 ``(N, T, 16, 3)``; ``"first_frame"`` returns a copy."""
    if name not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {name!r}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x must be (N, T, V, 3), got {x.shape}")
    if name == "first_frame":
        return x.copy()
    valid = valid_frames(x, lengths)  # (N, T)
    root = x[:, :, ROOT, :]  # (N, T, 3)
    out = x - root[:, :, None, :]  # (N, T, V, 3); the root joint becomes 0
    if name == "root_velocity":
        out[:, :, ROOT, :] = root_velocity(root, valid, fps)
    return (out * valid[:, :, None, None]).astype(np.float32, copy=False)
