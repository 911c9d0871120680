"""Fitting a classifier: a seeded linear head, shuffled mini-batches, the training loop, prediction.

Randomness is explicit: shuffling and the head's initialisation use a ``torch.Generator``.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import DivergedError, NonFiniteError
from .features import check_finite_rows, check_finite_weights

OPTIMIZERS = ("sgd", "adam")

Prepare = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def init_linear_head(in_features: int, num_classes: int, generator: torch.Generator) -> nn.Linear:
    """Linear classifier with weights ~ N(0, 0.01) and zero bias (MoCo's linear probe), seeded."""
    head = nn.Linear(in_features, num_classes)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    return head


class EncoderWithHead(nn.Module):
    """An encoder followed by a linear head (finetune protocols, the supervised reference)."""

    def __init__(self, encoder: nn.Module, head: nn.Linear):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (N, T, V, C) -> (N, F) -> (N, K)


def encoder_with_head(encoder: nn.Module, sample: torch.Tensor, num_classes: int,
                      generator: torch.Generator) -> EncoderWithHead:
    """``encoder`` plus a seeded linear head (``init_linear_head``) on the encoder's device, sized to its
    ``out_dim`` or, without one, to a no-grad eval-mode forward of ``sample`` (the mode is restored)."""
    if hasattr(encoder, "out_dim"):
        dim = int(encoder.out_dim)
    else:
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            dim = int(encoder(sample).shape[1])  # (B, F)
        encoder.train(was_training)
    return EncoderWithHead(encoder, init_linear_head(dim, num_classes, generator).to(sample.device))


def _minibatches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one sample is dropped (BatchNorm cannot train on it)."""
    perm = torch.randperm(n, generator=generator)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


class _AutogradUpdate:
    """One optimizer step of cross-entropy on ``model`` through autograd; returns the detached batch loss."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer):
        self.model, self.opt, self.loss_fn = model, opt, nn.CrossEntropyLoss()

    def __call__(self, batch: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(self.model(batch), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def _is_plain_linear(model: nn.Module) -> bool:
    return type(model) is nn.Linear and model.bias is not None and all(p.requires_grad for p in model.parameters())


class LinearHeadSGD:
    """``torch.optim.SGD`` (momentum, weight decay, no dampening or Nesterov) on the cross-entropy of a linear
    layer, with the gradient written out instead of autograd: for logits ``z = x W^T + b`` of a batch of ``B``,

        dL/dz = (softmax(z) - onehot(y)) / B,   dL/dW = (dL/dz)^T x,   dL/db = sum over the batch of dL/dz.

    The linear probe takes ~1,800 steps of a 64 x K layer per fit; autograd and the optimizer's bookkeeping
    were most of its time (measured: a 100-epoch probe of 900 x 64 features, 0.22 s against 0.49 s by autograd,
    1 thread). It calls autograd's own backward kernels (nll_loss, log_softmax), so each update equals the autograd
    path's to float32 rounding (``tests/test_classifier.py``; not bitwise on every CPU: the matrix products' order
    differs); the learning rate is read from ``opt`` (its scheduler still steps it), the momentum buffers are kept
    here.
    """

    def __init__(self, layer: nn.Linear, opt: torch.optim.Optimizer):
        group = opt.param_groups[0]
        if len(opt.param_groups) != 1 or group.get("nesterov") or group.get("dampening", 0) or group.get("maximize"):
            raise ValueError("LinearHeadSGD: one parameter group of plain SGD (momentum, weight decay) expected")
        self.layer, self.group = layer, group
        self.buffers: list[torch.Tensor] | None = None  # momentum buffers of (weight, bias), made at the first step
        self.one = torch.ones((), dtype=layer.weight.dtype, device=layer.weight.device)  # d loss / d loss

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight, bias = self.layer.weight, self.layer.bias  # (K, F), (K,)
        logits = torch.addmm(bias, batch, weight.t())  # (B, K), as nn.Linear
        log_p = torch.log_softmax(logits, dim=1)  # (B, K)
        loss, total_weight = torch.ops.aten.nll_loss_forward(log_p, target, None, 1, -100)  # mean reduction
        # autograd's own backward kernels of nll_loss and log_softmax, and addmm's gradients: the same rounding
        d_log_p = torch.ops.aten.nll_loss_backward(self.one, log_p, target, None, 1, -100, total_weight)  # (B, K)
        d_logits = torch.ops.aten._log_softmax_backward_data(d_log_p, log_p, 1, log_p.dtype)  # (B, K)
        grads = [(batch.t() @ d_logits).t(), d_logits.sum(dim=0)]  # (K, F) as the transpose of (F, K), (K,)
        lr, momentum, decay = self.group["lr"], self.group["momentum"], self.group["weight_decay"]
        params = (weight, bias)
        if decay:
            grads = [g.add_(p, alpha=decay) for g, p in zip(grads, params)]
        if momentum:
            if self.buffers is None:
                self.buffers = [g.clone() for g in grads]
            else:
                self.buffers = [b.mul_(momentum).add_(g) for b, g in zip(self.buffers, grads)]
            grads = self.buffers
        for p, g in zip(params, grads):
            p.add_(g, alpha=-lr)
        return loss


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Predicted class ``(N,)`` int64 on CPU, in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        preds = []
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(device)
            if transform is not None:
                batch = transform(batch)
            preds.append(model(batch).argmax(dim=1).cpu())  # (B,)
    finally:
        model.train(was_training)
    return torch.cat(preds)


def fit_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    milestones: Sequence[int],
    gamma: float,
    optimizer: str,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    prepare: Prepare | None = None,
    eval_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_batch_size: int = 256,
) -> dict:
    """Train ``model`` (all its parameters that require grad) with cross-entropy; step-decayed lr.

    ``prepare(batch, generator)`` maps a training batch on ``device`` to the model input (augmentation,
    coordinate transform); ``eval_transform`` does the same without randomness for validation.
    Without ``val`` the model is left at its last epoch. With ``val = (x_val, y_val)`` the weights of
    the epoch with the best validation accuracy (earliest on ties) are restored. Test data never
    enters this function: no model selection on the test set.

    Returns ``{"train_loss": [per epoch], "val_accuracy": [per epoch] | None, "selected_epoch": int}``
    (epochs counted from 1).

    Non-finite inputs or starting weights raise ``NonFiniteError`` before training (naming the window
    or weight); a non-finite batch made by ``prepare`` raises it at the end of that epoch; a loss that
    becomes NaN / inf from finite inputs and weights raises ``DivergedError`` (a ``FloatingPointError``).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    check_finite_rows(x, "training inputs")
    if val is not None:
        check_finite_rows(val[0], "validation inputs")
    check_finite_weights(model, "model before training")
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)
    if optimizer == "sgd" and prepare is None and _is_plain_linear(model):
        update = LinearHeadSGD(model, opt)  # a probe on features: the same SGD without autograd (class docstring)
    else:
        update = _AutogradUpdate(model, opt)
    history = {"train_loss": [], "val_accuracy": [] if val is not None else None, "selected_epoch": epochs}
    best_acc, best_state = -1.0, None
    x, y = x.to(device), y.to(device)  # once: batches are gathered on the device
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device: no sync per step
        bad_batch = torch.zeros((), dtype=torch.bool, device=device)  # a prepared batch held NaN / inf
        for idx in _minibatches(x.shape[0], batch_size, generator):
            batch, target = x[idx], y[idx]
            if prepare is not None:
                batch = prepare(batch, generator)
                bad_batch |= ~torch.isfinite(batch).all()
            try:
                loss = update(batch, target)
            except RuntimeError as error:  # e.g. Adam with a huge lr: "cannot be converted ... without overflow"
                if "overflow" not in str(error):
                    raise
                raise DivergedError("fit_classifier", None, f"the optimizer step overflowed in epoch {epoch} "
                                    f"(lr={lr}): the fit diverged", "lower the learning rate") from None
            total += loss.double() * len(idx)
            count += len(idx)
        with warnings.catch_warnings():  # LinearHeadSGD updates without opt.step(), which the scheduler checks for
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            sched.step()
        epoch_loss = total.item() / max(count, 1)  # the epoch's one host sync
        if not math.isfinite(epoch_loss):
            if bool(bad_batch):
                raise NonFiniteError("training batches", f"epoch {epoch}", "the prepared input (augmentation or "
                                     "coordinate transform) contains NaN or inf; the inputs themselves are finite")
            raise DivergedError("fit_classifier", None, f"the training loss became {epoch_loss} in epoch {epoch} "
                                f"(lr={lr}) from finite inputs and weights: the fit diverged",
                                "lower the learning rate or normalise the features")
        history["train_loss"].append(epoch_loss)
        if val is not None:
            correct = int((predict(model, val[0], eval_batch_size, device, eval_transform) == val[1]).sum())
            acc = 100.0 * correct / len(val[1])
            history["val_accuracy"].append(acc)
            if acc > best_acc:
                best_acc, best_state = acc, copy.deepcopy(model.state_dict())
                history["selected_epoch"] = epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
