"""Metrics of a probe: confusion matrix, per-class accuracy, the result record, seed aggregation, and
the majority-class floor."""
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
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # trained classifier
    #                                                    (finetune protocols); not serialised

    def to_dict(self) -> dict:
        """JSON-safe dict (nan -> None, tuples -> lists), without ``model``."""
        def clean(v):
            if isinstance(v, float):
                return None if math.isnan(v) else v
            if isinstance(v, (list, tuple)):
                return [clean(u) for u in v]
            if isinstance(v, dict):
                return {k: clean(u) for k, u in v.items()}
            return v
        return {f.name: clean(copy.deepcopy(getattr(self, f.name))) for f in fields(self) if f.name != "model"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalResult":
        """Inverse of ``to_dict``."""
        d = dict(d)
        d["per_class"] = [math.nan if v is None else v for v in d["per_class"]]
        d["label_names"] = tuple(d["label_names"])
        return cls(**d)


def aggregate_seeds(results: Sequence[EvalResult]) -> dict:
    """Mean and sample standard deviation (ddof = 1; None for one run) of top-1 and per-class accuracy."""
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
    return {
        "protocol": results[0].protocol, "n": n, "seeds": [r.seed for r in results],
        "top1_mean": float(top1.mean()), "top1_std": float(top1.std(ddof=1)) if n > 1 else None,
        "top1_values": top1.tolist(), "label_names": list(results[0].label_names),
        "per_class_mean": pc_mean.tolist(), "per_class_std": pc_std.tolist() if pc_std is not None else None,
    }


def majority_result(train_y, test_y, label_names):
    """``EvalResult`` of always predicting the most frequent training label (ties: the smallest label)."""
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    k = len(label_names)
    predicted = np.full(len(test_y), np.bincount(train_y, minlength=k).argmax())
    cm = confusion_matrix(test_y, predicted, k)
    return EvalResult(protocol="majority", top1=100.0 * float((predicted == test_y).mean()),
                      per_class=per_class_accuracy(cm).tolist(), confusion=cm.tolist(),
                      label_names=tuple(label_names), n_train=len(train_y), n_test=len(test_y))
