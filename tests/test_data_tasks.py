"""The three Bandai gait tasks, their corpora (never a task clip) and the input representations."""
from __future__ import annotations

import numpy as np
import pytest

from cagelib.data import cut_windows
from cagelib.data.bandai import emotion_clips
from cagelib.data.tasks import CORPORA, TASK_NAMES, DataConfig, GaitTask, embedded_set, gait_task, preprocess_windows
from cagelib.representation import DEFAULT_REPRESENTATION, REPRESENTATIONS, to_representation
from cagelib.skeleton import ROOT

COUNTS = {"emotion4": (28, 309, 4), "style15": (105, 1161, 15), "walkstyle7": (645, 7529, 7)}  # clips, windows, classes


@pytest.fixture(scope="module")
def tasks() -> dict[str, GaitTask]:
    gs = embedded_set()
    return {name: gait_task(DataConfig(tasks=(name,), max_pretrain_windows=0), gs) for name in TASK_NAMES}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_sizes_and_labels(tasks, name):
    task = tasks[name]
    clips, windows, classes = COUNTS[name]
    assert (len(task.clip_names), len(task.x), len(task.label_names)) == (clips, windows, classes)
    assert task.x.shape == (windows, 48, 16, 3) and task.x.dtype == np.float32
    assert task.representation == DEFAULT_REPRESENTATION and task.name == name
    assert sorted(np.unique(task.groups)) == list(range(clips))
    # one label per clip, every class present
    labels = task.clip_labels()
    assert (labels >= 0).all() and set(labels) == set(range(classes))
    assert (task.y == labels[task.groups]).all()
    s = task.summary()
    assert s["clips"] == clips and s["task_windows"] == windows
    assert sum(v["clips"] for v in s["per_class"].values()) == clips


def test_emotion4_has_seven_clips_per_emotion(tasks):
    task = tasks["emotion4"]
    assert task.label_names == ("neutral", "happy", "sad", "angry")
    assert all(v["clips"] == 7 for v in task.summary()["per_class"].values())


@pytest.mark.parametrize("name", TASK_NAMES)
def test_corpus_never_contains_a_task_clip(tasks, name):
    gs = embedded_set()
    config = DataConfig(tasks=(name,), max_pretrain_windows=0)
    task = tasks[name]
    family = {"emotion4": "style15", "style15": "style15", "walkstyle7": "walkstyle7"}[name]
    excluded = set(tasks[family].clip_groups)  # emotion4 and style15 share one corpus: neither's clips
    assert set(task.clip_groups) <= excluded
    # rebuild the corpus windows with their clip of origin: the corpus is cut from the other clips only
    other = np.flatnonzero(~np.isin(gs.meta["group"], list(excluded)))
    w = cut_windows(gs.subset(other), config.window, config.corpus_stride())
    assert len(task.pretrain_x) == len(w)
    assert not set(gs.meta["group"][other]) & excluded
    expected = to_representation(preprocess_windows(w.x, w.lengths), config.representation, gs.fps, w.lengths)
    np.testing.assert_array_equal(task.pretrain_x, expected)


def test_emotion4_and_style15_share_one_corpus(tasks):
    np.testing.assert_array_equal(tasks["emotion4"].pretrain_x, tasks["style15"].pretrain_x)


