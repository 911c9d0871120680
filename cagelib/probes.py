"""Building blocks of the evaluation protocols: features, label subsets, a classifier loop, metrics.

``cagelib.evaluate`` composes these into the paper's protocols (linear, finetune, semi-supervised,
k-NN). Everything here takes explicit arguments (no config object) so that notebooks can reuse the
pieces. Randomness is explicit: shuffling uses a ``torch.Generator`` and subsets a NumPy seed.

Inputs are skeleton sequences ``(N, T, V, C)`` or, after the encoder, features ``(N, F)``.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

INPUT_TRANSFORMS = ("cartesian", "spherical")
OPTIMIZERS = ("sgd", "adam")

Prepare = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def make_input_transform(name: str, phi_mode: str = "unwrapped") -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The input an encoder stream expects: ``"cartesian"`` (identity, returns None) or ``"spherical"``.

    A spherical-stream encoder (C3L) was pretrained on ``cagelib.coordinates.spherical_coordinates``
    of the joints, so it must be evaluated on the same transform of the same data.
    """
    if name == "cartesian":
        return None
    if name == "spherical":
        from .coordinates import spherical_coordinates

        return lambda x: spherical_coordinates(x, phi_mode=phi_mode)
    raise ValueError(f"input_transform must be one of {INPUT_TRANSFORMS}, got {name!r}")


class TwoStreamEncoder(nn.Module):
    """Concatenate the features of a Cartesian and a Spherical stream encoder (C3L's two streams).

    ``forward(x: (N, T, V, 3) Cartesian) -> (N, F_c + F_s)``; the spherical stream sees
    ``spherical_coordinates(x, phi_mode)``. Pass it wherever an encoder is expected, with
    ``input_transform="cartesian"``.
    """

    def __init__(self, cartesian: nn.Module, spherical: nn.Module, phi_mode: str = "unwrapped"):
        super().__init__()
        self.cartesian, self.spherical, self.phi_mode = cartesian, spherical, phi_mode
        if hasattr(cartesian, "out_dim") and hasattr(spherical, "out_dim"):
            self.out_dim = cartesian.out_dim + spherical.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .coordinates import spherical_coordinates

        s = spherical_coordinates(x, phi_mode=self.phi_mode)  # (N, T, V, 3) r, theta, phi
        return torch.cat([self.cartesian(x), self.spherical(s)], dim=1)  # (N, F_c + F_s)


def as_float_tensor(x, name: str, ndim: int) -> torch.Tensor:
    """NumPy array or tensor -> float32 tensor of the given rank, or a ValueError naming ``name``."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.dim() != ndim:
        layout = "(N, T, V, C)" if ndim == 4 else "(N, F)"
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(t.shape)}")
    return t.float()


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    x,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Encoder features ``(N, F)`` (float32, CPU) of sequences ``x: (N, T, V, C)``, in eval mode, no grad.

    ``device`` defaults to the encoder's; ``transform`` (e.g. spherical coordinates) is applied to
    each batch on that device. The encoder's train/eval mode is restored afterwards.
    """
    x = as_float_tensor(x, "x", 4)
    device = module_device(encoder) if device is None else resolve_device(device)
    was_training = encoder.training
    encoder.eval()
    try:
        out = []
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(device)  # (B, T, V, C)
            if transform is not None:
                batch = transform(batch)
            out.append(encoder(batch).float().cpu())  # (B, F)
    finally:
        encoder.train(was_training)
    if not out:
        raise ValueError("x is empty: no sequences to encode")
    return torch.cat(out)  # (N, F)


def check_labels(y, name: str, n: int, num_classes: int | None = None) -> torch.Tensor:
    """Labels -> int64 CPU tensor ``(n,)``, or a ValueError naming ``name`` and the problem."""
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().cpu()
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match its inputs, got {tuple(y.shape)}")
    if n and y.min() < 0:
        raise ValueError(f"{name} contains negative labels (-1 = unlabelled): pass labelled samples only")
    if num_classes is not None and n and y.max() >= num_classes:
        raise ValueError(f"{name} contains label {int(y.max())} >= num_classes={num_classes}")
    return y


def prepare_data(train_x, train_y, test_x, test_y, num_classes: int | None, label_names, x_ndim: int = 4):
    """Validate a train/test pair; infer ``num_classes`` (from ``label_names`` or the labels) and names.

    Returns ``(train_x, train_y, test_x, test_y, num_classes, label_names)`` as tensors and a tuple.
    """
    train_x, test_x = as_float_tensor(train_x, "train_x", x_ndim), as_float_tensor(test_x, "test_x", x_ndim)
    if num_classes is None:
        num_classes = len(label_names) if label_names is not None else int(max(
            torch.as_tensor(np.asarray(train_y)).max(), torch.as_tensor(np.asarray(test_y)).max())) + 1
    train_y = check_labels(train_y, "train_y", train_x.shape[0], num_classes)
    test_y = check_labels(test_y, "test_y", test_x.shape[0], num_classes)
    names = tuple(label_names) if label_names is not None else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise ValueError(f"label_names has {len(names)} names but num_classes={num_classes}")
    return train_x, train_y, test_x, test_y, num_classes, names


