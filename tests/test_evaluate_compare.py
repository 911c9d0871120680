"""cagelib.evaluate.compare: paired differences over seeds, their intervals and verdicts, on known data."""
import math

import numpy as np
import pytest

from cagelib.evaluate.compare import compare, seeds_to_separate


def test_a_known_paired_difference_is_found_and_separated():
    rng = np.random.default_rng(0)
    base = rng.normal(70, 8, size=10)  # a large seed-to-seed spread shared by both rows (the pairing removes it)
    a, b = base + 5 + rng.normal(0, 1, 10), base + rng.normal(0, 1, 10)
    result = compare(a, b, ("pretrained", "random init"))
    assert result.low < 5 < result.high and result.low > 0
    assert result.verdict == "A > B" and result.p_value < 1e-4
    assert result.difference == pytest.approx(float(np.mean(a - b)))
    assert compare(b, a).verdict == "B > A"
    assert "pretrained > random init" in result.sentence()


def test_the_interval_is_the_student_t_interval():
    d = np.array([1.0, 3.0, 2.0])  # mean 2, sd 1, n 3: t_{0.975, 2} = 4.3027
    result = compare(d, np.zeros(3))
    assert result.low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert result.high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    assert result.verdict == "not separable"  # three seeds, all positive, and still not separated


def test_noise_of_the_size_of_the_difference_is_not_separable():
    a, b = [76.7, 70.0, 83.4], [71.7, 74.0, 69.4]  # means 76.7 vs 71.7, paired differences of both signs
    result = compare(a, b)
    assert result.verdict == "not separable" and result.low < 0 < result.high


