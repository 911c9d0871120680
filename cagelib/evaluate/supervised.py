"""The supervised reference: the encoder plus a linear head, trained from scratch with labels.

This is the ceiling a frozen self-supervised encoder is measured against: the same architecture, every
weight trained on the task's labels. Its recipe is ``EvalConfig.paper("supervised")``, not the finetune
protocol's (SGD, lr 0.001, 20 epochs: far too short to train an A-GCN from scratch, so it set no
ceiling): cross-entropy, Adam (lr 1e-3, weight decay 1e-4, constant lr), batch 32 (shuffled; a trailing
batch of one is dropped for BatchNorm), 60 epochs, no augmentation, and the LAST epoch's model predicts
the test set (no model selection on test data).

Seeded: the encoder is built by ``make_encoder()`` and the head initialised under a forked global RNG
seeded with ``seed`` (the caller's RNG state is restored); shuffling uses a ``torch.Generator`` seeded
with ``seed``. On CPU with one thread the result is bit-for-bit reproducible. ``evaluate/`` never
imports ``methods/``: the caller passes the factory (e.g. ``lambda: AGCN(AGCNConfig.small())``). The
training itself is the supervised protocol, ``protocols.supervised_baseline``.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from .metrics import EvalResult
from .protocols import EvalConfig, supervised_baseline


def supervised_reference(make_encoder: Callable[[], nn.Module], train_x, train_y, test_x, test_y,
                         config: EvalConfig | None = None, num_classes: int | None = None,
                         label_names: Sequence[str] | None = None, test_groups=None,
                         train_groups=None) -> EvalResult:
    """Train ``make_encoder()`` plus a linear head on ``(train_x (N, T, V, 3), train_y (N,))`` with
    ``config``'s recipe (None: ``EvalConfig.paper("supervised")``, module docstring) and evaluate the last
    epoch on ``test_x (M, T, V, 3)``. ``test_groups`` (the clip of each test window) adds the clip-level
    accuracy; ``train_groups`` keeps a clip on one side of a ``val_fraction`` split. ``result.model`` is the
    trained classifier."""
    if isinstance(make_encoder, nn.Module):
        raise TypeError("supervised_reference needs a factory (e.g. lambda: AGCN(cfg)), not a module instance")
    return supervised_baseline(make_encoder, train_x, train_y, test_x, test_y, config, num_classes, label_names,
                               train_groups=train_groups, test_groups=test_groups)
