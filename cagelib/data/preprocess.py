"""Sequence preprocessing before training: centre, normalise the view, pad to a fixed length.

The paper processes each gait "according to ISC" and zero-pads it to 250 frames. ISC inherits the
view-invariant transform of Predict & Cluster (move the first frame's root to the origin, rotate the
body to a canonical orientation). cagelib's version, each step a named option of ``preprocess``:

1. ``center_root``: subtract the root joint of the first frame (``center="first_frame"``, keeps the
   walking trajectory) or of every frame (``"per_frame"``, removes it; E-Gait files are stored that
   way already), or nothing (``"none"``).
2. ``normalize_view``: rotate about the vertical axis (y) through the first frame's root so that the
   first frame's hip line ``left_hip -> right_hip``, projected on the ground, points along ``+x``.
   With y up and a right-handed frame, the body then faces ``-z`` (if the data's left joints are
   the anatomical left, as for Bandai). Only the heading is removed: a full 3-D alignment of the
   spine would also erase the body's lean, a cue for emotion.
3. ``pad_or_crop``: zero-pad at the end to ``length`` frames, or keep ``length`` frames (from the
   start, or the centre with ``crop="center"``).

Arrays are NumPy ``(..., T, V, 3)`` float32 with an optional ``lengths`` (the batch shape, int):
frames at or after ``lengths`` are padding, stay zero and are ignored.
"""
from __future__ import annotations


import numpy as np

from ..skeleton import JOINT_NAMES, ROOT, UP_AXIS
from .gaitset import GaitSet

CENTER_MODES = ("first_frame", "per_frame", "none")
CROP_MODES = ("start", "center")
LEFT_HIP, RIGHT_HIP = JOINT_NAMES.index("left_hip"), JOINT_NAMES.index("right_hip")


PAPER_LENGTH = 250  # frames per clip after padding / cropping (the paper)


def _valid_mask(x: np.ndarray, lengths) -> np.ndarray | None:
    if lengths is None:
        return None
    frames = np.arange(x.shape[-3])
    return frames < np.asarray(lengths)[..., None]  # (..., T)


def _zero_padding(x: np.ndarray, lengths) -> np.ndarray:
    mask = _valid_mask(x, lengths)
    return x if mask is None else x * mask[..., None, None]


def center_root(x: np.ndarray, center: str = "first_frame", lengths=None) -> np.ndarray:
    """Subtract the root of the first frame (or of each frame): ``(..., T, V, 3)`` -> same."""
    if center not in CENTER_MODES:
        raise ValueError(f"center must be one of {CENTER_MODES}, got {center!r}")
    x = np.asarray(x, dtype=np.float32)
    if center == "none":
        return x.copy()
    origin = x[..., :1, ROOT : ROOT + 1, :] if center == "first_frame" else x[..., ROOT : ROOT + 1, :]
    return _zero_padding(x - origin, lengths)


def heading_rotation(x: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` about y that turn the first frame's hip line onto ``+x``."""
    hip = x[..., 0, RIGHT_HIP, :] - x[..., 0, LEFT_HIP, :]  # (..., 3), left -> right
    a, b = (UP_AXIS + 1) % 3, (UP_AXIS + 2) % 3  # for y up: a = z, b = x (right-handed order)
    angle = np.arctan2(hip[..., a], hip[..., b])  # heading of the hip line from +x towards +z
    angle = np.where(np.hypot(hip[..., a], hip[..., b]) > 1e-8, angle, 0.0)  # vertical hip line: keep
    c, s = np.cos(angle), np.sin(angle)
    rot = np.zeros(angle.shape + (3, 3))
    rot[..., UP_AXIS, UP_AXIS] = 1.0
    # rotation by -angle about the up axis: maps (b, a) = (cos, sin) * |h| onto (|h|, 0)
    rot[..., b, b], rot[..., b, a], rot[..., a, b], rot[..., a, a] = c, s, -s, c
    return rot


def normalize_view(x: np.ndarray, lengths=None) -> np.ndarray:
    """Rotate about the vertical axis through the first frame's root (see module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    rot = heading_rotation(x).astype(np.float32)  # (..., 3, 3)
    pivot = x[..., :1, ROOT : ROOT + 1, :]  # (..., 1, 1, 3)
    rotated = np.einsum("...ij,...tvj->...tvi", rot, x - pivot) + pivot  # (..., T, V, 3)
    return _zero_padding(rotated, lengths)


def pad_or_crop(x: np.ndarray, length: int, lengths=None, crop: str = "start") -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad or crop the time axis to ``length``: ``(..., T, V, 3)`` -> ``((..., length, V, 3), lengths)``."""
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    x = np.asarray(x, dtype=np.float32)
    batch, T = x.shape[:-3], x.shape[-3]
    lengths = np.broadcast_to(np.asarray(T if lengths is None else lengths, dtype=np.int64), batch)
    out = np.zeros(batch + (length,) + x.shape[-2:], dtype=np.float32)
    first = np.maximum(lengths - length, 0) // 2 if crop == "center" else np.zeros_like(lengths)
    new_lengths = np.minimum(lengths, length)
    for idx in np.ndindex(*batch):
        out[idx][: new_lengths[idx]] = x[idx][first[idx] : first[idx] + new_lengths[idx]]
    return out, new_lengths.copy()


def preprocess(x: np.ndarray, lengths=None, length: int = PAPER_LENGTH, center: str = "first_frame",
               view: bool = True, crop: str = "start") -> tuple[np.ndarray, np.ndarray]:
    """Centre the root (``center``: "first_frame", "per_frame" or "none", ``center_root``), rotate about the
    up axis so that the first frame's hip line points along +x (``view``), pad or crop to ``length`` frames
    keeping the start or the centre (``crop``): ``(..., T, V, 3)`` -> ``((..., length, V, 3), lengths)``."""
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("preprocess: input contains NaN or inf")
    x = center_root(x, center, lengths)
    if view:
        x = normalize_view(x, lengths)
    return pad_or_crop(x, length, lengths, crop)


def preprocess_gaitset(gs: GaitSet, length: int = PAPER_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Every clip of ``gs`` preprocessed as the paper's (``preprocess``): ``(float32 (N, length, 16, 3), int64
    lengths (N,))``."""
    out = [preprocess(clip, None, length) for clip in gs.positions]
    if not out:
        return np.zeros((0, length, 16, 3), np.float32), np.zeros(0, np.int64)
    return np.stack([o[0] for o in out]), np.array([int(o[1]) for o in out], dtype=np.int64)
