"""Training health of a self-supervised run, measured every epoch (``metrics.jsonl``, notebook 03).

The loss and the positive-pair accuracy of the training step alone mislead: a run whose features
nearly collapse can still rank each positive first among the negatives by a tiny margin (batch norm in
training mode amplifies it), with a loss near its chance value. So every epoch the loop also asks, with
the model in eval mode and on a fixed set of corpus windows with fixed augmented views (the same every
epoch, drawn from the monitor's own generator, so training is unchanged):

- ``retrieval``: the fraction of windows whose second view is the nearest (cosine) of all second views
  to its first view. Chance is ``1 / windows``. Instance discrimination is learned when it rises.
- ``alignment`` (Wang and Isola 2020, Eq. 4 with alpha = 2): ``E ||z_a - z_b||^2`` over the two views of
  a window, in [0, 4]; lower = the views agree.
- ``uniformity`` (Wang and Isola 2020, Eq. 5 with t = 2): ``log E exp(-2 ||z_i - z_j||^2)`` over distinct
  windows; 0 at collapse (every feature equal), more negative = spread over the sphere.
- ``spread``: mean per-dimension standard deviation of the L2-normalised features times ``sqrt(D)``:
  about 1 for features spread over the sphere, 0 at collapse.
- ``knn``: balanced accuracy of a cosine k-NN on encoder features (standardised with the reference
  half's statistics) of a labelled task's TRAINING windows, split by clip into a reference half and a
  query half. The test side of the task is never used, so no epoch is chosen on test data.

- ``reconstruction`` (masked-prediction methods, those with ``reconstruction_error(x, generator)``: MAMP):
  the method's masked-motion loss on the first views with masks drawn from a generator seeded by
  ``config.seed`` (the same masks every epoch); lower = better prediction.

``z`` is the method's embedding used by its loss (``method.embed(x, stream)``; for a method without one,
the L2-normalised encoder features).

``HealthMonitor(corpus, views, config, labelled)`` holds the fixed windows and views; calling it on a
model returns ``{<metric>_<stream>: value}`` (``knn_<stream>`` only with ``labelled``). It draws nothing
from the training generator and restores the model's train/eval mode, so a run's losses are the same
with health on or off (``tests/test_health.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HEALTH_METRICS = ("retrieval", "alignment", "uniformity", "spread", "knn", "reconstruction")


@dataclass
class HealthConfig:
    windows: int = 256  # fixed corpus windows for retrieval, alignment, uniformity (retrieval chance = 1 / windows)
    knn_k: int = 10  # neighbours of the k-NN monitor
    seed: int = 0  # seeds the choice of windows, their two views and the k-NN halves


def alignment(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """``E ||za_i - zb_i||^2`` for L2-normalised ``(N, D)`` pairs (Wang and Isola 2020)."""
    return (za - zb).pow(2).sum(dim=1).mean()


def uniformity(z: torch.Tensor) -> torch.Tensor:
    """``log E_{i != j} exp(-2 ||z_i - z_j||^2)`` for L2-normalised ``(N, D)`` (Wang and Isola 2020)."""
    n = z.shape[0]
    squared = torch.cdist(z, z).pow(2)  # (N, N)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
    return torch.logsumexp(-2 * squared[off_diagonal], dim=0) - math.log(n * (n - 1))


def retrieval(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """Fraction of rows ``i`` whose nearest ``zb`` (cosine) is ``zb_i``: ``(N, D), (N, D) -> ()``."""
    nearest = (za @ zb.T).argmax(dim=1)  # (N,)
    return (nearest == torch.arange(za.shape[0], device=za.device)).float().mean()


def spread(z: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of L2-normalised ``(N, D)`` features times sqrt(D): ~1 spread, 0 collapsed."""
    return z.std(dim=0).mean() * math.sqrt(z.shape[1])


def knn_balanced_accuracy(reference: torch.Tensor, reference_y: torch.Tensor, query: torch.Tensor,
                          query_y: torch.Tensor, k: int) -> float:
    """Balanced accuracy of a cosine k-NN (majority vote, ties to the lower label) classifying ``query``
    ``(Q, F)`` by ``reference`` ``(R, F)``; features standardised with the reference's mean and std."""
    mean, std = reference.mean(dim=0), reference.std(dim=0).clamp_min(1e-6)  # (F,) each
    ref = F.normalize((reference - mean) / std, dim=1)  # (R, F)
    qry = F.normalize((query - mean) / std, dim=1)  # (Q, F)
    k = max(1, min(k, ref.shape[0]))
    neighbours = (qry @ ref.T).topk(k, dim=1).indices  # (Q, k)
    classes = int(max(reference_y.max(), query_y.max())) + 1
    votes = F.one_hot(reference_y[neighbours], classes).sum(dim=1)  # (Q, classes)
    predicted = votes.argmax(dim=1)  # (Q,) first maximum: ties to the lower label
    recalls = [(predicted[query_y == c] == c).float().mean() for c in query_y.unique()]
    return float(torch.stack(recalls).mean())


