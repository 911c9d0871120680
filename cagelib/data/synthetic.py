"""E-Gait-shaped synthetic walking sequences, for throughput benchmarks and scale tests (never for results).

A gait here is a rest pose (a 16-joint tree with fixed bone offsets, y up) whose limbs swing
sinusoidally at a per-sequence cadence while the root walks forward; every sequence is zero-padded to
``frames`` after a valid length drawn uniformly in ``[min_fraction * frames, frames]`` (E-Gait pads its
gaits to 250 frames with zeros). Only the shape and the zero-padding matter to the benchmark: the
compute of a training step does not depend on the values.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..skeleton import NUM_JOINTS, PARENTS
from .tasks import gait_task

# offset of each joint from its parent in the rest pose (metres, y up, x = lateral, z = forward)
_OFFSETS = np.array([
    [0.0, 1.0, 0.0], [0.0, 0.25, 0.0], [0.0, 0.25, 0.0], [0.0, 0.15, 0.0],
    [0.18, -0.02, 0.0], [0.0, -0.28, 0.0], [0.0, -0.25, 0.0],
    [-0.18, -0.02, 0.0], [0.0, -0.28, 0.0], [0.0, -0.25, 0.0],
    [0.1, -0.05, 0.0], [0.0, -0.42, 0.0], [0.0, -0.42, 0.0],
    [-0.1, -0.05, 0.0], [0.0, -0.42, 0.0], [0.0, -0.42, 0.0],
], dtype=np.float64)
_SWING = {5: 1.0, 6: 0.5, 8: -1.0, 9: -0.5, 11: -1.0, 12: -0.6, 14: 1.0, 15: 0.6}  # joint -> swing sign/amplitude


def synthetic_gaits(n: int, frames: int, seed: int = 0, min_fraction: float = 0.5) -> np.ndarray:
    """``n`` synthetic walking sequences ``float32 (n, frames, 16, 3)``, zero-padded after a random length."""
    if n < 1 or frames < 1 or not 0 < min_fraction <= 1:
        raise ValueError(f"synthetic_gaits: need n >= 1, frames >= 1, 0 < min_fraction <= 1; "
                         f"got {n}, {frames}, {min_fraction}")
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float64)[None, :]  # (1, T)
    cadence = rng.uniform(0.03, 0.06, size=(n, 1))  # cycles per frame
    phase = 2 * np.pi * (cadence * t + rng.uniform(0, 1, size=(n, 1)))  # (n, T)
    offsets = np.broadcast_to(_OFFSETS, (n, frames, NUM_JOINTS, 3)).copy()  # (n, T, V, 3)
    for joint, amplitude in _SWING.items():  # swing the distal bones forward and back
        length = np.abs(_OFFSETS[joint, 1])
        angle = 0.5 * amplitude * np.sin(phase)  # (n, T)
        offsets[:, :, joint, 1] = -length * np.cos(angle)
        offsets[:, :, joint, 2] = length * np.sin(angle)
    positions = np.zeros_like(offsets)
    speed = rng.uniform(0.02, 0.05, size=(n, 1))  # metres per frame
    positions[:, :, 0] = offsets[:, :, 0]
    positions[:, :, 0, 2] += speed * t
    for joint in range(1, NUM_JOINTS):  # PARENTS[j] < j: forward kinematics in one pass
        positions[:, :, joint] = positions[:, :, PARENTS[joint]] + offsets[:, :, joint]
    positions += rng.normal(0, 0.005, size=positions.shape)
    lengths = rng.integers(max(1, int(np.ceil(min_fraction * frames))), frames + 1, size=n)
    positions[t[0][None, :] >= lengths[:, None]] = 0.0  # zero padding after the valid length
    return positions.astype(np.float32)


def load_sequences(spec: str, seed: int = 0) -> np.ndarray:
    """Sequences ``(N, T, 16, 3)`` from ``spec``: a ``.npy`` file, ``"embedded"`` (the demo's pretraining
    corpus of Bandai windows, ``cagelib.data.tasks``) or ``"synthetic:N,T"`` (:func:`synthetic_gaits`)."""
    if spec == "embedded":
        return gait_task().pretrain_x
    if spec.startswith("synthetic:"):
        try:
            n, frames = (int(v) for v in spec.split(":", 1)[1].split(","))
        except ValueError:
            raise ValueError(f"load_sequences: expected 'synthetic:N,T', got {spec!r}") from None
        return synthetic_gaits(n, frames, seed)
    path = Path(spec)
    if path.suffix != ".npy" or not path.is_file():
        raise ValueError(f"load_sequences: {spec!r} is not an existing .npy file, 'embedded' or 'synthetic:N,T'")
    x = np.load(path, allow_pickle=False)
    if x.ndim != 4 or x.shape[2:] != (NUM_JOINTS, 3):
        raise ValueError(f"{path}: expected an array (N, T, {NUM_JOINTS}, 3), got {x.shape}")
    return x.astype(np.float32, copy=False)
