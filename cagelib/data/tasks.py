"""The Bandai experiments: three labelled gait tasks and their pretraining corpora, as preprocessed windows.

The embedded set (``cagelib.data.load_embedded``) holds 819 Bandai clips: every dataset-1 clip and the
dataset-2 walking clips. Three downstream tasks (``TASK_NAMES``), windows of ``window`` frames every
``stride`` frames (defaults 48 / 12):

- ``emotion4``: the dataset-1 locomotion clips (``EMOTION_CONTENTS``) whose style is an emotion
  (neutral, happy, sad, angry; 4 x 7 = 28 clips, 309 windows). cagelib's default experiment (``make
  demo``, the notebooks, ``python -m cagelib reproduce``).
- ``style15``: the dataset-1 locomotion clips, all 15 styles (15 x 7 = 105 clips, 1,161 windows); labels
  are the style names in alphabetical order.
- ``walkstyle7``: the dataset-2 walking clips (walk, walk-turn-left, walk-turn-right), 7 styles (645
  clips, 7,529 windows); labels are the style names in alphabetical order.

**Pretraining corpus** (self-supervised, labels unused; ``DataConfig.corpus``, one of ``CORPORA``):

- ``"other"`` (default): every clip outside the task's *clip family*. emotion4 and style15 share a
  family, the 105 dataset-1 locomotion clips, so ONE pretraining serves both and never sees a clip of
  either; walkstyle7's family is its own 645 clips (its corpus: dataset-1 and any non-walking dataset-2
  clip).
- ``"dataset-2"``: the dataset-2 walking clips outside the family (emotion4 / style15 only).

Clips are matched on ``meta["group"]`` (``"dataset-N/clip_id"``): clip ids repeat across datasets.
Folds are grouped by clip (``GaitTask.folds``): windows of one clip are near-duplicates and never
straddle a split.

Every window is preprocessed like the paper's data ("according to ISC": root of the first frame at the
origin, view normalised about the up axis, ``cagelib.data.preprocess``), then converted to
``DataConfig.representation`` (``cagelib.representation``); corpus and task share the representation.
``GaitTask.x_first_frame`` keeps the first-frame-centred windows for the hand-crafted features.

Caveat (SPEC): each Bandai style was recorded within one take group, so style and performer are
confounded: a style or emotion probe on this data may partly recognise the performer.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np

from ..representation import DEFAULT_REPRESENTATION, REPRESENTATIONS, to_representation
from .bandai import DATASET2_WALKING, EMOTION_CONTENTS, EMOTION_STYLES, load_embedded
from .gaitset import GaitSet
from .preprocess import preprocess
from .splits import repeated_grouped_kfold
from .windows import cut_windows

TASK_NAMES = ("emotion4", "style15", "walkstyle7")
CORPORA = ("other", "dataset-2")  # every clip outside the task's family, or dataset-2 walking only
EMOTION_ORDER = ("normal", "happy", "sad", "angry")  # Bandai style of emotion label 0..3 (EMOTION_LABEL_NAMES)


@dataclass
class DataConfig:
    """The data of an experiment: which labelled tasks, their windows, the pretraining corpus."""

    tasks: tuple = ("emotion4",)  # labelled tasks, each of TASK_NAMES (one pretraining corpus per family)
    representation: str = DEFAULT_REPRESENTATION  # input representation (cagelib.representation)
    window: int = 48  # frames per window (1.6 s at 30 fps)
    stride: int = 0  # frames between the starts of two task windows of a clip; 0 = window // 4
    task_strides: dict = field(default_factory=dict)  # per-task exceptions to stride, e.g. {"walkstyle7": 48}
    pretrain_stride: int = 0  # frames between the starts of two corpus windows; 0 = window (no overlap)
    max_pretrain_windows: int = 1024  # seeded random subset of the corpus (CPU runs); 0 = every window
    seed: int = 0  # seeds the corpus subset
    corpus: str = "other"  # which clips pretraining may see (module docstring, CORPORA)

    def __post_init__(self) -> None:
        self.tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        unknown = [t for t in (*self.tasks, *self.task_strides) if t not in TASK_NAMES]
        if not self.tasks or unknown:
            raise ValueError(f"DataConfig: tasks must be one or more of {TASK_NAMES}, got {unknown or 'none'}")
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"DataConfig: representation must be one of {REPRESENTATIONS}, got {self.representation!r}")
        if self.corpus not in CORPORA:
            raise ValueError(f"DataConfig: corpus must be one of {CORPORA}, got {self.corpus!r}")
        if self.window < 9 or min(self.stride, self.pretrain_stride, self.max_pretrain_windows) < 0:
            raise ValueError("DataConfig: need window >= 9 frames, stride, pretrain_stride, max_pretrain_windows >= 0")

    def task_stride(self, task: str) -> int:
        """Frames between task windows of ``task``: its ``task_strides`` entry, else ``stride``, else window // 4."""
        return self.task_strides.get(task) or self.stride or max(1, self.window // 4)

    def corpus_stride(self) -> int:
        return self.pretrain_stride or self.window


@dataclass
class GaitTask:
    """A labelled window task and its pretraining corpus. Windows of one clip share a ``groups`` value
    (the split unit)."""

    pretrain_x: np.ndarray  # float32 (M, T, 16, 3): unlabelled corpus windows, in ``representation``
    x: np.ndarray  # float32 (n, T, 16, 3): task windows, in ``representation``
    y: np.ndarray  # int64 (n,): label of each window
    groups: np.ndarray  # int64 (n,): clip of each window, an index into clip_names
    lengths: np.ndarray  # int64 (n,): real frames of each window (< T only for a padded short clip)
    label_names: tuple  # index = label value
    clip_names: np.ndarray  # str (clips,): clip_id of each clip
    clip_groups: np.ndarray  # str (clips,): meta["group"] ("dataset-N/clip_id") of each clip
    name: str = "emotion4"
    representation: str = "first_frame"
    x_first_frame: np.ndarray | None = None  # float32 (n, T, 16, 3): the task windows in "first_frame"
    fps: float = 30.0
    corpus: str = "other"

    def __post_init__(self) -> None:
        if self.x_first_frame is None and self.representation == "first_frame":
            self.x_first_frame = self.x

    def folds(self, n_splits: int = 4, n_repeats: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """Repeated clip-grouped, label-stratified folds over the task windows: ``[(train, test), ...]``."""
        return repeated_grouped_kfold(self.groups, self.y, n_splits, n_repeats, seed)

    def clip_labels(self) -> np.ndarray:
        """Label of each clip ``(clips,)``."""
        out = np.full(len(self.clip_names), -1, dtype=np.int64)
        out[self.groups] = self.y
        return out

    def summary(self) -> dict:
        """Sizes: corpus and task windows, clips, and windows and clips per class."""
        counts = np.bincount(self.y, minlength=len(self.label_names))
        clips = np.bincount(self.clip_labels(), minlength=len(self.label_names))
        return {"task": self.name, "representation": self.representation, "corpus": self.corpus,
                "pretrain_windows": len(self.pretrain_x), "task_windows": len(self.x),
                "clips": len(self.clip_names), "window_frames": int(self.x.shape[1]),
                "padded_windows": int((self.lengths < self.x.shape[1]).sum()),
                "per_class": {n: {"clips": int(k), "windows": int(c)}
                              for n, k, c in zip(self.label_names, clips, counts)}}


def _require_meta(gs: GaitSet) -> None:
    for key in ("dataset", "content", "style", "group", "clip_id"):
        if key not in gs.meta:
            raise ValueError(f"gait tasks need meta[{key!r}] (a set from load_bandai / load_embedded)")


def task_family(task: str, gs: GaitSet) -> np.ndarray:
    """Boolean ``(clips,)``: the clips that no corpus of ``task`` may contain (module docstring)."""
    _require_meta(gs)
    meta = gs.meta
    if task in ("emotion4", "style15"):
        return (meta["dataset"] == "dataset-1") & np.isin(meta["content"], list(EMOTION_CONTENTS))
    if task == "walkstyle7":
        return (meta["dataset"] == "dataset-2") & np.isin(meta["content"], list(DATASET2_WALKING))
    raise ValueError(f"task must be one of {TASK_NAMES}, got {task!r}")


def task_clips(task: str, gs: GaitSet) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Clip indices into ``gs`` (ascending), their labels, and the label names of ``task``."""
    keep = task_family(task, gs)
    style = gs.meta["style"]
    if task == "emotion4":
        keep &= np.isin(style, list(EMOTION_ORDER))
        order, names = EMOTION_ORDER, tuple(EMOTION_STYLES[s] for s in EMOTION_ORDER)  # neutral, happy, sad, angry
    else:
        order = names = tuple(sorted(np.unique(style[keep]).tolist()))
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise ValueError(f"gait_task: the data set has no clip of task {task!r}")
    labels = np.array([order.index(s) for s in style[idx]], dtype=np.int64)
    return idx, labels, names


def corpus_clips(config: DataConfig, gs: GaitSet, task: str) -> np.ndarray:
    """Clip indices into ``gs`` of the pretraining corpus of ``task`` (``config.corpus``)."""
    keep = ~np.isin(gs.meta["group"], gs.meta["group"][task_family(task, gs)])
    if config.corpus == "dataset-2":
        keep &= (gs.meta["dataset"] == "dataset-2") & np.isin(gs.meta["content"], list(DATASET2_WALKING))
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise ValueError(f"gait_task: corpus {config.corpus!r} of task {task!r} has no clip")
    return idx


def preprocess_windows(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Centre and view-normalise windows ``(M, T, 16, 3)`` (the first_frame representation); padding stays zero."""
    out, _ = preprocess(x, lengths, length=x.shape[-3])
    return out


def gait_task(config: DataConfig | None = None, gs: GaitSet | None = None, task: str | None = None) -> GaitTask:
    """Build ``task`` (default: the first of ``config.tasks``) and its pretraining corpus from ``gs`` (default:
    the embedded set)."""
    config = config or DataConfig()
    gs = gs if gs is not None else load_embedded()
    task = task or config.tasks[0]
    idx, labels, names = task_clips(task, gs)
    clips = gs.subset(idx)

    corpus = gs.subset(corpus_clips(config, gs, task))
    w = cut_windows(corpus, config.window, config.corpus_stride())
    keep = np.arange(len(w))
    if config.max_pretrain_windows and len(w) > config.max_pretrain_windows:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(w), config.max_pretrain_windows, replace=False))
    pretrain_x = to_representation(preprocess_windows(w.x[keep], w.lengths[keep]), config.representation,
                                   gs.fps, w.lengths[keep])

    t = cut_windows(clips, config.window, config.task_stride(task))
    first = preprocess_windows(t.x, t.lengths)  # (n, T, 16, 3)
    x = first if config.representation == "first_frame" else to_representation(
        first, config.representation, gs.fps, t.lengths)
    return GaitTask(pretrain_x, x, labels[t.clip_index], t.clip_index.astype(np.int64), t.lengths.astype(np.int64),
                    names, np.asarray(clips.meta["clip_id"]), np.asarray(clips.meta["group"]), task,
                    config.representation, first, float(gs.fps), config.corpus)


@functools.lru_cache(maxsize=1)
def embedded_set():
    """The embedded Bandai set, loaded once per process (treat as read-only)."""
    return load_embedded()


def emotion_data(config: DataConfig | None = None, corpus: str | None = None) -> GaitTask:
    """``gait_task`` on the embedded set (loaded once per process); ``corpus`` (one of ``CORPORA``)
    overrides ``config.corpus``."""
    config = config or DataConfig()
    if corpus is not None:
        if corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {CORPORA}, got {corpus!r}")
        config = replace(config, corpus=corpus)
    return gait_task(config, embedded_set())
