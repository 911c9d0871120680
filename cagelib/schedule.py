"""Learning-rate milestones given as epochs or as fractions of a run: one rule for pretraining and the probes."""
from __future__ import annotations

import math
from typing import Iterable


def milestone_epochs(milestones: Iterable[float], epochs: int) -> tuple[int, ...]:
    """The epochs where the learning rate drops: an integer entry is an epoch, a number below 1 a fraction of
    ``epochs`` rounded down (0.75 of 8 -> 6, 0.5 of 3 -> 1). Fractions landing on 0 or on ``epochs`` and beyond
    are dropped (no drop before the first epoch or after the last); the result is sorted and distinct.
    ``(0.5, 0.8)`` of 2 epochs -> ``(1,)``; ``(10, 16)`` -> ``(10, 16)`` whatever ``epochs``."""
    out = set()
    for m in milestones:
        if isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0:
            raise ValueError(f"milestones: {m!r} is neither an epoch (an integer >= 1) nor a fraction in (0, 1)")
        if isinstance(m, float) and m < 1:
            epoch = math.floor(m * epochs)
            if 0 < epoch < epochs:
                out.add(epoch)
        elif m != int(m) or m < 1:
            raise ValueError(f"milestones: {m!r} is neither an epoch (an integer >= 1) nor a fraction in (0, 1)")
        else:
            out.add(int(m))
    return tuple(sorted(out))