def test_dataset2_corpus_and_its_refusal_for_walkstyle7():
    gs = embedded_set()
    walking = gait_task(DataConfig(max_pretrain_windows=0, corpus="dataset-2"), gs)
    d2 = gs.lengths[gs.meta["dataset"] == "dataset-2"]
    assert len(walking.pretrain_x) == int(np.sum((d2 - 48) // 48 + 1))
    with pytest.raises(ValueError, match="corpus"):
        gait_task(DataConfig(tasks=("walkstyle7",), corpus="dataset-2"), gs)
    assert CORPORA == ("other", "dataset-2")
    with pytest.raises(ValueError, match="tasks"):
        DataConfig(tasks=("emotion7",))
    with pytest.raises(ValueError, match="representation"):
        DataConfig(representation="spherical")
    assert DataConfig(window=32).task_stride("emotion4") == 8 and DataConfig(window=32).corpus_stride() == 32
    assert DataConfig(task_strides={"walkstyle7": 48}).task_stride("walkstyle7") == 48


def test_folds_keep_clips_whole(tasks):
    task = tasks["style15"]
    folds = task.folds()
    assert len(folds) == 12
    for train, test in folds:
        assert not set(task.groups[train]) & set(task.groups[test])


# Today's (pre-representation) emotion task windows, frozen: shape and checksums of gait_task().x.
FROZEN_SUM, FROZEN_ABS, FROZEN_SQ = -133903.384215147, 281121.64068462583, 295711.4865249145


def test_emotion4_first_frame_equals_the_former_emotion_task():
    gs = embedded_set()
    task = gait_task(DataConfig(representation="first_frame", max_pretrain_windows=64), gs)
    x = task.x.astype(np.float64)
    assert task.x.shape == (309, 48, 16, 3)
    np.testing.assert_allclose([x.sum(), np.abs(x).sum(), (x ** 2).sum()], [FROZEN_SUM, FROZEN_ABS, FROZEN_SQ],
                               rtol=1e-9)
    assert np.bincount(task.y).tolist() == [33, 68, 141, 67] and task.y[:5].tolist() == [3, 3, 3, 1, 1]
    # the former construction, step by step: emotion-labelled clips, windows, preprocessing
    clips = emotion_clips(gs)
    w = cut_windows(clips, 48, 12)
    np.testing.assert_array_equal(task.x, preprocess_windows(w.x, w.lengths))
    np.testing.assert_array_equal(task.y, w.labels)
    np.testing.assert_array_equal(task.groups, w.clip_index)
    assert task.x_first_frame is task.x


def test_representations_of_the_task_windows(tasks):
    task = tasks["emotion4"]
    first, lengths = task.x_first_frame, task.lengths
    assert (lengths < 48).sum() == 4  # four short neutral clips give padded windows
    root = first[:, :, ROOT:ROOT + 1]  # (n, T, 1, 3)
    rel = to_representation(first, "root_relative", 30.0, lengths)
    np.testing.assert_array_equal(rel, task.x)
    assert not rel[:, :, ROOT].any()
    np.testing.assert_allclose(rel, first - root, atol=1e-6)
    vel = to_representation(first, "root_velocity", 30.0, lengths)
    np.testing.assert_array_equal(vel[:, :, ROOT + 1:], rel[:, :, ROOT + 1:])
    real = np.arange(48)[None, 1:] < lengths[:, None]  # (n, T - 1): frames 1.. that are real
    diff = (root[:, 1:, 0] - root[:, :-1, 0]) * 30.0  # (n, T - 1, 3) m/s
    np.testing.assert_allclose(vel[:, 1:, ROOT], diff * real[..., None], atol=1e-4)
    assert not vel[:, 0, ROOT].any()
    for name in REPRESENTATIONS:
        out = to_representation(first, name, 30.0, lengths)
        padding = np.arange(48)[None, :] >= lengths[:, None]  # (n, T)
        assert out.shape == first.shape and not out[padding].any()


def test_root_velocity_of_a_constant_velocity_walk():
    v = np.array([0.3, 0.0, -1.2], dtype=np.float32)  # m/s
    pose = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    x = np.zeros((1, 48, 16, 3), np.float32)
    x[0, :30] = pose + (np.arange(30, dtype=np.float32)[:, None, None] / 30.0) * v
    x[0, :30] -= x[0, 0, ROOT]  # first-frame centred
    out = to_representation(x, "root_velocity", 30.0, lengths=[30])
    np.testing.assert_allclose(out[0, 1:30, ROOT], np.broadcast_to(v, (29, 3)), atol=1e-4)
    assert not out[0, 0, ROOT].any() and not out[0, 30:].any()
    np.testing.assert_array_equal(to_representation(x, "root_velocity", 30.0), out)  # padding found without lengths
    with pytest.raises(ValueError, match="representation"):
        to_representation(x, "polar", 30.0)
