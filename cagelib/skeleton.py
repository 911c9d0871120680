"""The 16-joint E-Gait skeleton: one definition that everything else imports.

Joint order follows the E-Gait / STEP release (``README.upstream.md`` of the E-Gait data):

    0 root, 1 spine, 2 neck, 3 head,
    4 left shoulder, 5 left elbow, 6 left hand,
    7 right shoulder, 8 right elbow, 9 right hand,
    10 left hip, 11 left knee, 12 left foot,
    13 right hip, 14 right knee, 15 right foot.

Left/right convention: the E-Gait README calls joints 4-6 and 10-12 *left*; the STEP code calls them
*right*. cagelib follows the E-Gait README (4-6, 10-12 = left). Every left/right operation
(``flip_left_right``, the BVH joint map of Bandai ``*_L`` bones) derives from ``LEFT_RIGHT_PAIRS`` below,
so the choice lives in exactly one place.

Coordinates: arrays are ``(..., T, V, 3)`` with ``V = 16`` joints and channels ``(x, y, z)``;
``y`` is up (``UP_AXIS = 1``).
"""
from __future__ import annotations

import numpy as np

NUM_JOINTS = 16
UP_AXIS = 1  # index of the vertical coordinate (y)
ROOT = 0

JOINT_NAMES: tuple[str, ...] = (
    "root", "spine", "neck", "head",
    "left_shoulder", "left_elbow", "left_hand",
    "right_shoulder", "right_elbow", "right_hand",
    "left_hip", "left_knee", "left_foot",
    "right_hip", "right_knee", "right_foot",
)

# STEP's graph, centre joint 0; each edge is (parent, child).
EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 10), (0, 13), (1, 2), (2, 3), (2, 4), (2, 7), (4, 5), (5, 6),
    (7, 8), (8, 9), (10, 11), (11, 12), (13, 14), (14, 15),
)

# (left joint, right joint) under the E-Gait README convention stated above.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = ((4, 7), (5, 8), (6, 9), (10, 13), (11, 14), (12, 15))

# PARENTS[j] is the parent of joint j in the tree rooted at ROOT (-1 for the root).
PARENTS: tuple[int, ...] = tuple(
    -1 if j == ROOT else next(p for p, c in EDGES if c == j) for j in range(NUM_JOINTS)
)


def flip_permutation() -> np.ndarray:
    """Joint permutation that swaps every left joint with its right partner: ``x[..., perm, :]``."""
    perm = np.arange(NUM_JOINTS)
    for left, right in LEFT_RIGHT_PAIRS:
        perm[left], perm[right] = right, left
    return perm


def flip_left_right(x, lateral_axis: int = 0):
    """Mirror a skeleton: negate the lateral coordinate and swap left/right joints.

    Works on NumPy arrays and torch tensors of shape ``(..., V, 3)``.
    """
    perm = flip_permutation()
    y = x[..., perm, :].copy() if isinstance(x, np.ndarray) else x[..., perm, :].clone()
    y[..., lateral_axis] = -y[..., lateral_axis]
    return y


def bone_lengths(x) -> np.ndarray:
    """Length of every edge in ``EDGES``: ``(..., V, 3) -> (..., len(EDGES))`` (NumPy)."""
    x = np.asarray(x)
    parents = np.array([p for p, _ in EDGES])
    children = np.array([c for _, c in EDGES])
    return np.linalg.norm(x[..., children, :] - x[..., parents, :], axis=-1)


def adjacency_matrix(self_loops: bool = False) -> np.ndarray:
    """Symmetric ``(V, V)`` 0/1 adjacency of the skeleton graph."""
    a = np.zeros((NUM_JOINTS, NUM_JOINTS), dtype=np.float32)
    for p, c in EDGES:
        a[p, c] = a[c, p] = 1.0
    if self_loops:
        a += np.eye(NUM_JOINTS, dtype=np.float32)
    return a
