"""Features of a frozen encoder: input transforms, the two-stream and stream encoders, batched extraction, k-NN.

Everything here takes explicit arguments (no config object) so that notebooks can reuse the pieces.
Inputs are skeleton sequences ``(N, T, V, C)`` or, after the encoder, features ``(N, F)``.
NaN / inf are rejected where they enter (``NonFiniteError`` naming the array and its first bad window):
inputs (``as_float_tensor``), encoder weights and features (``extract_features``), k-NN features.
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..coordinates import DEFAULT_PHI_MODE, spherical_coordinates
from ..device import module_device, resolve_device
from ..errors import CagelibError, NonFiniteError

INPUT_TRANSFORMS = ("cartesian", "spherical")


def make_input_transform(name: str, phi_mode: str = DEFAULT_PHI_MODE) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The input an encoder stream expects: ``"cartesian"`` (identity, returns None) or ``"spherical"``.

    A spherical-stream encoder (C3L) was pretrained on ``cagelib.coordinates.spherical_coordinates``
    of the joints, so it must be evaluated on the same transform of the same data.
    """
    if name == "cartesian":
        return None
    if name == "spherical":
        return lambda x: spherical_coordinates(x, phi_mode=phi_mode)
    raise ValueError(f"input_transform must be one of {INPUT_TRANSFORMS}, got {name!r}")


class TwoStreamEncoder(nn.Module):
    """Concatenate the features of a Cartesian and a Spherical stream encoder (C3L's two streams).

    ``forward(x: (N, T, V, 3) Cartesian) -> (N, F_c + F_s)``; the spherical stream sees
    ``spherical_coordinates(x, phi_mode)``. Pass it wherever an encoder is expected, with
    ``input_transform="cartesian"``.
    """

    def __init__(self, cartesian: nn.Module, spherical: nn.Module, phi_mode: str = DEFAULT_PHI_MODE):
        super().__init__()
        self.cartesian, self.spherical, self.phi_mode = cartesian, spherical, phi_mode
        if hasattr(cartesian, "out_dim") and hasattr(spherical, "out_dim"):
            self.out_dim = cartesian.out_dim + spherical.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = spherical_coordinates(x, phi_mode=self.phi_mode)  # (N, T, V, 3) r, theta, phi
        return torch.cat([self.cartesian(x), self.spherical(s)], dim=1)  # (N, F_c + F_s)


class StreamEncoder(nn.Module):
    """One stream of a pretraining method as an encoder of Cartesian windows: ``(N, T, V, 3) -> (N, F)``.

    The stream's encoder (``method.encoders()[stream]``) sees what it saw in pretraining: the method's
    ``stream_input(x, stream)`` (spherical coordinates, bone vectors, motion, ...) when the method has one,
    else the windows as they are. Pass it wherever an encoder is expected, with ``input_transform="cartesian"``.
    ``copy.deepcopy`` (finetuning) copies the encoder only; the input transform is a stateless function of
    the method's configuration and is shared.
    """

    def __init__(self, method: nn.Module, stream: str | None = None):
        super().__init__()
        streams = method.encoders()
        stream = next(iter(streams)) if stream is None else stream
        if stream not in streams:
            raise ValueError(f"StreamEncoder: the method has streams {list(streams)}, not {stream!r}")
        self.stream, self.encoder = stream, streams[stream]
        self._input = getattr(method, "stream_input", None)
        if hasattr(self.encoder, "out_dim"):
            self.out_dim = self.encoder.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._input(x, self.stream) if self._input is not None else x)  # (N, F)

    def __deepcopy__(self, memo: dict) -> "StreamEncoder":
        clone = self.__class__.__new__(self.__class__)
        nn.Module.__init__(clone)
        clone.stream, clone._input = self.stream, self._input
        clone.encoder = copy.deepcopy(self.encoder, memo)
        if hasattr(self, "out_dim"):
            clone.out_dim = self.out_dim
        return clone.train(self.training)


