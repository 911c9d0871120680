"""Bandai loader (names, annotations, emotion labels) and the emotion-task subset."""
from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from cagelib.data import EMOTION_LABEL_NAMES, GaitSet, emotion_clips, load_bandai, load_embedded, read_bvh

# Real clips in tests/data (tests/data/README.md).
CLIPS = {
    "dataset-1": ["walk_normal_002", "byebye_angry_001", "dash_sad_001", "run_masculinity_001"],
    "dataset-2": ["walk-turn-right_normal_001", "walk-turn-left_exhausted_038"],
}


def test_load_bandai_names_labels_and_units(bandai_subset):
    root = bandai_subset(CLIPS)
    gs = load_bandai(root)
    assert len(gs) == 6 and gs.units == "m" and gs.fps == 30.0
    assert gs.label_names == EMOTION_LABEL_NAMES == ("neutral", "happy", "sad", "angry")
    rows = list(zip(gs.meta["dataset"], gs.meta["clip_id"], gs.meta["content"], gs.meta["style"], gs.labels))
    assert rows == [
        ("dataset-1", "byebye_angry_001", "byebye", "angry", 3),
        ("dataset-1", "dash_sad_001", "dash", "sad", 2),
        ("dataset-1", "run_masculinity_001", "run", "masculinity", -1),
        ("dataset-1", "walk_normal_002", "walk", "normal", 0),
        ("dataset-2", "walk-turn-left_exhausted_038", "walk-turn-left", "exhausted", -1),
        # dataset-2 styles are not emotions by default
        ("dataset-2", "walk-turn-right_normal_001", "walk-turn-right", "normal", -1),
    ]
    assert len(set(gs.meta["group"])) == 6 and gs.meta["group"][5] == "dataset-2/walk-turn-right_normal_001"
    x, _ = read_bvh(root / "dataset-1/data/dataset-1_dash_sad_001.bvh")
    np.testing.assert_array_equal(gs.positions[1], x)
    both = load_bandai(root, emotion_datasets=("dataset-1", "dataset-2"))
    assert both.labels[5] == 0


def test_content_filters(bandai_subset):
    root = bandai_subset(CLIPS)
    walks = load_bandai(root, contents=("walk", "walk-turn-left"))
    assert set(walks.meta["content"]) == {"walk", "walk-turn-left"} and len(walks) == 2
    mixed = load_bandai(root, contents={"dataset-1": ("run",), "dataset-2": None})
    assert list(mixed.meta["clip_id"]) == ["run_masculinity_001", "walk-turn-left_exhausted_038",
                                           "walk-turn-right_normal_001"]
    only_d2 = load_bandai(root, datasets=("dataset-2",))
    assert set(only_d2.meta["dataset"]) == {"dataset-2"}


def test_names_from_file_name_when_cfg_is_missing(bandai_subset):
    with_cfg = load_bandai(bandai_subset(CLIPS))
    without_cfg = load_bandai(bandai_subset(CLIPS, cfg=False))
    for key in ("clip_id", "content", "style", "dataset", "group"):
        np.testing.assert_array_equal(with_cfg.meta[key], without_cfg.meta[key])
    np.testing.assert_array_equal(with_cfg.labels, without_cfg.labels)


def test_mismatched_annotation_is_an_error(bandai_subset):
    root = bandai_subset({"dataset-1": ["walk_normal_002"]})
    annotation = root / "dataset-1/data/dataset-1_walk_normal_002.json"
    annotation.unlink()
    annotation.write_text(json.dumps({"content": 0, "style": 2}))  # style 2 = sad
    with pytest.raises(ValueError, match=r"dataset-1_walk_normal_002\.json: says content='walk', style='sad'"):
        load_bandai(root, datasets=("dataset-1",))
    annotation.write_text("{broken")
    with pytest.raises(ValueError, match=r"dataset-1_walk_normal_002\.json: bad annotation"):
        load_bandai(root, datasets=("dataset-1",))


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-1/data: no such folder"):
        load_bandai(tmp_path)


def test_emotion_task_has_seven_clips_per_class():
    task = emotion_clips(load_embedded())
    assert len(task) == 28
    assert set(task.meta["dataset"]) == {"dataset-1"}
    for label, name in enumerate(EMOTION_LABEL_NAMES):
        mine = task.labels == label
        assert mine.sum() == 7, name
        assert set(task.meta["style"][mine]) == {"normal" if name == "neutral" else name}
        contents = collections.Counter(task.meta["content"][mine])
        assert contents == {"walk": 2, "walk-back": 1, "walk-left": 1, "walk-right": 1, "run": 1, "dash": 1}


def test_emotion_clips_needs_bandai_metadata():
    gs = GaitSet([np.zeros((3, 16, 3))], np.array([0]), ("a",))
    with pytest.raises(ValueError, match=r"meta\['dataset'\]"):
        emotion_clips(gs)
