"""Train/test splits that respect clips: every split here draws, per label, a seeded share of *groups*.

Windows of one clip overlap and look alike, so any split of windows must keep each clip on one side:
``grouped_split``, ``repeated_grouped_kfold`` and the probes' ``stratified_subset`` /
``stratified_holdout`` split *groups* (clips), stratified by label. ``stratified_split`` is the plain
per-sample split (E-Gait: one gait = one sample, 4:1); without ``groups`` each sample is its own group.

Splits are NumPy index arrays (sorted), seeded by an integer: same seed -> same split. All draws share
``_draw_per_label``; only the count per label differs. Rounding (kept as it was, so the folds and
subsets of existing runs do not move): ``grouped_split`` rounds half to even (Python ``round``), the
probes' subsets round half up (``floor(x + 0.5)``); ``docs/decisions.md``, "Splits".
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np


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


def _draw_per_label(group_label: np.ndarray, rng: np.random.Generator,
                    count: Callable[[int], int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per label (ascending): its groups shuffled by ``rng``, cut after ``count(n_groups)``: ``(first, rest)``."""
    for label in np.unique(group_label):
        members = rng.permutation(np.flatnonzero(group_label == label))
        n = count(len(members))
        yield members[:n], members[n:]


def _samples_of(inverse: np.ndarray, chosen_groups: list[np.ndarray]) -> np.ndarray:
    """Sorted indices of the samples whose group is among ``chosen_groups``."""
    return np.flatnonzero(np.isin(inverse, np.concatenate(chosen_groups or [np.zeros(0, np.int64)])))


def _groups_or_samples(labels, groups) -> tuple[np.ndarray, np.ndarray]:
    """``(group_label, inverse)``; without ``groups`` every sample is its own group."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    _, group_label, inverse = _group_labels(groups, labels)
    return group_label, inverse


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def stratified_split(labels, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample split, stratified by label (``-1`` is a stratum too): ``(train_idx, test_idx)``.

    Each class puts ``round(n_c * test_fraction)`` samples in the test set (E-Gait: 4:1).
    """
    labels = np.asarray(labels)
    return grouped_split(np.arange(len(labels)), labels, test_fraction, seed)


def grouped_split(groups, labels, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split samples so that no group (clip) is on both sides, stratified by the groups' labels.

    Each label puts ``round(n_groups * test_fraction)`` of its groups in the test set (at least one
    when it has two or more groups). Returns sorted sample indices ``(train_idx, test_idx)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    group_label, inverse = _groups_or_samples(labels, groups)

    def count(n: int) -> int:
        return min(max(int(round(n * test_fraction)), 1 if n >= 2 else 0), n - 1)

    test = [first for first, _ in _draw_per_label(group_label, np.random.default_rng(seed), count)]
    in_test = np.isin(inverse, np.concatenate(test))
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


def stratified_subset(labels, fraction: float, seed: int, groups=None) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified ``fraction`` of ``labels`` (semi-supervised protocol).

    Each class keeps ``round(fraction * n_class)`` samples, at least one, so every class is present.
    With ``groups`` (e.g. the clip of each window) whole groups are drawn instead of samples.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    group_label, inverse = _groups_or_samples(labels, groups)
    draws = _draw_per_label(group_label, np.random.default_rng(seed),
                            lambda n: min(n, max(1, _half_up(fraction * n))))
    return _samples_of(inverse, [first for first, _ in draws])


def stratified_holdout(labels, fraction: float, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation) with ``fraction`` of each class held out, stratified.

    Every class keeps at least one training sample; classes with a single sample stay in training.
    With ``groups`` whole groups go to one side (windows of a clip are near-duplicates).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    group_label, inverse = _groups_or_samples(labels, groups)
    draws = list(_draw_per_label(group_label, np.random.default_rng(seed),
                                 lambda n: min(n - 1, _half_up(fraction * n))))
    if not any(len(val) for val, _ in draws):
        raise ValueError(f"val_fraction={fraction} leaves no validation sample for {len(group_label)} training units")
    return _samples_of(inverse, [rest for _, rest in draws]), _samples_of(inverse, [val for val, _ in draws])
