"""Metrics of a probe: confusion matrix, per-class, balanced and clip-level accuracy, the result record,
seed aggregation, and the majority-class floor.

A task's windows are imbalanced (long clips give many windows) and near-duplicates within a clip, so
besides window top-1 two numbers are reported: ``balanced_accuracy`` (mean per-class recall over the
classes present in the test fold: chance is 1 / K whatever the imbalance) and ``clip_accuracy`` (one
vote per clip: the majority of its windows' predictions, ties -> the lowest class index).
Every ``EvalResult`` made by ``prediction_result`` keeps its window predictions in memory
(``EvalResult.predictions``, in the order of the test windows) for a paired clip-level comparison
(``cagelib.evaluate.compare.bootstrap_difference``); they are saved only where asked
(``to_dict(predictions=True)``), so evaluation files stay small.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

MAJORITY = "majority class"  # name of the majority_result row: the floor set by the class imbalance


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class in %, ``nan`` for a class without test samples."""
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, 100.0 * np.diag(confusion) / support, np.nan)


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall, in %, over the classes present in ``y_true`` (absent classes do not count)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("balanced_accuracy: no test samples")
    return 100.0 * float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def clip_votes(y_pred, groups) -> tuple[np.ndarray, np.ndarray]:
    """``(clips, vote)``: the sorted group values and each one's majority prediction over its windows;
    a tie goes to the lowest class index."""
    y_pred, groups = np.asarray(y_pred, dtype=np.int64), np.asarray(groups)
    clips, inverse = np.unique(groups, return_inverse=True)
    k = int(y_pred.max()) + 1 if len(y_pred) else 1
    counts = np.zeros((len(clips), k), dtype=np.int64)  # (clips, K) windows predicted as each class
    np.add.at(counts, (inverse, y_pred), 1)
    return clips, counts.argmax(axis=1)  # argmax takes the first maximum: the lowest class index


def clip_accuracy(y_true, y_pred, groups) -> float:
    """Clip-level accuracy in %: the share of clips (``groups``) whose majority vote (``clip_votes``)
    is the clip's label. Every window of a clip must carry the clip's label."""
    y_true, groups = np.asarray(y_true, dtype=np.int64), np.asarray(groups)
    if y_true.shape != groups.shape or y_true.shape != np.shape(y_pred) or len(y_true) == 0:
        raise ValueError(f"clip_accuracy: need equally long non-empty y_true, y_pred, groups, got "
                         f"{y_true.shape}, {np.shape(y_pred)}, {groups.shape}")
    clips, vote = clip_votes(y_pred, groups)
    inverse = np.searchsorted(clips, groups)
    truth = np.zeros(len(clips), dtype=np.int64)
    truth[inverse] = y_true
    if (truth[inverse] != y_true).any():
        raise ValueError("clip_accuracy: a clip's windows carry different labels")
    return 100.0 * float(np.mean(vote == truth))


@dataclass
class EvalResult:
    """Outcome of one protocol run. ``top1`` is the test accuracy at ``selected_epoch``: the last epoch,
    or the epoch chosen on the validation split when ``config["val_fraction"] > 0``."""

    protocol: str
    top1: float  # test accuracy in %
    per_class: list[float]  # per-class test accuracy (recall) in %, nan without test samples
    confusion: list[list[int]]  # rows true class, columns predicted class
    label_names: tuple[str, ...]
    train_loss: list[float] = field(default_factory=list)  # mean training loss per epoch
    val_accuracy: list[float] | None = None  # validation accuracy per epoch (only with val_fraction)
    selected_epoch: int = 0  # epoch the reported model comes from (0: no training, e.g. k-NN)
    seed: int = 0
    config: dict = field(default_factory=dict)
    n_train: int = 0  # labelled training samples used
    n_test: int = 0
    label_fraction: float = 1.0  # fraction of training labels (semi-supervised)
    balanced: float | None = None  # balanced accuracy in % (balanced_accuracy)
    clip_top1: float | None = None  # clip-level accuracy in % (clip_accuracy; only with test_groups)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # trained classifier
    #                                                    (finetune protocols); not serialised
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)  # int64 (n_test,): the
    #     predicted class of each test window, in the order of the test windows (a fold's ``test`` array);
    #     serialised only by ``to_dict(predictions=True)``

    def to_dict(self, predictions: bool = False) -> dict:
        """JSON-safe dict (nan -> None, tuples -> lists), without ``model``; with ``predictions`` (and only then)
        also the window predictions as a list of ints (``"predictions"``, absent when there are none)."""
        def clean(v):
            if isinstance(v, float):
                return None if math.isnan(v) else v
            if isinstance(v, (list, tuple)):
                return [clean(u) for u in v]
            if isinstance(v, dict):
                return {k: clean(u) for k, u in v.items()}
            return v
        out = {f.name: clean(copy.deepcopy(getattr(self, f.name))) for f in fields(self)
               if f.name not in ("model", "predictions")}
        if predictions and self.predictions is not None:
            out["predictions"] = np.asarray(self.predictions, dtype=np.int64).tolist()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalResult":
        """Inverse of ``to_dict`` (with or without ``predictions``)."""
        d = dict(d)
        d["per_class"] = [math.nan if v is None else v for v in d["per_class"]]
        d["label_names"] = tuple(d["label_names"])
        if d.get("predictions") is not None:
            d["predictions"] = np.asarray(d["predictions"], dtype=np.int64)
        return cls(**d)


