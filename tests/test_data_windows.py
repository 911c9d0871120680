"""Windows cut from clips, and splits that never put one clip on both sides."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from cagelib.data import GaitSet, cut_windows, grouped_split, repeated_grouped_kfold, stratified_split


def ramp_set(lengths=(10, 4, 7)) -> GaitSet:
    """Clip i, frame t holds the value 100 * i + t everywhere: windows can be traced back."""
    clips = [np.broadcast_to((100 * i + np.arange(t))[:, None, None], (t, 16, 3)) for i, t in enumerate(lengths)]
    return GaitSet(clips, np.array([0, 1, -1]), ("a", "b"))


def test_windows_are_slices_of_their_clip():
    w = cut_windows(ramp_set(), length=5, stride=2)
    # clip 0 (10 frames): starts 0, 2, 4; clip 1 (4 frames): padded; clip 2 (7 frames): starts 0, 2
    np.testing.assert_array_equal(w.clip_index, [0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(w.start, [0, 2, 4, 0, 0, 2])
    np.testing.assert_array_equal(w.lengths, [5, 5, 5, 4, 5, 5])
    np.testing.assert_array_equal(w.labels, [0, 0, 0, 1, -1, -1])
    assert w.x.shape == (6, 5, 16, 3) and w.x.dtype == np.float32 and len(w) == 6
    for k in range(len(w)):
        expected = 100 * w.clip_index[k] + w.start[k] + np.arange(w.lengths[k])
        np.testing.assert_array_equal(w.x[k, : w.lengths[k], 7, 2], expected)
    assert not w.x[3, 4:].any()  # the short clip is zero-padded after its 4 frames


def test_short_clips_can_be_dropped_and_bad_options_refused():
    w = cut_windows(ramp_set(), length=5, stride=5, short="drop")
    np.testing.assert_array_equal(w.clip_index, [0, 0, 2])
    assert (w.lengths == 5).all()
    assert len(cut_windows(ramp_set(), length=50, stride=1, short="drop")) == 0
    with pytest.raises(ValueError, match="short must be one of"):
        cut_windows(ramp_set(), 5, 2, short="skip")
    with pytest.raises(ValueError, match="stride must be >= 1"):
        cut_windows(ramp_set(), 5, 0)


def test_stratified_split_is_4_to_1_per_class_and_seeded():
    labels = np.repeat([0, 1, 2, 3], [100, 30, 75, 120])
    train, test = stratified_split(labels, test_fraction=0.2, seed=3)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    assert collections.Counter(labels[test]) == {0: 20, 1: 6, 2: 15, 3: 24}
    again = stratified_split(labels, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(test, again[1])
    assert not np.array_equal(test, stratified_split(labels, 0.2, seed=4)[1])


def test_grouped_split_keeps_each_clip_on_one_side():
    rng = np.random.default_rng(0)
    clip_label = rng.integers(0, 4, size=40)
    windows_per_clip = rng.integers(1, 9, size=40)
    groups = np.repeat(np.arange(40), windows_per_clip)  # window -> clip
    labels = clip_label[groups]
    train, test = grouped_split(groups, labels, test_fraction=0.25, seed=1)
    assert len(train) + len(test) == len(groups)
    assert not set(groups[train]) & set(groups[test])
    for label in range(4):  # a quarter of each label's clips (rounded) is in the test set
        n = (clip_label == label).sum()
        assert len(set(groups[test][labels[test] == label])) == max(1, round(n * 0.25))
    with pytest.raises(ValueError, match="more than one label"):
        grouped_split(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 0]))


def test_repeated_grouped_kfold_covers_every_clip_once_per_repeat():
    clip_label = np.repeat(np.arange(4), 7)  # the emotion task: 4 classes x 7 clips
    windows_per_clip = np.arange(28) % 5 + 1
    groups = np.repeat(np.arange(28), windows_per_clip)
    labels = clip_label[groups]
    folds = repeated_grouped_kfold(groups, labels, n_splits=7, n_repeats=3, seed=0)
    assert len(folds) == 21
    for r in range(3):
        seen = collections.Counter()
        for train, test in folds[7 * r : 7 * (r + 1)]:
            assert not set(groups[train]) & set(groups[test])
            assert len(train) + len(test) == len(groups)
            test_clips = set(groups[test])
            seen.update(test_clips)
            assert collections.Counter(clip_label[list(test_clips)]) == {0: 1, 1: 1, 2: 1, 3: 1}  # stratified
        assert seen == {g: 1 for g in range(28)}
    first = [t for _, t in folds[:7]]
    second = [t for _, t in folds[7:14]]
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))  # repeats reshuffle
    same = repeated_grouped_kfold(groups, labels, n_splits=7, n_repeats=3, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, same))
    with pytest.raises(ValueError, match="n_splits must be in 2..28"):
        repeated_grouped_kfold(groups, labels, n_splits=29)
