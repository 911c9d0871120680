"""Balanced and clip-level accuracy on hand-made predictions; EvalResult fields, round trip and aggregation."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cagelib.evaluate.metrics import (EvalResult, aggregate_seeds, balanced_accuracy, clip_accuracy, clip_votes,
                                      majority_result, prediction_result)
from cagelib.evaluate.protocols import EvalConfig, evaluate_folds

# three clips: clip 0 (class 0) voted 0 by 2 of 3 windows; clip 1 (class 1) tied 1:1 between 1 and 2 -> 1
# (lowest index, right); clip 2 (class 2) tied 1:1 between 0 and 2 -> 0 (lowest index, wrong)
GROUPS = np.array([0, 0, 0, 1, 1, 2, 2])
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 0, 1, 2, 0, 2])


def test_clip_votes_break_ties_towards_the_lowest_class():
    clips, vote = clip_votes(Y_PRED, GROUPS)
    assert clips.tolist() == [0, 1, 2] and vote.tolist() == [0, 1, 0]
    assert clip_accuracy(Y_TRUE, Y_PRED, GROUPS) == pytest.approx(200 / 3)
    # group values need not be contiguous or sorted
    assert clip_accuracy(Y_TRUE, Y_PRED, np.array([9, 9, 9, 4, 4, 7, 7])) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="different labels"):
        clip_accuracy(np.array([0, 1]), np.array([0, 1]), np.array([5, 5]))


def test_balanced_accuracy_counts_present_classes_only():
    # window recalls: class 0 2/3, class 1 1/2, class 2 1/2
    assert balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx(100 * (2 / 3 + 1 / 2 + 1 / 2) / 3)
    # always predicting the majority class is 1 / (classes present), whatever the imbalance
    assert balanced_accuracy([0, 0, 0, 0, 1], [0, 0, 0, 0, 0]) == pytest.approx(50.0)
    assert balanced_accuracy([3, 3, 1], [3, 3, 1]) == pytest.approx(100.0)  # classes 0 and 2 absent


def test_prediction_result_and_majority_floor():
    r = prediction_result("linear", Y_TRUE, Y_PRED, ("a", "b", "c"), GROUPS, seed=3)
    assert r.top1 == pytest.approx(400 / 7) and r.clip_top1 == pytest.approx(200 / 3)
    assert r.balanced == pytest.approx(np.nanmean(r.per_class)) and r.seed == 3 and r.n_test == 7
    assert prediction_result("linear", Y_TRUE, Y_PRED, ("a", "b", "c")).clip_top1 is None
    m = majority_result([1, 1, 1, 0], Y_TRUE, ("a", "b", "c"), GROUPS)  # always class 1
    assert (m.top1, m.clip_top1, m.balanced) == pytest.approx((200 / 7, 100 / 3, 100 / 3))


def test_round_trip_and_aggregation_of_the_new_fields():
    a = prediction_result("linear", Y_TRUE, Y_PRED, ("a", "b", "c"), GROUPS, seed=0)
    b = prediction_result("linear", Y_TRUE, Y_TRUE, ("a", "b", "c"), GROUPS, seed=1)
    back = EvalResult.from_dict(json.loads(json.dumps(a.to_dict())))
    assert (back.balanced, back.clip_top1, back.top1) == (a.balanced, a.clip_top1, a.top1)
    old = {k: v for k, v in a.to_dict().items() if k not in ("balanced", "clip_top1")}  # a result saved before
    assert EvalResult.from_dict(old).clip_top1 is None
    agg = aggregate_seeds([a, b])
    assert agg["clip_top1_values"] == pytest.approx([200 / 3, 100.0])
    assert agg["clip_top1_mean"] == pytest.approx((200 / 3 + 100) / 2)
    assert agg["balanced_std"] == pytest.approx(np.std([a.balanced, 100.0], ddof=1))
    assert "clip_top1_mean" not in aggregate_seeds([a, EvalResult.from_dict(old)])


def test_evaluate_folds_reports_clip_accuracy():
    g = torch.Generator().manual_seed(0)
    groups = np.repeat(np.arange(12), 4)  # 12 clips of 4 windows, 3 classes
    y = groups % 3
    x = torch.randn(48, 2, 4, 3, generator=g) * 0.1 + torch.eye(3).repeat(1, 8)[torch.as_tensor(y)].reshape(48, 2, 4, 3)
    task = SimpleNamespace(x=x, y=torch.as_tensor(y), groups=groups, label_names=("a", "b", "c"))
    folds = [(np.flatnonzero(groups % 4 != k), np.flatnonzero(groups % 4 == k)) for k in range(2)]
    results = evaluate_folds(nn.Flatten(), task, folds, "knn", EvalConfig.paper("knn", device="cpu", knn_k=3))
    for r in results:
        assert r.clip_top1 == 100.0 and r.balanced == 100.0 and r.top1 == 100.0 and r.config["knn_k"] == 3


def test_results_keep_their_window_predictions_but_save_them_only_when_asked():
    r = prediction_result("linear", Y_TRUE, Y_PRED, ("a", "b", "c"), GROUPS)
    assert r.predictions.tolist() == Y_PRED.tolist()
    assert "predictions" not in r.to_dict()  # evaluation.json stays as small as before
    saved = json.loads(json.dumps(r.to_dict(predictions=True)))
    assert saved["predictions"] == Y_PRED.tolist()
    back = EvalResult.from_dict(saved)
    assert back.predictions.tolist() == Y_PRED.tolist() and back == r
    assert EvalResult.from_dict(r.to_dict()).predictions is None  # a file without them still loads
    m = majority_result([2, 2, 0], Y_TRUE, ("a", "b", "c"), GROUPS)  # the floor predicts too: always class 2
    assert m.predictions.tolist() == [2] * 7


def test_evaluate_folds_results_predict_their_folds_test_windows():
    g = torch.Generator().manual_seed(1)
    groups = np.repeat(np.arange(12), 3)
    y = groups % 3
    x = torch.randn(36, 2, 4, 3, generator=g) * 0.1 + torch.eye(3).repeat(1, 8)[torch.as_tensor(y)].reshape(36, 2, 4, 3)
    x[groups == 4] = x[groups == 5]  # clip 4 (class 1) looks like clip 5 (class 2)
    task = SimpleNamespace(x=x, y=torch.as_tensor(y), groups=groups, label_names=("a", "b", "c"))
    folds = [(np.flatnonzero(groups % 4 != k), np.flatnonzero(groups % 4 == k)) for k in range(4)]
    results = evaluate_folds(nn.Flatten(), task, folds, "knn", EvalConfig.paper("knn", device="cpu", knn_k=3))
    # fold 0 tests clips 0, 4, 8 (windows 0-2, 12-14, 24-26) and trains on clip 5: clip 4's windows, the 4th to
    # 6th of its test array, are predicted class 2, the others right
    assert results[0].predictions.tolist() == [0, 0, 0, 2, 2, 2, 2, 2, 2]
    for (_, test), r in zip(folds, results):  # every fold: the predictions are the ones its metrics count
        assert len(r.predictions) == len(test)
        assert r.top1 == pytest.approx(100 * np.mean(r.predictions == y[test]))
        assert r.balanced == pytest.approx(balanced_accuracy(y[test], r.predictions))
