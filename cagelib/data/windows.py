"""Fixed-length windows cut from clips, and train/test splits that respect clips.

Windows of one clip overlap and look alike, so any split of windows must keep each clip on one side:
``grouped_split`` and ``repeated_grouped_kfold`` split *groups* (clips), stratified by label.
``stratified_split`` is the plain per-sample split (E-Gait: one gait = one sample, 4:1).

Splits are NumPy index arrays (sorted), seeded by an integer: same seed -> same split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..skeleton import NUM_JOINTS
from .gaitset import GaitSet

SHORT_CLIP_MODES = ("pad", "drop")


@dataclass(repr=False, eq=False)
class Windows:
    """``M`` windows of ``T`` frames, each pointing back to its clip."""

    x: np.ndarray  # float32 (M, T, 16, 3); frames at or after lengths[i] are zero
    labels: np.ndarray  # int64 (M,), the clip's label (-1 unlabelled)
    clip_index: np.ndarray  # int64 (M,), index of the source clip in the GaitSet
    lengths: np.ndarray  # int64 (M,), true frames (< T only for a padded short clip)
    start: np.ndarray  # int64 (M,), first frame of the window in its clip

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return (f"Windows({len(self)} windows of {self.x.shape[1]} frames from "
                f"{len(np.unique(self.clip_index))} clips, {(self.lengths < self.x.shape[1]).sum()} padded)")


def cut_windows(gs: GaitSet, length: int, stride: int, short: str = "pad") -> Windows:
    """Windows of ``length`` frames every ``stride`` frames (starts 0, stride, ... while they fit).

    ``short``: a clip shorter than ``length`` gives one zero-padded window (``"pad"``, its true
    length recorded) or none (``"drop"``). Frames after the last full window are not used.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    if short not in SHORT_CLIP_MODES:
        raise ValueError(f"short must be one of {SHORT_CLIP_MODES}, got {short!r}")
    pieces, clip_index, starts, lengths = [], [], [], []
    for i, clip in enumerate(gs.positions):
        T = len(clip)
        if T < length:
            if short == "drop":
                continue
            window = np.zeros((length, NUM_JOINTS, 3), dtype=np.float32)
            window[:T] = clip
            pieces.append(window[None])  # (1, length, V, C)
            clip_index.append(i), starts.append(0), lengths.append(T)
            continue
        s = np.arange(0, T - length + 1, stride)
        pieces.append(clip[s[:, None] + np.arange(length)])  # (len(s), length, V, C)
        clip_index.extend([i] * len(s)), starts.extend(s), lengths.extend([length] * len(s))
    x = np.concatenate(pieces) if pieces else np.zeros((0, length, NUM_JOINTS, 3), np.float32)
    clip_index = np.array(clip_index, dtype=np.int64)
    return Windows(x.astype(np.float32, copy=False), gs.labels[clip_index], clip_index,
                   np.array(lengths, dtype=np.int64), np.array(starts, dtype=np.int64))


def stratified_split(labels, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample split, stratified by label (``-1`` is a stratum too): ``(train_idx, test_idx)``.

    Each class puts ``round(n_c * test_fraction)`` samples in the test set (E-Gait: 4:1).
    """
    labels = np.asarray(labels)
    return grouped_split(np.arange(len(labels)), labels, test_fraction, seed)


def _group_labels(groups: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique groups, each one's label (must be constant within a group), and the inverse map."""
    if groups.shape != labels.shape or groups.ndim != 1:
        raise ValueError(f"groups and labels must be equally long 1-D arrays, got {groups.shape} and {labels.shape}")
    uniq, inverse = np.unique(groups, return_inverse=True)
    group_label = np.full(len(uniq), -2, dtype=np.int64)
    group_label[inverse] = labels
    if (group_label[inverse] != labels).any():
        bad = uniq[inverse[group_label[inverse] != labels][0]]
        raise ValueError(f"group {bad!r} has more than one label; a group (clip) must have one label")
    return uniq, group_label, inverse


def grouped_split(groups, labels, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split samples so that no group (clip) is on both sides, stratified by the groups' labels.

    Each label puts ``round(n_groups * test_fraction)`` of its groups in the test set (at least one
    when it has two or more groups). Returns sorted sample indices ``(train_idx, test_idx)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    groups, labels = np.asarray(groups), np.asarray(labels)
    _, group_label, inverse = _group_labels(groups, labels)
    rng = np.random.default_rng(seed)
    test_groups = []
    for label in np.unique(group_label):
        members = rng.permutation(np.flatnonzero(group_label == label))
        n_test = int(round(len(members) * test_fraction))
        n_test = min(max(n_test, 1 if len(members) >= 2 else 0), len(members) - 1)
        test_groups.append(members[:n_test])
    in_test = np.isin(inverse, np.concatenate(test_groups))
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


def repeated_grouped_kfold(
    groups, labels, n_splits: int = 5, n_repeats: int = 10, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_repeats`` x ``n_splits`` folds: ``[(train_idx, test_idx), ...]``, groups never split.

    In each repeat every group is in exactly one test fold. Groups are stratified by label: each
    label's groups (shuffled) are dealt round-robin over the folds, continuing where the previous
    label stopped, so fold sizes differ by at most one group per label. Repeat ``r`` shuffles with
    ``np.random.default_rng([seed, r])``.
    """
    groups, labels = np.asarray(groups), np.asarray(labels)
    uniq, group_label, inverse = _group_labels(groups, labels)
    if not 2 <= n_splits <= len(uniq):
        raise ValueError(f"n_splits must be in 2..{len(uniq)} (the number of groups), got {n_splits}")
    folds = []
    for r in range(n_repeats):
        rng = np.random.default_rng([seed, r])
        fold_of_group = np.empty(len(uniq), dtype=np.int64)
        next_fold = int(rng.integers(n_splits))
        for label in np.unique(group_label):
            members = rng.permutation(np.flatnonzero(group_label == label))
            fold_of_group[members] = (next_fold + np.arange(len(members))) % n_splits
            next_fold = (next_fold + len(members)) % n_splits
        fold = fold_of_group[inverse]  # (n_samples,)
        folds.extend((np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_splits))
    return folds