class ConcatenatedStreams(nn.Module):
    """Every stream of a pretraining method, each on its own input (:class:`StreamEncoder`), features
    concatenated: ``(N, T, V, 3) -> (N, F_1 + F_2 + ...)`` (a grid cell's "both" row: C3L's and CAGE's two
    streams read together)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.streams = nn.ModuleList(StreamEncoder(method, s) for s in method.encoders())
        self.stream = "+".join(s.stream for s in self.streams)
        if all(hasattr(s, "out_dim") for s in self.streams):
            self.out_dim = sum(s.out_dim for s in self.streams)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([s(x) for s in self.streams], dim=1)  # (N, sum of F)


def first_nonfinite_row(t: torch.Tensor) -> int | None:
    """Index of the first ``t[i]`` holding NaN or inf, None when all is finite."""
    if t.numel() == 0 or not t.is_floating_point():
        return None
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def check_finite_rows(t: torch.Tensor, name: str, problem: str = "contains NaN or inf",
                      hint: str | None = None) -> None:
    """``NonFiniteError(name, "window i", problem)`` for the first non-finite window ``t[i]``."""
    i = first_nonfinite_row(t)
    if i is not None:
        raise NonFiniteError(name, f"window {i}", problem, hint)


def check_finite_weights(module: nn.Module, name: str) -> None:
    """``NonFiniteError`` naming the first parameter or buffer of ``module`` holding NaN or inf."""
    for key, value in list(module.named_parameters()) + list(module.named_buffers()):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteError(name, f"weight {key!r}", "contains NaN or inf",
                                 "the weights are broken (a diverged or corrupted run?): use another checkpoint")


def as_float_tensor(x, name: str, ndim: int) -> torch.Tensor:
    """NumPy array or tensor -> finite float32 tensor of the given rank, or a ``CagelibError`` (a
    ``ValueError``) naming ``name`` (and the first window with NaN / inf)."""
    if not isinstance(x, torch.Tensor):
        a = np.asarray(x)
        if a.dtype.kind not in "biuf":
            raise CagelibError(name, None, f"must be an array of real numbers, got dtype {a.dtype}")
        x = torch.as_tensor(a)
    elif x.is_complex():
        raise CagelibError(name, None, f"must be real numbers, got dtype {x.dtype}")
    if x.dim() != ndim:
        layout = "(N, T, V, C)" if ndim == 4 else "(N, F)"
        raise CagelibError(name, None, f"must have shape {layout}, got shape {tuple(x.shape)}")
    t = x.float()
    check_finite_rows(t, name, hint="clean or interpolate the data when loading (nan_policy='interpolate')"
                      if ndim == 4 else None)
    return t


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
    check_finite_weights(encoder, "encoder")
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
        raise CagelibError("x", None, "is empty: no sequences to encode")
    features = torch.cat(out)  # (N, F)
    check_finite_rows(features, "encoder features", "NaN or inf from finite inputs and weights (overflow in "
                      "the encoder?)")
    return features


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


EMPTY_WHY = {"train_x": "no training windows", "test_x": "no test windows"}
EMPTY_HINT = ("this happens when a fold or split has no clips on that side (fewer clips than folds, or a label "
              "subset that kept none) or when every clip there is shorter than a window and was dropped "
              "(short='drop')")


def check_not_empty(x, name: str, source: str | None = None) -> None:
    """``CagelibError("<source>: <name>", ..., "is empty: no test windows", why)`` when ``x`` has no rows."""
    if len(x) == 0:
        item = name if source is None else f"{source}: {name}"
        raise CagelibError(None, item, f"is empty: {EMPTY_WHY.get(name, 'no windows')}",
                           EMPTY_HINT + "; check the folds (evaluate_folds names the fold and the task)")


def check_k(k, n_train: int, source: str) -> int:
    """The neighbours a k-NN uses: ``k`` must be a whole number >= 1 (``CagelibError`` naming ``source`` and
    ``k`` otherwise); a ``k`` above the training set's size ``n_train`` is clamped to ``n_train`` (every
    training sample votes; the documented rule of ``knn_predict`` and ``knn_eval``)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise CagelibError(source, "k", f"must be a whole number >= 1 (the neighbours that vote), got {k!r}")
    if k < 1:
        raise CagelibError(source, "k", f"must be >= 1 (the neighbours that vote), got {k}")
    return int(min(k, n_train))


def prepare_data(train_x, train_y, test_x, test_y, num_classes: int | None, label_names, x_ndim: int = 4):
    """Validate a train/test pair; infer ``num_classes`` (from ``label_names`` or the labels) and names.

    Returns ``(train_x, train_y, test_x, test_y, num_classes, label_names)`` as tensors and a tuple. An
    empty side is a ``CagelibError`` naming it (``check_not_empty``).
    """
    train_x, test_x = as_float_tensor(train_x, "train_x", x_ndim), as_float_tensor(test_x, "test_x", x_ndim)
    check_not_empty(train_x, "train_x")
    check_not_empty(test_x, "test_x")
    if num_classes is None:
        num_classes = len(label_names) if label_names is not None else int(max(
            torch.as_tensor(np.asarray(train_y)).max(), torch.as_tensor(np.asarray(test_y)).max())) + 1
    train_y = check_labels(train_y, "train_y", train_x.shape[0], num_classes)
    test_y = check_labels(test_y, "test_y", test_x.shape[0], num_classes)
    names = tuple(label_names) if label_names is not None else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise ValueError(f"label_names has {len(names)} names but num_classes={num_classes}")
    return train_x, train_y, test_x, test_y, num_classes, names


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float | None = 0.07,
    batch_size: int = 1024,
) -> torch.Tensor:
    """k-nearest-neighbour vote on cosine similarity ``(N_test,)``.

    ``temperature`` set: each of the k neighbours votes with weight ``exp(sim / temperature)``
    (the instance-discrimination k-NN monitor). ``None``: plain majority, ties broken by the summed
    similarity of the tied classes. ``k`` (no default: the caller's setting, e.g. ``EvalConfig.knn_k``)
    must be >= 1; above the training set's size it is clamped to it (``check_k``).
    """
    check_finite_rows(train_features, "train features")
    check_finite_rows(test_features, "test features")
    check_not_empty(train_features, "train features", "knn_predict")
    k = check_k(k, train_features.shape[0], "knn_predict")
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
