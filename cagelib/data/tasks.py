"""The Bandai experiment: a pretraining corpus and the emotion task, as preprocessed windows.

The embedded set (``cagelib.data.load_embedded``) holds 819 Bandai clips. cagelib's default experiment
on it, used by ``make demo``, the notebooks and ``cagelib.lab.reproduce``:

- **Emotion task** (downstream): the 28 dataset-1 locomotion clips whose style is an emotion
  (neutral, happy, sad, angry; 7 clips per class), cut into windows. Folds are grouped by clip
  (``repeated_grouped_kfold``): windows of one clip are near-duplicates and never straddle a split.
- **Pretraining corpus** (self-supervised, labels unused): windows of every *other* clip (dataset-2
  walking and the rest of dataset-1), so no emotion-task clip, train or test, is seen in pretraining.

Every window is preprocessed like the paper's data ("according to ISC"): root of the first frame at
the origin, view normalised about the up axis (``cagelib.data.preprocess``).

Caveat (SPEC): each Bandai style was recorded within one take group, so style and performer are
confounded: an emotion probe on this data may partly recognise the performer.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .bandai import emotion_clips, load_embedded
from .gaitset import GaitSet
from .preprocess import PreprocessConfig, preprocess
from .splits import repeated_grouped_kfold
from .windows import cut_windows

CORPORA = ("other", "dataset-2")  # pretraining corpus: every non-task clip, or dataset-2 walking only


@dataclass
class TaskConfig:
    window: int = 48  # frames per window (1.6 s at 30 fps)
    stride: int = 12  # stride between emotion-task windows
    pretrain_stride: int = 48  # stride between pretraining windows
    max_pretrain_windows: int | None = 1024  # seeded random subset of the corpus for CPU runs; None = all
    center: str = "first_frame"  # root centring (see cagelib.data.preprocess.center_root)
    view: bool = True  # rotate each window to a canonical facing direction
    seed: int = 0  # seeds the corpus subset


@dataclass
class EmotionTask:
    pretrain_x: np.ndarray  # float32 (M, T, 16, 3): unlabelled windows of the non-task clips
    x: np.ndarray  # float32 (n, T, 16, 3): emotion-task windows
    y: np.ndarray  # int64 (n,): emotion label of each window
    groups: np.ndarray  # int64 (n,): clip of each window (split unit)
    label_names: tuple  # index = label value
    clip_names: np.ndarray  # str (clips,): clip id of each group value

    def folds(self, n_splits: int = 4, n_repeats: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """Repeated clip-grouped, label-stratified folds over the task windows: ``[(train, test), ...]``."""
        return repeated_grouped_kfold(self.groups, self.y, n_splits, n_repeats, seed)

    def summary(self) -> dict:
        counts = np.bincount(self.y, minlength=len(self.label_names))
        clips = [len(np.unique(self.groups[self.y == c])) for c in range(len(self.label_names))]
        return {"pretrain_windows": int(len(self.pretrain_x)), "task_windows": int(len(self.x)),
                "window_frames": int(self.x.shape[1]),
                "per_class": {n: {"clips": k, "windows": int(c)} for n, k, c in zip(self.label_names, clips, counts)}}


def preprocess_windows(x: np.ndarray, lengths: np.ndarray, config: TaskConfig) -> np.ndarray:
    """Centre and view-normalise windows ``(M, T, 16, 3)``; padding stays zero."""
    out, _ = preprocess(x, lengths, PreprocessConfig(length=config.window, center=config.center, view=config.view))
    return out


def emotion_task(gs: GaitSet | None = None, config: TaskConfig | None = None) -> EmotionTask:
    """Build the emotion task and the pretraining corpus from ``gs`` (default: the embedded set)."""
    config = config or TaskConfig()
    gs = gs if gs is not None else load_embedded()
    task_clips = emotion_clips(gs)
    if len(task_clips) == 0:
        raise ValueError("emotion_task: the data set has no emotion-labelled locomotion clips")
    in_task = np.isin(gs.meta["group"], task_clips.meta["group"])  # "dataset-N/clip_id": ids repeat across datasets
    corpus = gs.subset(np.flatnonzero(~in_task))

    w = cut_windows(corpus, config.window, config.pretrain_stride)
    keep = np.arange(len(w))
    if config.max_pretrain_windows is not None and len(w) > config.max_pretrain_windows:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(w), config.max_pretrain_windows, replace=False))
    pretrain_x = preprocess_windows(w.x[keep], w.lengths[keep], config)

    t = cut_windows(task_clips, config.window, config.stride)
    return EmotionTask(pretrain_x, preprocess_windows(t.x, t.lengths, config), t.labels.astype(np.int64),
                       t.clip_index.astype(np.int64), tuple(task_clips.label_names),
                       np.asarray(task_clips.meta["clip_id"]))


@functools.lru_cache(maxsize=1)
def embedded_set():
    """The embedded Bandai set, loaded once per process (treat as read-only)."""
    return load_embedded()


def emotion_data(task: TaskConfig | None = None, corpus: str = "other") -> EmotionTask:
    """The emotion task and pretraining corpus (``emotion_task``) from the embedded set.

    ``corpus="dataset-2"`` pretrains on dataset-2 walking only, instead of every non-task clip.
    """
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {CORPORA}, got {corpus!r}")
    gs = embedded_set()
    if corpus == "dataset-2":
        task_ids = set(emotion_clips(gs).meta["clip_id"])
        keep = (gs.meta["dataset"] == "dataset-2") | np.isin(gs.meta["clip_id"], list(task_ids))
        gs = gs.subset(np.flatnonzero(keep))
    return emotion_task(gs, task or TaskConfig())
