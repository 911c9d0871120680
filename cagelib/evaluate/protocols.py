"""Evaluation protocols of the paper: linear, finetune, semi-supervised, supervised; k-NN; the fold loop.

One class, ``EvalConfig``, holds every protocol's recipe; ``EvalConfig.paper(protocol)`` gives the paper's
(its "Experiments" section) and the supervised reference's (``cagelib.evaluate.supervised``). Two faults of the public
baselines are avoided by construction:
- the reported accuracy is the test accuracy of the LAST epoch, or of the epoch chosen on a
  validation split carved from the training data (``val_fraction``); test data never reaches the
  training loop, so no best-over-epochs test accuracy can be reported;
- one number is a single seed: run several seeds and report ``aggregate_seeds`` (mean and sample std).

Every protocol runs with a fixed seed: shuffling, subsets and the classifier's initialisation use
explicit generators, and anything inside the encoder that draws from the global RNG (dropout) runs
under a forked, seeded global RNG that is restored afterwards. Same seed -> same result on CPU.
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..coordinates import DEFAULT_PHI_MODE
from ..data.splits import stratified_holdout, stratified_subset
from ..device import check_device_name, module_device, resolve_device, seeded_global_rng
from ..errors import CagelibError
from ..schedule import milestone_epochs
from .classifier import OPTIMIZERS, encoder_with_head, fit_classifier, init_linear_head, predict
from .features import (EMPTY_HINT, INPUT_TRANSFORMS, as_float_tensor, check_labels, check_not_empty, extract_features,
                       knn_predict, make_input_transform, prepare_data)
from .metrics import EvalResult, prediction_result

PROTOCOLS = ("linear", "finetune", "semi-supervised", "supervised", "knn")
# the protocols that probe a given encoder (supervised trains one from scratch): what evaluate_folds runs
FOLD_PROTOCOLS = tuple(p for p in PROTOCOLS if p != "supervised")
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class EvalConfig:
    """Settings of one evaluation run: the recipe of every protocol. The defaults are the paper's linear
    protocol (cheap: the linear layer trains on features extracted once); ``paper(protocol)`` gives the others.
    Validated on construction (and by ``dataclasses.replace``): a bad value is a ``ValueError`` naming the field."""

    protocol: str = "linear"  # recorded in results: linear | finetune | semi-supervised | supervised | knn
    epochs: int = 100  # training epochs (paper: linear 100, finetune 20; supervised reference 60)
    lr: float = 30.0  # initial learning rate (paper: linear 30, finetune 0.001; supervised reference 1e-3)
    milestones: tuple = (50, 70)  # epochs where lr *= gamma, or fractions of epochs (cagelib.schedule), resolved
    #                               to epochs on construction (paper: linear 50, 70; finetune 10; supervised none)
    gamma: float = 0.1  # learning-rate decay factor at each milestone (paper: 0.1)
    optimizer: str = "sgd"  # sgd | adam (docs/decisions.md, "Finetune / semi-supervised optimiser (paper: unstated)")
    sgd_momentum: float = 0.9  # SGD's momentum, unused by Adam (MoCo/AimCLR: 0.9)
    weight_decay: float = 0.0  # L2 penalty (linear: 0 as MoCo; finetune and supervised: 1e-4 as pretraining)
    batch_size: int = 32  # training batch size (paper: unstated; pretraining and the supervised reference use 32)
    eval_batch_size: int = 256  # batch size of feature extraction and prediction (no effect on results)
    seed: int = 0  # seeds shuffling, label subsets, validation split and the classifier init
    device: str = "auto"  # "auto" (CUDA if available, else CPU), "cpu", "cuda:0", ...
    input_transform: str = "cartesian"  # cartesian | spherical: the coordinates the encoder was trained on
    phi_mode: str = DEFAULT_PHI_MODE  # phi handling of the spherical transform (cagelib.coordinates)
    val_fraction: float = 0.0  # >0: carve a stratified validation split from training data and select
    #                            the epoch on it; 0 (paper-comparable): report the last epoch
    normalize_features: bool = False  # linear only: L2-normalise frozen features (paper: no)
    standardize_features: bool = False  # linear only: z-score each feature with the training side's mean and
    #                                     std (paper: no; a fairer probe of features with a large common offset)
    knn_k: int = 10  # k-NN only: the neighbours that vote (every results table of the workbench: 10)

    def __post_init__(self) -> None:
        def whole(value, low: int) -> bool:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low

        def number(value) -> bool:
            return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

        if self.protocol not in PROTOCOLS:
            raise ValueError(f"EvalConfig: protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if not whole(self.epochs, 0):
            raise ValueError(f"EvalConfig: epochs must be a whole number >= 0, got {self.epochs!r}")
        try:
            self.milestones = milestone_epochs(self.milestones, self.epochs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"EvalConfig: {error}") from None
        if not (number(self.lr) and self.lr > 0):
            raise ValueError(f"EvalConfig: lr must be a finite number > 0, got {self.lr!r}")
        if not whole(self.batch_size, 1):
            raise ValueError(f"EvalConfig: batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"EvalConfig: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (number(self.val_fraction) and 0 <= self.val_fraction < 1):
            raise ValueError(f"EvalConfig: val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not whole(self.knn_k, 1):
            raise ValueError(f"EvalConfig: knn_k must be a whole number >= 1 (the neighbours that vote), "
                             f"got {self.knn_k!r}")
        if self.input_transform not in INPUT_TRANSFORMS:
            raise ValueError(f"EvalConfig: input_transform must be one of {INPUT_TRANSFORMS}, "
                             f"got {self.input_transform!r}")
        try:
            check_device_name(self.device)
        except ValueError as err:
            raise ValueError(f"EvalConfig: {err}") from None

    @classmethod
    def paper(cls, protocol: str = "linear", **overrides) -> "EvalConfig":
        """The recipe of ``protocol``, ``overrides`` applied. Linear and k-NN: the defaults (SGD lr 30, 100 epochs,
        x0.1 at 50 and 70; k-NN trains nothing, k 10). Finetune and semi-supervised (paper): SGD lr 0.001,
        20 epochs, x0.1 at 10, weight decay 1e-4. Supervised (the reference trained from scratch, not the
        paper's: ``cagelib.evaluate.supervised``): Adam lr 1e-3, constant, weight decay 1e-4, 60 epochs, batch 32."""
        return cls(protocol=protocol, **{**_RECIPES.get(protocol, {}), **overrides})


_FINETUNE = dict(epochs=20, lr=0.001, milestones=(10,), weight_decay=1e-4)
# what each protocol changes from EvalConfig's defaults (linear and k-NN: nothing)
_RECIPES = {"finetune": _FINETUNE, "semi-supervised": _FINETUNE,
            "supervised": dict(optimizer="adam", lr=1e-3, weight_decay=1e-4, epochs=60, milestones=())}


def _split_validation(x, y, config: EvalConfig, groups=None):
    """(train_x, train_y, val or None) with a stratified validation split when val_fraction > 0;
    ``groups`` (e.g. clip ids of windows) keeps each group on one side."""
    if config.val_fraction <= 0:
        return x, y, None
    tr, va = stratified_holdout(y.numpy(), config.val_fraction, config.seed, groups)
    tr, va = torch.as_tensor(tr), torch.as_tensor(va)
    return x[tr], y[tr], (x[va], y[va])


def _result(config, preds, test_y, names, history, n_train, label_fraction=1.0, test_groups=None) -> EvalResult:
    """The ``EvalResult`` of test predictions; ``test_groups`` (clip of each test window) adds ``clip_top1``."""
    return prediction_result(
        config.protocol, test_y.numpy(), preds.numpy(), names, test_groups,
        train_loss=history["train_loss"], val_accuracy=history["val_accuracy"],
        selected_epoch=history["selected_epoch"], seed=config.seed, config=asdict(config),
        n_train=n_train, label_fraction=label_fraction,
    )


def _fit_kwargs(config: EvalConfig, generator: torch.Generator, device: torch.device) -> dict:
    return dict(epochs=config.epochs, lr=config.lr, milestones=config.milestones, gamma=config.gamma,
                optimizer=config.optimizer, momentum=config.sgd_momentum, weight_decay=config.weight_decay,
                batch_size=config.batch_size, generator=generator, device=device,
                eval_batch_size=config.eval_batch_size)


def _encoder_on(encoder: nn.Module, device: torch.device) -> nn.Module:
    """The encoder itself if already on ``device``, else a copy there (never moves the caller's module)."""
    return encoder if module_device(encoder) == device else copy.deepcopy(encoder).to(device)


def linear_eval(encoder: nn.Module, train_x, train_y, test_x, test_y, config: EvalConfig | None = None,
                num_classes: int | None = None, label_names: Sequence[str] | None = None,
                train_groups=None, test_groups=None) -> EvalResult:
    """Linear protocol: a linear layer on the frozen encoder's features (paper: 100 epochs, lr 30).

    Features are extracted once (eval mode, no grad) and the layer trains on them: the same as the
    frozen protocol without augmentation, and fast. The encoder is not modified. A randomly
    initialised encoder gives the "random init + same probe" baseline. ``train_groups`` (the clip of
    each training window) keeps a clip's windows on one side of the validation split; ``test_groups`` (the
    clip of each test window) adds the clip-level accuracy (``EvalResult.clip_top1``). With
    ``encoder=None``, ``train_x``/``test_x`` are features ``(N, F)`` extracted already (as ``knn_eval``).
    """
    config = config or EvalConfig.paper("linear")
    train_x, train_y, test_x, test_y, num_classes, names = prepare_data(
        train_x, train_y, test_x, test_y, num_classes, label_names, x_ndim=4 if encoder is not None else 2)
    device = resolve_device(config.device)
    transform = make_input_transform(config.input_transform, config.phi_mode)
    with seeded_global_rng(config.seed, device):
        if encoder is None:
            train_f, test_f = train_x.to(device), test_x.to(device)  # (N, F), (M, F)
        else:
            enc = _encoder_on(encoder, device)
            train_f = extract_features(enc, train_x, config.eval_batch_size, device, transform)  # (N, F)
            test_f = extract_features(enc, test_x, config.eval_batch_size, device, transform)
        if config.normalize_features:
            train_f, test_f = nn.functional.normalize(train_f, dim=1), nn.functional.normalize(test_f, dim=1)
        if config.standardize_features:
            mean, std = train_f.mean(dim=0), train_f.std(dim=0).clamp_min(1e-6)  # (F,) from the training side only
            train_f, test_f = (train_f - mean) / std, (test_f - mean) / std
        return _fit_on_features(train_f, train_y, test_f, test_y, config, num_classes, names, device, train_groups,
                                test_groups)


def _fit_on_features(train_f, train_y, test_f, test_y, config, num_classes, names, device, groups,
                     test_groups) -> EvalResult:
    generator = torch.Generator().manual_seed(config.seed)
    head = init_linear_head(train_f.shape[1], num_classes, generator).to(device)
    fx, fy, val = _split_validation(train_f, train_y, config, groups)
    history = fit_classifier(head, fx, fy, val=val, **_fit_kwargs(config, generator, device))
    preds = predict(head, test_f, config.eval_batch_size, device)
    return _result(config, preds, test_y, names, history, int(fx.shape[0]), test_groups=test_groups)


def finetune_eval(encoder: nn.Module, train_x, train_y, test_x, test_y, config: EvalConfig | None = None,
                  num_classes: int | None = None, label_names: Sequence[str] | None = None,
                  augment: Augment | None = None, train_groups=None, label_fraction: float = 1.0,
                  test_groups=None) -> EvalResult:
    """Finetune protocol: a copy of the encoder plus a linear layer, all trained (paper: 20 epochs,
    lr 0.001, x0.1 at 10). ``augment(x, generator)`` (Cartesian, before the coordinate transform) is
    applied to training batches when given (paper: unstated; default none). The encoder passed in
    is not modified; ``result.model`` is the trained classifier. ``train_groups``, ``test_groups``: as
    ``linear_eval``."""
    config = config or EvalConfig.paper("finetune")
    train_x, train_y, test_x, test_y, num_classes, names = prepare_data(
        train_x, train_y, test_x, test_y, num_classes, label_names)
    device = resolve_device(config.device)
    transform = make_input_transform(config.input_transform, config.phi_mode)
    generator = torch.Generator().manual_seed(config.seed)
    aug_generator = torch.Generator(device=device).manual_seed(config.seed)

    def prepare(batch: torch.Tensor, _: torch.Generator) -> torch.Tensor:
        if augment is not None:
            batch = augment(batch, aug_generator)
        return transform(batch) if transform is not None else batch

    with seeded_global_rng(config.seed, device):
        enc = copy.deepcopy(encoder).to(device)
        sample = train_x[:2].to(device)
        model = encoder_with_head(enc, transform(sample) if transform is not None else sample, num_classes, generator)
        fx, fy, val = _split_validation(train_x, train_y, config, train_groups)
        history = fit_classifier(model, fx, fy, prepare=prepare, eval_transform=transform, val=val,
                                 **_fit_kwargs(config, generator, device))
        preds = predict(model, test_x, config.eval_batch_size, device, transform)
    result = _result(config, preds, test_y, names, history, int(fx.shape[0]), label_fraction, test_groups)
    result.model = model
    return result


def semi_supervised_eval(encoder: nn.Module, train_x, train_y, test_x, test_y, fraction: float,
                         config: EvalConfig | None = None, num_classes: int | None = None,
                         label_names: Sequence[str] | None = None, augment: Augment | None = None,
                         train_groups=None, test_groups=None) -> EvalResult:
    """Semi-supervised protocol: finetune on a seeded, stratified ``fraction`` of the training labels
    (paper: 5 / 10 / 20 / 50 %), at least one sample per class; the test set is unchanged. With
    ``train_groups`` (clip of each window) the fraction is of clips, drawn whole."""
    config = config or EvalConfig.paper("semi-supervised")
    train_x = as_float_tensor(train_x, "train_x", 4)
    check_not_empty(train_x, "train_x")
    check_not_empty(test_y, "test_x")
    train_y = check_labels(train_y, "train_y", train_x.shape[0])
    keep = stratified_subset(train_y.numpy(), fraction, config.seed, train_groups)
    if num_classes is None and label_names is None:  # infer from all labels, not just the subset
        num_classes = int(max(train_y.max(), torch.as_tensor(np.asarray(test_y)).max())) + 1
    groups = None if train_groups is None else np.asarray(train_groups)[keep]
    keep = torch.as_tensor(keep)
    return finetune_eval(encoder, train_x[keep], train_y[keep], test_x, test_y, config, num_classes,
                         label_names, augment, groups, label_fraction=fraction, test_groups=test_groups)


def supervised_baseline(make_encoder: Callable[[], nn.Module], train_x, train_y, test_x, test_y,
                        config: EvalConfig | None = None, num_classes: int | None = None,
                        label_names: Sequence[str] | None = None, augment: Augment | None = None,
                        train_groups=None, test_groups=None) -> EvalResult:
    """Supervised protocol: ``make_encoder()`` (built under the config's seed, e.g. ``lambda:
    AGCN(AGCNConfig.small())``) plus a linear head, every weight trained from scratch on ``train_x (N, T, V, 3)``,
    ``train_y (N,)``; the last epoch (or the one chosen on ``val_fraction``) predicts ``test_x (M, T, V, 3)``.

    ``config`` None: the supervised reference's recipe, ``EvalConfig.paper("supervised")`` (Adam lr 1e-3,
    weight decay 1e-4, batch 32, 60 epochs; ``cagelib.evaluate.supervised``); an ``EvalConfig`` is used as given
    (e.g. ``optimizer="sgd", lr=0.001`` trains with finetune's optimiser). The result's protocol is
    "supervised". ``augment(x, generator)``, ``train_groups``, ``test_groups``: as ``finetune_eval`` (the
    reference has no augmentation). ``result.model`` is the trained classifier. Same seed -> same result on CPU.
    """
    if isinstance(make_encoder, nn.Module):
        raise TypeError("supervised_baseline needs a factory (e.g. lambda: AGCN(cfg)), not a module instance")
    config = replace(config or EvalConfig.paper("supervised"), protocol="supervised")
    train_x, train_y, test_x, test_y, num_classes, names = prepare_data(
        train_x, train_y, test_x, test_y, num_classes, label_names)
    device = resolve_device(config.device)
    transform = make_input_transform(config.input_transform, config.phi_mode)
    generator = torch.Generator().manual_seed(config.seed)  # head init, then shuffling
    if augment is None:
        prepare = None if transform is None else (lambda batch, _: transform(batch))
    else:
        aug_generator = torch.Generator(device=device).manual_seed(config.seed)

        def prepare(batch: torch.Tensor, _: torch.Generator) -> torch.Tensor:
            batch = augment(batch, aug_generator)
            return transform(batch) if transform is not None else batch

    fx, fy, val = _split_validation(train_x, train_y, config, train_groups)
    with seeded_global_rng(config.seed, device):  # the encoder's init, dropout
        encoder = make_encoder().to(device)
        sample = train_x[:2].to(device)
        model = encoder_with_head(encoder, transform(sample) if transform is not None else sample, num_classes,
                                  generator)
        history = fit_classifier(model, fx, fy, prepare=prepare, eval_transform=transform, val=val,
                                 **_fit_kwargs(config, generator, device))
        preds = predict(model, test_x, config.eval_batch_size, device, transform)  # (M,)
    result = _result(config, preds, test_y, names, history, int(fx.shape[0]), test_groups=test_groups)
    result.model = model
    return result


def knn_eval(encoder: nn.Module | None, train_x, train_y, test_x, test_y, temperature: float | None = 0.07,
             config: EvalConfig | None = None, num_classes: int | None = None,
             label_names: Sequence[str] | None = None, test_groups=None) -> EvalResult:
    """k-NN on cosine similarity of frozen features: a fast check, no training. With ``encoder=None``,
    ``train_x``/``test_x`` are features ``(N, F)``; see ``features.knn_predict``. ``config.knn_k`` neighbours
    vote; a ``knn_k`` larger than the training set is clamped to its size (every training window
    votes) and the result's config records ``k_used``."""
    config = replace(config or EvalConfig.paper("knn"), protocol="knn")
    train_x, train_y, test_x, test_y, num_classes, names = prepare_data(
        train_x, train_y, test_x, test_y, num_classes, label_names, x_ndim=4 if encoder is not None else 2)
    device = resolve_device(config.device)
    if encoder is not None:
        transform = make_input_transform(config.input_transform, config.phi_mode)
        with seeded_global_rng(config.seed, device):
            enc = _encoder_on(encoder, device)
            train_x = extract_features(enc, train_x, config.eval_batch_size, device, transform)
            test_x = extract_features(enc, test_x, config.eval_batch_size, device, transform)
    preds = knn_predict(train_x, train_y, test_x, num_classes, k=config.knn_k, temperature=temperature)
    history = {"train_loss": [], "val_accuracy": None, "selected_epoch": 0}
    result = _result(config, preds, test_y, names, history, int(train_x.shape[0]), test_groups=test_groups)
    result.config["temperature"] = temperature
    if config.knn_k > train_x.shape[0]:  # clamped (check_k): say how many voted
        result.config["k_used"] = int(train_x.shape[0])
    return result


def evaluate_folds(encoder: nn.Module, task, folds, protocol: str, config: EvalConfig, fraction: float = 1.0,
                   on_fold: Callable[[], None] | None = None) -> list[EvalResult]:
    """``protocol`` (one of ``FOLD_PROTOCOLS``) on ``encoder`` (None for linear and k-NN when ``task.x``
    holds features ``(n, F)`` extracted already) over ``folds`` ``[(train, test), ...]`` of
    ``task`` (``x``, ``y``, ``groups``: the clip of each window, ``label_names``; e.g.
    ``cagelib.data.tasks.GaitTask``): one ``EvalResult`` per fold, with the clip-level accuracy and, in memory
    (``EvalResult.predictions``, not serialised by default), the predicted class of each test window in the
    order of the fold's ``test`` array (``cagelib.lab.runner.window_predictions`` assembles them). ``fraction``:
    the semi-supervised label fraction (the k-NN's neighbours: ``config.knn_k``); ``on_fold()`` runs after every
    fold (progress bars)."""
    if protocol not in FOLD_PROTOCOLS:
        raise ValueError(f"evaluate_folds: protocol must be one of {FOLD_PROTOCOLS}, got {protocol!r}")
    results = []
    for i, (train, test) in enumerate(folds):
        for side, windows in (("training", train), ("test", test)):
            if len(windows) == 0:
                count = f" of {len(folds)}" if hasattr(folds, "__len__") else ""
                raise CagelibError(f"task {getattr(task, 'name', '?')!r}", f"fold {i}{count} (counted from 0)",
                                   f"the {side} windows are empty (of {len(task.y)} task windows, {len(train)} "
                                   f"train and {len(test)} test)", EMPTY_HINT)
        args = (task.x[train], task.y[train], task.x[test], task.y[test])
        kw = dict(config=config, label_names=task.label_names, test_groups=task.groups[test])
        if protocol == "linear":
            res = linear_eval(encoder, *args, train_groups=task.groups[train], **kw)
        elif protocol == "knn":
            res = knn_eval(encoder, *args, **kw)
        elif protocol == "finetune":
            res = finetune_eval(encoder, *args, train_groups=task.groups[train], **kw)
        else:
            res = semi_supervised_eval(encoder, *args, fraction, train_groups=task.groups[train], **kw)
        results.append(res)
        if on_fold is not None:
            on_fold()
    return results