def clip_halves(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a reference half and a query half of labelled windows, split by clip (``groups``), seeded."""
    clips = np.random.default_rng(seed).permutation(np.unique(groups))
    in_reference = np.isin(groups, clips[: (len(clips) + 1) // 2])
    return np.flatnonzero(in_reference), np.flatnonzero(~in_reference)


class HealthMonitor:
    """The health metrics of a model on fixed windows and views (see the module docstring).

    ``corpus`` ``(M, T, V, 3)``: the pretraining windows (in the run's representation); ``config.windows``
    of them are chosen once (seeded by ``config.seed``), and ``views(x, generator) -> x`` (the method's
    view transform T) draws their two views once from the monitor's own generator. ``labelled`` =
    ``(x, y, groups)``: the TRAINING windows of a labelled task's fold (never its test side), their labels
    and clips, for ``knn_<stream>``. Everything is kept on ``device``.
    """

    def __init__(self, corpus, views: Callable, config: HealthConfig | None = None, labelled=None,
                 device: torch.device | str = "cpu"):
        self.config = config or HealthConfig()
        corpus = torch.as_tensor(np.asarray(corpus) if not torch.is_tensor(corpus) else corpus, dtype=torch.float32)
        rng = np.random.default_rng(self.config.seed)
        count = min(self.config.windows, corpus.shape[0])
        if count < 2:
            raise ValueError(f"HealthMonitor: need at least 2 corpus windows, got {corpus.shape[0]}")
        chosen = np.sort(rng.choice(corpus.shape[0], count, replace=False))
        windows = corpus[torch.as_tensor(chosen, device=corpus.device)].cpu()  # (W, T, V, 3)
        generator = torch.Generator().manual_seed(self.config.seed)  # the monitor's own, on the CPU
        self.views = (views(windows, generator).to(device), views(windows, generator).to(device))  # 2 x (W, T, V, 3)
        self.labelled = None
        if labelled is not None:
            x, y, groups = labelled
            reference, query = clip_halves(np.asarray(groups), self.config.seed)
            if len(reference) == 0 or len(query) == 0:
                raise ValueError("HealthMonitor: the labelled windows need at least 2 clips")
            x = torch.as_tensor(np.asarray(x), dtype=torch.float32).to(device)  # (n, T, V, 3)
            y = torch.as_tensor(np.asarray(y), dtype=torch.long).to(device)  # (n,)
            self.labelled = (x[reference], y[reference], x[query], y[query])

    @property
    def chance(self) -> float:
        """Retrieval of features that carry no information: ``1 / windows``."""
        return 1.0 / self.views[0].shape[0]

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        """``{retrieval_<s>, alignment_<s>, uniformity_<s>, spread_<s>[, knn_<s>]}`` for every stream ``s``
        of ``model.encoders()``, computed in eval mode (the model's mode is restored)."""
        was_training = model.training
        model.eval()
        try:
            out = {}
            for stream, encoder in model.encoders().items():
                za, zb = (self._embed(model, encoder, v, stream) for v in self.views)  # (W, D) each
                out.update({f"retrieval_{stream}": retrieval(za, zb), f"alignment_{stream}": alignment(za, zb),
                            f"uniformity_{stream}": uniformity(torch.cat([za, zb])),
                            f"spread_{stream}": spread(torch.cat([za, zb]))})
                if self.labelled is not None:
                    ref_x, ref_y, query_x, query_y = self.labelled
                    out[f"knn_{stream}"] = knn_balanced_accuracy(
                        self._features(model, encoder, ref_x, stream), ref_y,
                        self._features(model, encoder, query_x, stream), query_y, self.config.knn_k)
            if hasattr(model, "reconstruction_error"):  # masked prediction (MAMP): its loss on fixed masks
                generator = torch.Generator(device=self.views[0].device).manual_seed(self.config.seed)
                out["reconstruction"] = model.reconstruction_error(self.views[0], generator)
            return {k: float(v) for k, v in out.items()}
        finally:
            model.train(was_training)

    @staticmethod
    def _embed(model: nn.Module, encoder: nn.Module, x: torch.Tensor, stream: str) -> torch.Tensor:
        if hasattr(model, "embed"):
            return model.embed(x, stream).float()  # (W, D), L2-normalised
        return F.normalize(HealthMonitor._features(model, encoder, x, stream), dim=1)

    @staticmethod
    def _features(model: nn.Module, encoder: nn.Module, x: torch.Tensor, stream: str, batch: int = 256) -> torch.Tensor:
        """Encoder features ``(n, F)`` of a Cartesian batch, in the stream's coordinates, in chunks."""
        to_stream = getattr(model, "stream_input", None)
        chunks = []
        for start in range(0, x.shape[0], batch):
            part = x[start:start + batch]  # (b, T, V, 3)
            chunks.append(encoder(to_stream(part, stream) if to_stream is not None else part).float())
        return torch.cat(chunks)  # (n, F)
