"""The supervised reference: its documented recipe, and a short run that learns an easy task."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from cagelib.data.synthetic import synthetic_gaits
from cagelib.evaluate.protocols import EvalConfig, supervised_baseline
from cagelib.evaluate.supervised import SupervisedConfig, supervised_reference
from cagelib.methods.encoders import AGCN, AGCNConfig
from cagelib.skeleton import UP_AXIS


def make_encoder():
    return AGCN(AGCNConfig.small())


def easy_task(n: int = 48, frames: int = 16):
    """Synthetic walkers; class 1 is 1.6 times taller: separable from any single frame."""
    x = synthetic_gaits(n, frames, seed=0, min_fraction=1.0)  # (n, T, 16, 3), no padding
    y = np.arange(n) % 2
    x[y == 1, ..., UP_AXIS] *= 1.6
    groups = np.arange(n) // 2 * 2 + y  # clips of ~2 windows of one class
    return x, y, groups


def test_documented_defaults():
    c = SupervisedConfig()
    assert (c.epochs, c.lr, c.weight_decay, c.batch_size) == (60, 1e-3, 1e-4, 32)


def test_a_few_epochs_learn_an_easy_task_and_are_seeded():
    x, y, groups = easy_task()
    config = SupervisedConfig(epochs=8, device="cpu", batch_size=16)
    r = supervised_reference(make_encoder, x, y, x, y, config, test_groups=groups)
    assert r.protocol == "supervised" and len(r.train_loss) == 8 and r.selected_epoch == 8
    assert r.train_loss[-1] < 0.5 * r.train_loss[0]
    assert r.top1 >= 90.0 and r.clip_top1 >= 90.0  # training accuracy (test = train here)
    assert r.config == asdict(config)
    again = supervised_baseline(make_encoder, x, y, x, y, config, test_groups=groups)
    assert again.train_loss == r.train_loss and again.confusion == r.confusion


def test_supervised_baseline_defaults_to_the_supervised_recipe():
    x, y, _ = easy_task(12, 8)
    r = supervised_baseline(make_encoder, x, y, x, y)  # no config: SupervisedConfig()
    assert len(r.train_loss) == 60 and r.config["lr"] == 1e-3
    old = supervised_baseline(make_encoder, x, y, x, y, EvalConfig.paper("supervised", device="cpu", epochs=2))
    assert len(old.train_loss) == 2 and old.config["optimizer"] == "sgd"  # an EvalConfig keeps its own recipe
    with pytest.raises(ValueError, match="augmentation"):
        supervised_baseline(make_encoder, x, y, x, y, augment=lambda b, g: b)