def aggregate_seeds(results: Sequence[EvalResult]) -> dict:
    """Mean and sample standard deviation (ddof = 1; None for one run) of top-1 and per-class accuracy,
    and of ``balanced`` and ``clip_top1`` when every result has them (``{name}_mean``, ``_std``, ``_values``)."""
    if not results:
        raise ValueError("aggregate_seeds needs at least one result")
    protocols = {r.protocol for r in results}
    names = {tuple(r.label_names) for r in results}
    if len(protocols) > 1 or len(names) > 1:
        raise ValueError(f"cannot aggregate different protocols {sorted(protocols)} or label sets {sorted(names)}")
    top1 = np.array([r.top1 for r in results], dtype=np.float64)
    per_class = np.array([r.per_class for r in results], dtype=np.float64)  # (n, K)
    n = len(results)
    with warnings.catch_warnings():  # a class without test samples in every run stays nan
        warnings.simplefilter("ignore", RuntimeWarning)
        pc_mean = np.nanmean(per_class, axis=0)
        pc_std = np.nanstd(per_class, axis=0, ddof=1) if n > 1 else None
    out = {
        "protocol": results[0].protocol, "n": n, "seeds": [r.seed for r in results],
        "top1_mean": float(top1.mean()), "top1_std": float(top1.std(ddof=1)) if n > 1 else None,
        "top1_values": top1.tolist(), "label_names": list(results[0].label_names),
        "per_class_mean": pc_mean.tolist(), "per_class_std": pc_std.tolist() if pc_std is not None else None,
    }
    for name in ("balanced", "clip_top1"):
        values = [getattr(r, name) for r in results]
        if all(v is not None for v in values):
            v = np.array(values, dtype=np.float64)
            out.update({f"{name}_mean": float(v.mean()), f"{name}_std": float(v.std(ddof=1)) if n > 1 else None,
                        f"{name}_values": v.tolist()})
    return out


def majority_result(train_y, test_y, label_names, test_groups=None):
    """``EvalResult`` of always predicting the most frequent training label (ties: the smallest label)."""
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    k = len(label_names)
    predicted = np.full(len(test_y), np.bincount(train_y, minlength=k).argmax())
    return prediction_result("majority", test_y, predicted, label_names, test_groups, n_train=len(train_y))


def prediction_result(protocol: str, test_y, predicted, label_names, test_groups=None, **fields) -> EvalResult:
    """``EvalResult`` of window predictions ``predicted (n,)`` against ``test_y (n,)``: top-1, per-class,
    confusion, balanced accuracy, and the clip-level accuracy when ``test_groups`` (clip of each window)
    is given. The result keeps ``predicted`` (``EvalResult.predictions``, not serialised by default).
    ``fields``: the other ``EvalResult`` fields (train_loss, seed, config, n_train, ...)."""
    test_y, predicted = np.asarray(test_y, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    cm = confusion_matrix(test_y, predicted, len(label_names))
    return EvalResult(protocol=protocol, top1=100.0 * float((predicted == test_y).mean()) if len(test_y) else 0.0,
                      per_class=per_class_accuracy(cm).tolist(), confusion=cm.tolist(),
                      label_names=tuple(label_names), n_test=len(test_y),
                      balanced=balanced_accuracy(test_y, predicted) if len(test_y) else None,
                      clip_top1=None if test_groups is None else clip_accuracy(test_y, predicted, test_groups),
                      predictions=predicted.copy(), **fields)
