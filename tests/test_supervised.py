"""The supervised reference: its documented recipe (``EvalConfig.paper("supervised")``), and a short run that
learns an easy task."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from cagelib.data.synthetic import synthetic_gaits
from cagelib.evaluate.protocols import EvalConfig, supervised_baseline
from cagelib.evaluate.supervised import supervised_reference
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


def test_documented_recipe():
    c = EvalConfig.paper("supervised")
    assert (c.protocol, c.optimizer, c.epochs, c.lr, c.milestones, c.weight_decay, c.batch_size, c.val_fraction) == (
        "supervised", "adam", 60, 1e-3, (), 1e-4, 32, 0.0)
    assert (c.input_transform, c.eval_batch_size, c.seed, c.device) == ("cartesian", 256, 0, "auto")  # the defaults


def test_a_few_epochs_learn_an_easy_task_and_are_seeded():
    x, y, groups = easy_task()
    config = EvalConfig.paper("supervised", epochs=8, device="cpu", batch_size=16)
    r = supervised_reference(make_encoder, x, y, x, y, config, test_groups=groups)
    assert r.protocol == "supervised" and len(r.train_loss) == 8 and r.selected_epoch == 8
    assert r.train_loss[-1] < 0.5 * r.train_loss[0]
    assert r.top1 >= 90.0 and r.clip_top1 >= 90.0  # training accuracy (test = train here)
    assert r.config == asdict(config)
    again = supervised_baseline(make_encoder, x, y, x, y, config, test_groups=groups)
    assert again.train_loss == r.train_loss and again.confusion == r.confusion


def test_supervised_baseline_defaults_to_the_supervised_recipe():
    x, y, _ = easy_task(12, 8)
    r = supervised_baseline(make_encoder, x, y, x, y)  # no config: EvalConfig.paper("supervised")
    assert len(r.train_loss) == 60 and r.config == asdict(EvalConfig.paper("supervised"))
    sgd = EvalConfig.paper("supervised", optimizer="sgd", lr=0.001, epochs=2, milestones=(1,), device="cpu")
    given = supervised_baseline(make_encoder, x, y, x, y, sgd)  # an EvalConfig is used as given
    assert len(given.train_loss) == 2 and given.config == asdict(sgd) and given.protocol == "supervised"
    other = supervised_baseline(make_encoder, x, y, x, y, EvalConfig.paper("finetune", epochs=1, device="cpu"))
    assert other.protocol == other.config["protocol"] == "supervised"  # trained from scratch, whatever the recipe


def test_supervised_baseline_augments_training_batches_only():
    x, y, _ = easy_task(12, 8)
    seen = []

    def augment(batch, generator):
        seen.append(tuple(batch.shape))
        return batch + 0.01 * torch.randn(batch.shape, generator=generator, device=batch.device)

    config = EvalConfig.paper("supervised", epochs=2, batch_size=4, device="cpu")
    supervised_baseline(make_encoder, x, y, x, y, config, augment=augment)
    assert seen == [(4, 8, 16, 3)] * 6  # 2 epochs x 3 batches of 4; prediction is not augmented


def test_a_validation_split_selects_the_epoch():
    x, y, groups = easy_task(24, 8)
    config = EvalConfig.paper("supervised", epochs=3, batch_size=8, device="cpu", val_fraction=0.25)
    r = supervised_reference(make_encoder, x, y, x, y, config, train_groups=groups)
    assert len(r.val_accuracy) == 3 and r.selected_epoch in (1, 2, 3) and r.n_train < 24
    with pytest.raises(TypeError, match="supervised_reference needs a factory"):
        supervised_reference(make_encoder(), x, y, x, y, config)
