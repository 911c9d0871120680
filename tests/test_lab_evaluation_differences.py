"""evaluation.json keeps every protocol's window predictions; ``fair_differences`` pairs each protocol with
its controls (random init, and hand-crafted where present) by a clip bootstrap, and says "-" for an
evaluation written before the predictions were kept."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from cagelib.atomic import json_text
from cagelib.evaluate.metrics import MAJORITY, balanced_accuracy, clip_accuracy, confusion_matrix
from cagelib.experiment import load
from cagelib.lab import evaluation as ex
from cagelib.lab import workbench as wb
from cagelib.lab.runner import HANDCRAFTED

CLASSES, CLIPS_PER_CLASS, WINDOWS_PER_CLIP = 4, 7, 5
WRONG_PER_CLASS = 2  # B misses every window of this many clips per class


def task_windows():
    """``(labels, clips)`` of 4 classes x 7 clips x 5 windows, clip c of class c // 7."""
    clips = np.repeat(np.arange(CLASSES * CLIPS_PER_CLASS), WINDOWS_PER_CLIP)
    return clips // CLIPS_PER_CLASS, clips


def entry(predictions) -> dict:
    """A protocol's record as ``evaluate_run`` writes it, reduced to what the differences read."""
    return {"protocol": "linear", "aggregate": {}, "predictions": [np.asarray(predictions).tolist()]}


def synthetic_evaluation(handcrafted: bool = False) -> dict:
    """Protocol "linear" right on every window; the random-init control wrong on every window of
    ``WRONG_PER_CLASS`` clips of each class; "finetune" identical to the control."""
    labels, clips = task_windows()
    wrong = (clips % CLIPS_PER_CLASS) < WRONG_PER_CLASS  # (n,) the windows of the missed clips
    control = np.where(wrong, (labels + 1) % CLASSES, labels)
    results = {"linear": entry(labels), "finetune": entry(control), ex.RANDOM_INIT: entry(control),
               MAJORITY: entry(np.zeros_like(labels))}
    if handcrafted:
        results[HANDCRAFTED] = entry(labels)
    return {"windows": {"labels": labels.tolist(), "clips": clips.tolist()}, "results": results}


def by_pair(rows) -> dict:
    return {(r["A"], r["B"]): r for r in rows}


def test_a_known_difference_is_found_with_an_interval_that_excludes_zero():
    rows = by_pair(ex.fair_differences(synthetic_evaluation()))
    assert set(rows) == {("linear", ex.RANDOM_INIT), ("finetune", ex.RANDOM_INIT)}  # no majority row, no control row
    missed = 100.0 * WRONG_PER_CLASS / CLIPS_PER_CLASS  # of the windows of every class, and of the clips
    for metric in ("balanced", "clip_top1"):
        c = rows[("linear", ex.RANDOM_INIT)][metric]
        assert c.difference == pytest.approx(missed) and c.mean_a == pytest.approx(100.0)
        assert 0 < c.low < c.difference < c.high and c.verdict == "A > B" and c.n == 1
        assert (c.a, c.b) == ("linear", ex.RANDOM_INIT)


def test_identical_predictions_differ_by_zero_and_are_not_separable():
    rows = by_pair(ex.fair_differences(synthetic_evaluation()))
    for metric in ("balanced", "clip_top1"):
        c = rows[("finetune", ex.RANDOM_INIT)][metric]
        assert c.difference == c.low == c.high == 0.0 and c.verdict == "not separable"


def test_the_hand_crafted_row_is_a_second_control_only_where_the_evaluation_has_it():
    rows = by_pair(ex.fair_differences(synthetic_evaluation(handcrafted=True)))
    assert set(rows) == {(a, b) for a in ("linear", "finetune") for b in (ex.RANDOM_INIT, HANDCRAFTED)}
    assert rows[("linear", HANDCRAFTED)]["balanced"].verdict == "not separable"  # both right everywhere
    assert rows[("finetune", HANDCRAFTED)]["balanced"].verdict == "B > A"
    table = ex.differences_table(list(rows.values()))
    assert table.count("\n") == 2 + 4 and "B > A" in table and HANDCRAFTED in table