def _strata(labels, groups) -> tuple[np.ndarray, list[np.ndarray]]:
    """Units to draw (samples, or groups such as clips) with their labels and member sample indices."""
    labels = np.asarray(labels)
    if groups is None:
        return labels, [np.array([i]) for i in range(len(labels))]
    groups = np.asarray(groups)
    if groups.shape != labels.shape:
        raise ValueError(f"groups must have one entry per sample: {groups.shape} vs labels {labels.shape}")
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == u) for u in range(inverse.max() + 1)] if len(labels) else []
    unit_labels = np.array([labels[m[0]] for m in members], dtype=labels.dtype)
    for m, lab in zip(members, unit_labels):
        if (labels[m] != lab).any():
            raise ValueError(f"group {groups[m[0]]!r} has more than one label; a group must have one label")
    return unit_labels, members


def _expand(members: list[np.ndarray], units) -> np.ndarray:
    return np.sort(np.concatenate([members[u] for u in units] or [np.zeros(0, np.int64)])).astype(np.int64)


def stratified_subset(labels, fraction: float, seed: int, groups=None) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified ``fraction`` of ``labels`` (semi-supervised protocol).

    Each class keeps ``round(fraction * n_class)`` samples, at least one, so every class is present.
    With ``groups`` (e.g. the clip of each window) whole groups are drawn instead of samples.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    unit_labels, members = _strata(labels, groups)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(unit_labels):
        units = np.flatnonzero(unit_labels == c)
        n = min(len(units), max(1, int(np.floor(fraction * len(units) + 0.5))))
        chosen.extend(rng.permutation(units)[:n])
    return _expand(members, chosen)


def stratified_holdout(labels, fraction: float, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation) with ``fraction`` of each class held out, stratified.

    Every class keeps at least one training sample; classes with a single sample stay in training.
    With ``groups`` whole groups go to one side (windows of a clip are near-duplicates).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    unit_labels, members = _strata(labels, groups)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(unit_labels):
        units = rng.permutation(np.flatnonzero(unit_labels == c))
        n_val = min(len(units) - 1, int(np.floor(fraction * len(units) + 0.5)))
        val.extend(units[:n_val])
        train.extend(units[n_val:])
    if not val:
        raise ValueError(f"val_fraction={fraction} leaves no validation sample for {len(unit_labels)} training units")
    return _expand(members, train), _expand(members, val)


def init_linear_head(in_features: int, num_classes: int, generator: torch.Generator) -> nn.Linear:
    """Linear classifier with weights ~ N(0, 0.01) and zero bias (MoCo's linear probe), seeded."""
    head = nn.Linear(in_features, num_classes)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    return head


def _minibatches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one sample is dropped (BatchNorm cannot train on it)."""
    perm = torch.randperm(n, generator=generator)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


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
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)
    loss_fn = nn.CrossEntropyLoss()
    history = {"train_loss": [], "val_accuracy": [] if val is not None else None, "selected_epoch": epochs}
    best_acc, best_state = -1.0, None
    x, y = x.to(device), y.to(device)  # once: batches are gathered on the device
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device: no sync per step
        for idx in _minibatches(x.shape[0], batch_size, generator):
            batch, target = x[idx], y[idx]
            if prepare is not None:
                batch = prepare(batch, generator)
            loss = loss_fn(model(batch), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(idx)
            count += len(idx)
        sched.step()
        epoch_loss = total.item() / max(count, 1)  # the epoch's one host sync
        if not math.isfinite(epoch_loss):
            raise FloatingPointError(
                f"training loss became {epoch_loss} in epoch {epoch} (lr={lr}); lower the learning rate"
                " or normalise the features")
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


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float | None = 0.07,
    batch_size: int = 1024,
) -> torch.Tensor:
    """k-nearest-neighbour vote on cosine similarity ``(N_test,)``.

    ``temperature`` set: each of the k neighbours votes with weight ``exp(sim / temperature)``
    (the instance-discrimination k-NN monitor). ``None``: plain majority, ties broken by the summed
    similarity of the tied classes.
    """
    k = min(k, train_features.shape[0])
    train = nn.functional.normalize(train_features.float(), dim=1)  # (N_train, F)
    test = nn.functional.normalize(test_features.float(), dim=1)  # (N_test, F)
    train_labels = train_labels.to(train.device)
    preds = []
    for start in range(0, test.shape[0], batch_size):
        sim = test[start : start + batch_size] @ train.T  # (B, N_train)
        top_sim, top_idx = sim.topk(k, dim=1)  # (B, k)
        one_hot = nn.functional.one_hot(train_labels[top_idx], num_classes).float()  # (B, k, K)
        if temperature is not None:
            scores = (one_hot * (top_sim / temperature).exp().unsqueeze(-1)).sum(dim=1)  # (B, K)
        else:
            counts = one_hot.sum(dim=1)
            # |summed similarity| <= k, so this term never overturns a difference of one vote.
            scores = counts + (one_hot * top_sim.unsqueeze(-1)).sum(dim=1) / (2 * k + 1)
        preds.append(scores.argmax(dim=1).cpu())
    return torch.cat(preds)
