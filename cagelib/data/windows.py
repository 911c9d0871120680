"""Fixed-length windows cut from clips (splits that keep a clip's windows together: ``cagelib.data.splits``)."""
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
