"""The supervised reference: the encoder plus a linear head, trained from scratch with labels.

This is the ceiling a frozen self-supervised encoder is measured against: the same architecture, every
weight trained on the task's labels. It has its own recipe (``SupervisedConfig``), not the finetune
protocol's (SGD, lr 0.001, 20 epochs: far too short to train an A-GCN from scratch, so it set no
ceiling): cross-entropy, Adam (lr 1e-3, weight decay 1e-4, constant lr), batch 32 (shuffled; a trailing
batch of one is dropped for BatchNorm), 60 epochs, no augmentation, and the LAST epoch's model predicts
the test set (no model selection on test data).

Seeded: the encoder is built by ``make_encoder()`` and the head initialised under a forked global RNG
seeded with ``seed`` (the caller's RNG state is restored); shuffling uses a ``torch.Generator`` seeded
with ``seed``. On CPU with one thread the result is bit-for-bit reproducible. ``evaluate/`` never
imports ``methods/``: the caller passes the factory (e.g. ``lambda: AGCN(AGCNConfig.small())``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..device import resolve_device
from .classifier import encoder_with_head, fit_classifier, predict
from .features import make_input_transform, prepare_data
from .metrics import EvalResult, prediction_result


@dataclass
class SupervisedConfig:
    """The supervised reference's recipe (module docstring)."""

    epochs: int = 60  # the last epoch is reported
    lr: float = 1e-3  # Adam, constant
    weight_decay: float = 1e-4
    batch_size: int = 32
    seed: int = 0  # seeds the encoder and head initialisation and the shuffling
    device: str = "auto"  # "auto" (CUDA if available, else CPU), "cpu", "cuda:0", ...
    input_transform: str = "cartesian"  # cartesian | spherical: the stream's input coordinates
    eval_batch_size: int = 256  # prediction batch size (no effect on results)


def supervised_reference(make_encoder: Callable[[], nn.Module], train_x, train_y, test_x, test_y,
                         config: SupervisedConfig | None = None, num_classes: int | None = None,
                         label_names: Sequence[str] | None = None, test_groups=None) -> EvalResult:
    """Train ``make_encoder()`` plus a linear head on ``(train_x (N, T, V, 3), train_y (N,))`` with
    ``config``'s recipe and evaluate the last epoch on the test set. ``test_groups`` (the clip of each
    test window) adds the clip-level accuracy. ``result.model`` is the trained classifier."""
    if isinstance(make_encoder, nn.Module):
        raise TypeError("supervised_reference needs a factory (e.g. lambda: AGCN(cfg)), not a module instance")
    config = config or SupervisedConfig()
    train_x, train_y, test_x, test_y, num_classes, names = prepare_data(
        train_x, train_y, test_x, test_y, num_classes, label_names)
    device = resolve_device(config.device)
    transform = make_input_transform(config.input_transform)
    generator = torch.Generator().manual_seed(config.seed)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        encoder = make_encoder().to(device)
        sample = train_x[:2].to(device)
        model = encoder_with_head(encoder, transform(sample) if transform is not None else sample, num_classes,
                                  generator)
        prepare = None if transform is None else (lambda batch, _: transform(batch))
        history = fit_classifier(model, train_x, train_y, epochs=config.epochs, lr=config.lr, milestones=(),
                                 gamma=1.0, optimizer="adam", momentum=0.0, weight_decay=config.weight_decay,
                                 batch_size=config.batch_size, generator=generator, device=device,
                                 prepare=prepare, eval_transform=transform, eval_batch_size=config.eval_batch_size)
        preds = predict(model, test_x, config.eval_batch_size, device, transform)  # (M,)
    result = prediction_result("supervised", test_y.numpy(), preds.numpy(), names, test_groups,
                               train_loss=history["train_loss"], selected_epoch=history["selected_epoch"],
                               seed=config.seed, config=asdict(config), n_train=int(train_x.shape[0]))
    result.model = model
    return result
