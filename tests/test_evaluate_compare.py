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