def test_unpaired_or_too_few_seeds_are_refused():
    with pytest.raises(ValueError, match="the same seeds"):
        compare([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        compare([1], [2])
    with pytest.raises(ValueError, match="finite"):
        compare([1, float("nan")], [1, 2])


def test_seeds_to_separate_matches_the_interval():
    n = seeds_to_separate(5.0, 4.0)
    assert n is not None and n >= 2
    assert seeds_to_separate(5.0, 4.0) < seeds_to_separate(2.0, 4.0)  # smaller differences need more seeds
    assert seeds_to_separate(0.0, 1.0) is None


def test_a_zero_spread_over_seeds_is_not_taken_as_certainty():
    result = compare([600 / 7, 85.7142857142857, 600 / 7], [550 / 7, 78.57142857142857, 550 / 7])  # clip accuracy
    #                                                       of 7 clips: 3 seeds, one value (to rounding)
    assert result.difference == pytest.approx(50 / 7) and result.verdict == "not separable"


# --- the clip-and-seed bootstrap ------------------------------------------------------------------------------

import time  # noqa: E402

from cagelib.evaluate.compare import BOOTSTRAP_METHOD, bootstrap_difference  # noqa: E402
from cagelib.evaluate.metrics import balanced_accuracy, clip_accuracy  # noqa: E402


def clip_task(clips_per_class=10, classes=4, windows=4):
    """``(labels, clips, clip_label)``: ``classes * clips_per_class`` clips of ``windows`` windows each
    (an int: every clip as long; a sequence: cycled), clip c of class c % classes."""
    n_clips = classes * clips_per_class
    sizes = np.resize(np.atleast_1d(windows), n_clips)
    clip_label = np.arange(n_clips) % classes
    clips = np.repeat(np.arange(n_clips), sizes)
    return clip_label[clips], clips, clip_label


def clip_predictions(labels, clips, right):
    """Window predictions: every window of clip c right where ``right[c]``, else the next class."""
    k = labels.max() + 1
    return np.where(np.asarray(right)[clips], labels, (labels + 1) % k)


def test_a_clearly_better_row_is_found_with_the_interval_around_the_true_difference():
    labels, clips, clip_label = clip_task(clips_per_class=12, windows=5)
    rng = np.random.default_rng(0)
    a, b = [], []
    for _ in range(4):  # seeds: A right on every clip, B wrong on 3 of the 12 clips of every class (other clips
        #               per seed), so the true difference is 25 points of balanced accuracy and of clip accuracy
        wrong = np.zeros(len(clip_label), bool)
        for k in range(4):
            wrong[rng.choice(np.flatnonzero(clip_label == k), 3, replace=False)] = True
        a.append(labels.copy())
        b.append(clip_predictions(labels, clips, ~wrong))
    for metric in ("balanced", "clip_top1"):
        c = bootstrap_difference(a, b, labels, clips, metric=metric, names=("pretrained", "random init"))
        assert c.difference == pytest.approx(25.0) and (c.mean_a, c.mean_b) == pytest.approx((100.0, 75.0))
        assert 0 < c.low < 25 < c.high < 40 and c.verdict == "A > B" and c.p_value < 0.01
        assert c.n == 4 and c.method == BOOTSTRAP_METHOD and "clips and seeds (bootstrap)" in c.sentence()
        flipped = bootstrap_difference(b, a, labels, clips, metric=metric)
        assert flipped.verdict == "B > A"
        assert (flipped.low, flipped.high) == pytest.approx((-c.high, -c.low))


def test_the_point_difference_is_the_metric_over_all_windows_mean_over_seeds_and_repeats():
    labels, clips, _ = clip_task(clips_per_class=5, classes=3, windows=[2, 7, 3])
    rng = np.random.default_rng(1)
    a = [rng.integers(0, 3, size=(2, len(labels))) for _ in range(3)]  # 3 seeds x 2 repeats, noisy predictions
    b = [rng.integers(0, 3, size=(2, len(labels))) for _ in range(3)]
    balanced = bootstrap_difference(a, b, labels, clips, resamples=10)
    expected = np.mean([balanced_accuracy(labels, p) for s in a for p in s]) - \
        np.mean([balanced_accuracy(labels, p) for s in b for p in s])
    assert balanced.difference == pytest.approx(expected)
    clip = bootstrap_difference(a, b, labels, clips, metric="clip_top1", resamples=10)
    expected = np.mean([clip_accuracy(labels, p, clips) for s in a for p in s]) - \
        np.mean([clip_accuracy(labels, p, clips) for s in b for p in s])
    assert clip.difference == pytest.approx(expected)


def test_identical_predictions_give_an_interval_of_exactly_zero():
    labels, clips, _ = clip_task()
    rng = np.random.default_rng(2)
    a = [rng.integers(0, 4, len(labels)) for _ in range(3)]
    for metric in ("balanced", "clip_top1"):
        c = bootstrap_difference(a, [p.copy() for p in a], labels, clips, metric=metric)
        assert (c.difference, c.low, c.high) == (0.0, 0.0, 0.0)
        assert c.verdict == "not separable" and c.p_value == 1.0


def test_a_difference_carried_by_one_clip_is_not_separable_however_many_seeds():
    labels, clips, clip_label = clip_task(clips_per_class=10, windows=6)
    right = np.ones(len(clip_label), bool)
    right[clip_label == 1] = False  # both rows wrong on class 1 ...
    b = clip_predictions(labels, clips, right)
    right[np.flatnonzero(clip_label == 1)[0]] = True  # ... but A right on one of its clips
    a = clip_predictions(labels, clips, right)
    for seeds in (3, 10):  # the same clip in every seed is one unit of evidence, not one per seed
        c = bootstrap_difference([a] * seeds, [b] * seeds, labels, clips)
        assert c.difference == pytest.approx(100 * (1 / 10) / 4)  # class 1's recall +10 points, 4 classes
        assert c.low == 0.0 and c.high > 0 and c.verdict == "not separable"
    # the same difference spread over many clips of every class separates
    many = clip_predictions(labels, clips, np.arange(len(clip_label)) % 8 != 0)
    assert bootstrap_difference([labels] * 3, [many] * 3, labels, clips).verdict == "A > B"


def test_resampling_clips_is_wider_than_resampling_their_duplicate_windows():
    labels, clips, clip_label = clip_task(clips_per_class=8, windows=10)  # 10 identical windows per clip
    rng = np.random.default_rng(3)
    a = [clip_predictions(labels, clips, rng.random(len(clip_label)) < 0.7) for _ in range(3)]
    b = [clip_predictions(labels, clips, rng.random(len(clip_label)) < 0.5) for _ in range(3)]
    by_clip = bootstrap_difference(a, b, labels, clips)
    by_window = bootstrap_difference(a, b, labels, clips, unit="window")
    assert by_clip.difference == pytest.approx(by_window.difference)  # the same point, other units
    width_clip, width_window = by_clip.high - by_clip.low, by_window.high - by_window.low
    assert width_clip > 1.8 * width_window  # here 35 vs 16 points (sqrt(10) without the seeds' own spread)
    assert by_window.method == "windows and seeds (bootstrap)"
    # a window that is its own clip: the two bootstraps are the same resampling
    singles = np.arange(len(labels))
    own = bootstrap_difference(a, b, labels, singles)
    assert (own.low, own.high) == pytest.approx((by_window.low, by_window.high))
    with pytest.raises(ValueError, match="metric must be 'balanced'"):
        bootstrap_difference(a, b, labels, clips, metric="clip_top1", unit="window")


def test_the_bootstrap_is_deterministic_per_seed_and_keeps_every_class():
    labels, clips, clip_label = clip_task(clips_per_class=3, classes=5, windows=[1, 4, 9])
    rng = np.random.default_rng(4)
    a = [rng.integers(0, 5, len(labels)) for _ in range(2)]
    b = [rng.integers(0, 5, len(labels)) for _ in range(2)]
    first, again = bootstrap_difference(a, b, labels, clips, seed=7), bootstrap_difference(a, b, labels, clips, seed=7)
    assert (first.low, first.high, first.p_value) == (again.low, again.high, again.p_value)
    other = bootstrap_difference(a, b, labels, clips, seed=8)
    assert other.difference == first.difference and (other.low, other.high) != (first.low, first.high)
    assert math.isfinite(first.low) and math.isfinite(first.high)  # no class ever left out (no 0 / 0)
    # renaming the clips (any ids, any order of windows) changes nothing
    order = rng.permutation(len(labels))
    renamed = (clips * 7 + 100)[order]
    moved = bootstrap_difference([p[order] for p in a], [p[order] for p in b], labels[order], renamed, seed=7)
    assert (moved.difference, moved.low, moved.high) == pytest.approx((first.difference, first.low, first.high))


def test_bad_bootstrap_input_is_refused():
    labels, clips, _ = clip_task(clips_per_class=2, classes=2)
    good = [labels, labels]
    with pytest.raises(ValueError, match="the same seeds"):
        bootstrap_difference(good, good[:1], labels, clips)
    with pytest.raises(ValueError, match="predictions of the 16 windows"):
        bootstrap_difference([labels[:-1]], [labels[:-1]], labels, clips)
    with pytest.raises(ValueError, match="different labels"):
        bootstrap_difference(good, good, labels, np.zeros_like(clips))
    with pytest.raises(ValueError, match="metric must be one of"):
        bootstrap_difference(good, good, labels, clips, metric="top1")


def test_the_bootstrap_takes_well_under_a_second():
    labels, clips, clip_label = clip_task(clips_per_class=25, windows=[3, 8, 12, 5])  # 100 clips, 700 windows
    rng = np.random.default_rng(5)
    a = [clip_predictions(labels, clips, rng.random(len(clip_label)) < 0.7) for _ in range(5)]
    b = [clip_predictions(labels, clips, rng.random(len(clip_label)) < 0.6) for _ in range(5)]
    started = time.perf_counter()
    for metric in ("balanced", "clip_top1"):
        bootstrap_difference(a, b, labels, clips, metric=metric, resamples=2000)
    assert time.perf_counter() - started < 1.0