def test_the_table_shows_interval_and_verdict_and_a_dash_for_a_legacy_evaluation():
    evaluation = synthetic_evaluation()
    table = ex.differences_table(ex.fair_differences(evaluation))
    header, _, first, second = table.strip().splitlines()
    assert "balanced A - B" in header and "clip A - B" in header
    assert first.startswith("| linear | linear (random init) | +28.6 [+") and first.endswith("A > B |")
    assert second.count("+0.0 [+0.0, +0.0] not separable") == 2
    legacy = copy.deepcopy(evaluation)
    del legacy["windows"]
    for res in legacy["results"].values():
        del res["predictions"]
    rows = ex.fair_differences(legacy)
    assert len(rows) == 2 and all(r[m] is None for r in rows for m in ("balanced", "clip_top1"))
    lines = ex.differences_table(rows).strip().splitlines()[2:]
    assert all(line.endswith("| - | - |") for line in lines)
    one_missing = copy.deepcopy(evaluation)  # the control alone without predictions: "-" as well
    del one_missing["results"][ex.RANDOM_INIT]["predictions"]
    assert all(r["balanced"] is None for r in ex.fair_differences(one_missing))


def test_json_text_round_trips_and_puts_each_vector_on_one_line():
    data = {"a": [1, 2, 3], "b": {"c": [[0, 1], [2, 3]], "d": None, "e": 1.5, "f": "x"}, "g": [], "h": {}, 3: True}
    text = json_text(data)
    assert json.loads(text) == json.loads(json.dumps(data))
    assert '"a": [1, 2, 3]' in text and "  [0, 1]," in text and len(text.splitlines()) == 15


def test_evaluate_run_keeps_the_window_predictions_of_every_protocol(tmp_path):
    """A tiny run, evaluated (linear, 2 folds): each protocol's window predictions reproduce its summed
    confusion matrix and its fold results; the saved file gives the differences to the random-init control."""
    tiny = ["pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.contrast.queue_size=32", "data.window=16",
            "data.max_pretrain_windows=32", "pretrain.device=cpu"]
    linear = ['protocols=["linear"]', "folds=2", "linear.epochs=5", "linear.device=cpu"]
    run = wb.pretrain_run(load("notebook", ["pretrain.contrast.method=geclr", *tiny]), outputs=tmp_path, progress=False)
    ex.evaluate_run(run.run_dir, load("notebook", ["pretrain.contrast.method=geclr", *tiny, *linear]), progress=False)
    saved = json.loads((run.run_dir / "evaluation.json").read_text())
    labels, clips = (np.asarray(saved["windows"][k]) for k in ("labels", "clips"))
    assert len(labels) == len(clips) == saved["task"]["task_windows"]
    assert len(np.unique(clips)) == saved["task"]["clips"]
    for name, res in saved["results"].items():
        (vector,) = res["predictions"]  # one repeat: every window in one test fold
        vector = np.asarray(vector)
        assert vector.shape == labels.shape and vector.min() >= 0, name
        assert confusion_matrix(labels, vector, 4).tolist() == res["confusion"], name
    linear_vector = np.asarray(saved["results"]["linear"]["predictions"][0])
    (row,) = ex.fair_differences(saved)
    assert (row["A"], row["B"]) == ("linear", ex.RANDOM_INIT)
    control = np.asarray(saved["results"][ex.RANDOM_INIT]["predictions"][0])
    assert row["balanced"].difference == pytest.approx(balanced_accuracy(labels, linear_vector)
                                                       - balanced_accuracy(labels, control))
    assert row["clip_top1"].difference == pytest.approx(clip_accuracy(labels, linear_vector, clips)
                                                        - clip_accuracy(labels, control, clips))
    assert row["balanced"].low <= row["balanced"].difference <= row["balanced"].high
