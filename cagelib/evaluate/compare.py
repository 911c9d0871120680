"""Paired comparison of two rows of a results table over seeds: the difference, its interval, a verdict.

Two rows (an encoder and its control, or two methods) evaluated with the same seeds on the same folds are
paired per seed: ``d_s = a_s - b_s``. The mean difference gets a 95 % Student-t interval over seeds,

    mean(d) +- t_{0.975, n-1} * std(d) / sqrt(n),

a two-sided paired t-test p-value, and a verdict: ``"A > B"`` or ``"B > A"`` when the interval excludes 0,
else ``"not separable"`` (also when every seed gives the same difference: a clip accuracy over a few clips
is discrete, and a zero spread over few seeds is no evidence that there is none). ``seeds_to_separate(d, sd)`` answers how many seeds would separate a true
difference ``d`` at a per-seed spread ``sd`` (the interval's half-width below ``|d|``).

The unit here is the seed (each seed's fold mean). The clip-level bootstrap the evidence issue asks for
needs per-clip predictions, which result files do not hold yet; a seed-level interval is the conservative
part of it (it carries pretraining's seed-to-seed spread, the largest source of variance measured here).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats

VERDICTS = ("A > B", "B > A", "not separable")


@dataclass(frozen=True)
class Comparison:
    """The paired difference ``a - b`` over ``n`` seeds (points of accuracy when the rows are in %)."""

    a: str
    b: str
    n: int
    mean_a: float
    mean_b: float
    difference: float  # mean over seeds of a_s - b_s
    low: float  # 95 % interval of the mean difference
    high: float
    p_value: float  # two-sided paired t-test (nan with fewer than 2 seeds or zero spread)
    verdict: str  # one of VERDICTS

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    def sentence(self, unit: str = " points") -> str:
        """``"a - b = +5.0 points [1.2, 8.8] (n = 5, p = 0.02): A > B"``, the verdict in words."""
        words = {"A > B": f"{self.a} > {self.b}", "B > A": f"{self.b} > {self.a}", "not separable": "not separable"}
        p = "n/a" if math.isnan(self.p_value) else f"{self.p_value:.2g}"
        return (f"{self.a} - {self.b} = {self.difference:+.1f}{unit} [{self.low:+.1f}, {self.high:+.1f}] "
                f"(95 % interval, n = {self.n} seeds, p = {p}): {words[self.verdict]}")


def compare(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("A", "B"),
            confidence: float = 0.95) -> Comparison:
    """Paired comparison of per-seed values ``a`` and ``b`` (the same seeds in the same order).

    ``a``, ``b``: shape ``(n,)``, ``n >= 2`` (one seed gives no interval). Raises ``ValueError`` on unequal
    lengths, fewer than 2 seeds or non-finite values.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"compare: {names[0]} and {names[1]} need one value per seed each, the same seeds; "
                         f"got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"compare: {names[0]} vs {names[1]}: an interval needs at least 2 seeds, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"compare: {names[0]} vs {names[1]}: values must be finite, got {x.tolist()} and {y.tolist()}")
    d = x - y  # (n,) paired per seed
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1)) if sd > 1e-9 * max(1.0, abs(mean)) else math.nan
    low, high = mean - half, mean + half
    verdict = "A > B" if low > 0 else "B > A" if high < 0 else "not separable"
    if sd <= 1e-9 * max(1.0, abs(mean)):  # every seed the same difference (to rounding): with a discrete metric and few seeds no evidence of no spread
        verdict = "not separable"
    return Comparison(names[0], names[1], n, float(x.mean()), float(y.mean()), mean, low, high, p, verdict)


def seeds_to_separate(difference: float, spread: float, confidence: float = 0.95, max_seeds: int = 1000) -> int | None:
    """Smallest number of seeds ``n`` whose interval half-width ``t_{n-1} * spread / sqrt(n)`` is below
    ``|difference|``: how many seeds would separate a true paired difference of this size at this per-seed
    spread (the standard deviation of ``a_s - b_s``). ``None`` if more than ``max_seeds``."""
    if spread < 0 or not math.isfinite(spread) or not math.isfinite(difference):
        raise ValueError(f"seeds_to_separate: need a finite difference and spread >= 0, got {difference}, {spread}")
    if spread == 0:
        return 2 if difference != 0 else None
    for n in range(2, max_seeds + 1):
        if float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * spread / math.sqrt(n) < abs(difference):
            return n
    return None
