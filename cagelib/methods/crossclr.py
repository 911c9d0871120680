"""3s-CrosSCLR (Li, Wang, Ni, Wang, Yang, Zhang, CVPR 2021, "3D Human Action Representation Learning via
Cross-View Consistency Pursuit"), a MoCo-style peer of CAGE in the same loop, data, evaluation and health.

Three skeleton "views" (here: streams, to keep cagelib's word "view" for augmentations) of one augmented
Cartesian window S: ``joint`` (S as it is), ``motion`` (frame differences ``S_{t+1} - S_t``, the last frame 0)
and ``bone`` (child minus parent along the 16-joint tree, ``cagelib.skeleton.PARENTS``). Each stream u is a
SkeletonCLR (MoCo) with its own encoder f_u, projection head, momentum copy f^_u and queue M_u.

One training step on a Cartesian batch ``x`` (N, T, V, 3) (features L2-normalised, tau = temperature):

    S, S^ = T(x), T(x)              two augmented views (``CrossCLRConfig.views``; paper: crop + shear)
    z_u = f_u(u(S)), z^_u = f^_u(u(S^))          per stream u, (N, D)
    s_u = z_u M_u^T                 similarity of the query to the K queue entries of its own stream, (N, K)
    single-view (SkeletonCLR, Sec. 3.1, InfoNCE Eq. 1): L_u = -log softmax([z_u.z^_u, s_u] / tau)[0]
    cross-view (CVC-KM, Sec. 3.2-3.3), from epoch ``cross_epoch`` on, for every other stream v:
        N+_v  = Topk(s_v)           high-confidence knowledge mining: the k queue entries most similar in
                                    v's embedding space; entry i of every queue is the same sample (the
                                    queues are written in lockstep), so they are positives for u as well
        c_uv  = s_u * s_v           contrastive context: the similarity distributions of both streams
        L_u<-v = -mean_{p in P} log softmax([z_u.z^_u, s_u, c_uv] / tau)[p],
                 P = {the key} u N+_v (in s_u) u N+_v (in c_uv)
        L_u   = mean over v != u of L_u<-v
    L = L_joint + L_motion + L_bone;  after the loss every key z^_u is enqueued into M_u (FIFO)

The paper's equations beyond Eq. 1 are cited by section name: their numbers could not be checked for this
implementation. Facts of the public code (github.com/LinguoLi/CrosSCLR: ``net/crossclr_3views.py``,
``processor/pretrain_crossclr_3views.py``, ``config/CrosSCLR/crossclr_3views_xview.yaml``) are marked "code".

Hyperparameters (paper / code NTU-60 x-view config vs the CPU defaults here):

    ====================  ==================================  ======================================
    setting               paper / code                        here
    ====================  ==================================  ======================================
    encoder               ST-GCN, 1/4 widths, hidden 256      A-GCN (``PretrainConfig.model``; CPU:
                                                              ``AGCNConfig.small``, out_dim 64)
    queue K, m, tau, D    32,768, 0.999, 0.07, 128            ContrastConfig: 2,048, 0.999, 0.07, 128
    batch, optimizer      128, SGD 0.1, wd 1e-4               32, SGD 0.1, wd 1e-4 (the loop's)
    schedule              300 epochs, lr x0.1 at 250          ``PAPER``: the same
    cross-view training   from epoch 150, top-1, context on   from half the run's epochs, top-1, on
    views                 crop (padding 1/6) + shear 0.5      the same, shear in the body frame
    ====================  ==================================  ======================================

Evaluation: ``encoders()`` gives the three query encoders (``joint``, ``motion``, ``bone``) and
``stream_input(x, stream)`` their input (``evaluate.features.StreamEncoder`` pairs them), so every stream is
probed on its own. The paper's 3s number (code: linear evaluation ``view: all``) averages the logits of the
three streams' linear classifiers, trained jointly: a linear classifier on the concatenated features, which
:meth:`CrossCLR.fused_encoder` gives, ``(N, T, V, 3) -> (N, 3 F)``.

Deviations: A-GCN instead of ST-GCN, 16 joints, one person; each stream has its own projection head (code: the
last head layer of every stream is the joint stream's, a fault) and every key encoder is momentum-updated in
every step (code: in cross-view training only the motion key encoder, a fault, github issue #4); empty queue
entries and stale keys of a sample's own are masked out of negatives, mining and context (``losses.MemoryBank``,
as CAGE) instead of a random initial queue; the bone of the root joint is the root joint itself (its position,
or the root velocity for ``root_velocity`` input), so bones sum back to joints (code: zero); with
``root_velocity`` input the other joints' bones are measured from the origin (they are root-relative); motion
is zero where frame t or t+1 is padding; the shear acts in the body frame (``body_augment.BodyFrame``);
the cross-view switch is a tensor flag set by ``set_epoch`` (no branch, no host sync): before it the mined set
and the context are empty and L_u<-v equals SkeletonCLR's InfoNCE; the switch defaults to half the run's epochs
(code: an absolute 150 of 300, and single-view training through epoch 150 inclusive).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..representation import DEFAULT_REPRESENTATION, REPRESENTATIONS
from ..skeleton import PARENTS, ROOT
from .augment import Compose, Crop, Shear, valid_lengths
from .body_augment import VIEWS, BodyFrame, contrastive_views
from .cage import ContrastBranch, ContrastConfig
from .encoders import AGCN, ProjectionHead
from .losses import MemoryBank, momentum_update, positive_accuracy
from .mamp import motion
from .registry import register

__all__ = ["CrossCLRConfig", "CrossCLR", "STREAMS", "motion_stream", "bone_stream", "parent_index", "mine_topk",
           "PAPER"]

STREAMS = ("joint", "motion", "bone")


@dataclass
class CrossCLRConfig:
    cross_epoch: int | None = None  # 0-based epoch cross-view training starts; None: half the run's (code: 150 of 300)
    topk: int = 1  # k: queue entries mined per query in the other stream's space (code: 1)
    context: bool = True  # add the contrastive context s_u * s_v to the logits (code: True)
    views: str = "skeletonclr"  # "skeletonclr" (crop + whole-body shear, as code) or a body_augment.VIEWS name
    padding_ratio: int = 6  # temporal crop: pad L // gamma frames at each end (code: 6)
    shear: float = 0.5  # shear factors U(-s, s), whole body (code: 0.5)

    def __post_init__(self) -> None:
        if self.topk < 1 or (self.cross_epoch is not None and self.cross_epoch < 0):
            raise ValueError("CrossCLRConfig: need topk >= 1 and cross_epoch >= 0 (or None)")
        if self.views != "skeletonclr" and self.views not in VIEWS:
            raise ValueError(f"CrossCLRConfig: views must be 'skeletonclr' or one of {VIEWS}, got {self.views!r}")

    @classmethod
    def paper(cls, **overrides) -> "CrossCLRConfig":
        """The code's NTU-60 settings: cross-view training from epoch 150 (of 300)."""
        return cls(**{"cross_epoch": 150, **overrides})



# its code's NTU-60 config: 300 epochs, lr x0.1 at 250, batch 128, cross-view training from epoch 150
PAPER = dict(epochs=300, milestones=(250,), batch_size=128, options=CrossCLRConfig.paper())


def motion_stream(x: torch.Tensor) -> torch.Tensor:
    """Frame differences ``x_{t+1} - x_t`` (the last frame 0, ``mamp.motion``), zero where frame t or t+1
    is padding (``augment.valid_lengths``): ``(N, T, V, C) -> (N, T, V, C)``."""
    length = valid_lengths(x)  # (N,)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] + 1 < length[:, None]  # (N, T) t + 1 < L
    return motion(x) * valid[:, :, None, None].to(x.dtype)


def bone_stream(x: torch.Tensor, representation: str = DEFAULT_REPRESENTATION,
                parents: torch.Tensor | None = None) -> torch.Tensor:
    """Bone vectors ``x_v - x_parent(v)`` along ``cagelib.skeleton.PARENTS``: ``(N, T, V, 3) -> (N, T, V, 3)``.

    The root joint's bone is the root joint itself, so the joints are the cumulative sums of the bones from
    the root down the tree. With ``root_velocity`` input the root joint holds a velocity, not a position: the
    other joints (root-relative) hang from the origin, and the root's channels pass through unchanged.
    ``parents``: :func:`parent_index` on ``x``'s device (built here when None; a CUDA graph needs it prebuilt).
    """
    position = x
    if representation == "root_velocity":  # the joints are root-relative: the root sits at the origin
        position = torch.cat([x[:, :, :ROOT], torch.zeros_like(x[:, :, ROOT:ROOT + 1]), x[:, :, ROOT + 1:]], dim=2)
    parents = parent_index(x.device) if parents is None else parents  # (V,)
    bones = position - position[:, :, parents]  # (N, T, V, 3), 0 at the root
    is_root = (torch.arange(x.shape[2], device=x.device) == ROOT)[None, None, :, None]  # (1, 1, V, 1)
    return torch.where(is_root, x, bones)


def parent_index(device: torch.device | str = "cpu") -> torch.Tensor:
    """Each joint's parent ``(V,)`` int64 (``cagelib.skeleton.PARENTS``), the root its own parent."""
    return torch.tensor([ROOT if p < 0 else p for p in PARENTS], device=device)


def mine_topk(similarities: torch.Tensor, mask: torch.Tensor, topk: int) -> torch.Tensor:
    """High-confidence knowledge mining: bool ``(N, K)``, True on the ``topk`` queue entries with the largest
    ``similarities`` ``(N, K)`` per row; entries dropped by ``mask`` (``(N or 1, K)``) are never mined."""
    masked = similarities.detach().masked_fill(mask, float("-inf"))  # (N, K)
    k = min(topk, masked.shape[1])
    mined = torch.zeros_like(masked, dtype=torch.bool).scatter_(1, masked.topk(k, dim=1).indices, True)
    return mined & ~mask


class CrossCLR(nn.Module):
    """3s-CrosSCLR (see the module docstring); the method interface of ``cagelib.methods.registry``.

    ``encoder_factory()`` returns a fresh encoder ``(N, T, V, 3) -> (N, out_dim)`` (``encoders.AGCN``), called
    once per stream. ``contrast`` gives the MoCo settings (queue, momentum, temperature, feature size, head
    width, own-key masking). ``epochs``: the run's length, for ``config.cross_epoch = None`` (half of it).
    ``set_epoch(epoch)`` (the loop calls it before every epoch) switches cross-view training on.
    """

    def __init__(self, config: CrossCLRConfig, contrast: ContrastConfig, encoder_factory: Callable[[], nn.Module],
                 representation: str = DEFAULT_REPRESENTATION, epochs: int = 2):
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(f"CrossCLR: unknown representation {representation!r}; choose from {REPRESENTATIONS}")
        self.config, self.contrast, self.representation = config, contrast, representation
        self.cross_epoch = config.cross_epoch if config.cross_epoch is not None else epochs // 2
        if config.views == "skeletonclr":
            self.augment = Compose([Crop(config.padding_ratio), BodyFrame(Shear(config.shear, 1.0), representation)])
        else:
            self.augment = contrastive_views(config.views, representation)
        self.ambiguity = None  # no ambiguity transform (``pretrain.distributed`` shards augment and ambiguity)
        self.gather = _identity  # keys and ids of every process before they enter a queue (distributed)
        self.query_nets, self.momentum_nets, self.memory_banks = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for stream in STREAMS:
            encoder = encoder_factory()
            head = ProjectionHead(encoder.out_dim, contrast.projection_hidden_dim or encoder.out_dim,
                                  contrast.feature_dim)  # one head per stream (code: the last layer shared)
            self.query_nets[stream] = ContrastBranch(encoder, head)
            self.momentum_nets[stream] = copy.deepcopy(self.query_nets[stream]).requires_grad_(False)
            self.memory_banks[stream] = MemoryBank(contrast.queue_size, contrast.feature_dim)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("parents", parent_index(), persistent=False)  # (V,) for the bone stream

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta^ <- m theta^ + (1 - m) theta for every stream, fused over all parameters (as CAGE's)."""
        momentum_update(self.momentum_nets.values(), self.query_nets.values(), self.contrast.momentum)

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch about to run (from the training loop): cross-view training from ``cross_epoch`` on."""
        self.epoch.fill_(epoch)

    def encoders(self) -> dict[str, nn.Module]:
        return {stream: net.encoder for stream, net in self.query_nets.items()}

    def stream_input(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """A Cartesian batch ``(N, T, V, 3)`` as ``stream`` sees it: joints, motion or bones, same shape."""
        if stream == "joint":
            return x
        if stream == "motion":
            return motion_stream(x)
        if stream == "bone":
            return bone_stream(x, self.representation, self.parents)
        raise ValueError(f"CrossCLR: unknown stream {stream!r}; choose from {STREAMS}")

    @torch.no_grad()
    def embed(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """The query network's L2-normalised projection ``(N, T, V, 3) -> (N, D)`` (health metrics)."""
        return self.query_nets[stream](self.stream_input(x, stream))

    def fused_encoder(self) -> nn.Module:
        """The three query encoders on their stream inputs, features concatenated: ``(N, T, V, 3) -> (N, 3 F)``
        (the 3s protocol: a linear classifier on it = the code's averaged per-stream linear classifiers)."""
        return _Concatenated(self)

    def forward(self, x: torch.Tensor, generator: torch.Generator,
                sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One step on a Cartesian batch ``(N, T, V, 3)``. Training mode: momentum update first, keys enqueued
        after the loss; eval mode leaves queues and momentum encoders untouched. Returns ``loss`` and detached
        ``loss_<stream>``, ``acc`` (positive first among key and queue, mean over streams), ``negatives``,
        ``mined`` (mined positives per query and other stream) and ``cross`` (1 in cross-view training)."""
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"CrossCLR expects a Cartesian batch (N, T, V, 3), got {tuple(x.shape)}")
        tau = self.contrast.temperature
        if self.training:
            self.momentum_update()
        view_query, view_key = self.augment(x, generator), self.augment(x, generator)  # S, S^ (N, T, V, 3)
        cross = self.epoch >= self.cross_epoch  # () bool tensor: no branch, no host sync
        mask = self.memory_banks[STREAMS[0]].negative_mask(sample_ids, self.contrast.mask_own_keys)  # (N or 1, K)
        context_mask = mask | ~cross  # the context takes part in cross-view training only
        keys, positive, similarity, logits = {}, {}, {}, {}
        for stream in STREAMS:
            query = self.query_nets[stream](self.stream_input(view_query, stream))  # z_u (N, D)
            with torch.no_grad():
                keys[stream] = self.momentum_nets[stream](self.stream_input(view_key, stream))  # z^_u (N, D)
            queue = self.memory_banks[stream].features.clone()  # (K, D), a copy: written before backward
            positive[stream] = (query * keys[stream]).sum(dim=1, keepdim=True)  # (N, 1)
            similarity[stream] = query @ queue.T  # s_u (N, K)
            logits[stream] = torch.cat([positive[stream], similarity[stream].masked_fill(mask, float("-inf"))],
                                       dim=1) / tau  # (N, 1 + K), SkeletonCLR's
        mined = {v: mine_topk(similarity[v], mask, self.config.topk) & cross for v in STREAMS}  # (N, K) each
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        for u in STREAMS:
            directions = []
            for v in (s for s in STREAMS if s != u):
                parts, positives = [logits[u]], [torch.ones_like(mined[v][:, :1]), mined[v]]
                if self.config.context:
                    context = (similarity[u] * similarity[v]).masked_fill(context_mask, float("-inf"))  # c_uv (N, K)
                    parts.append(context / tau)
                    positives.append(mined[v])
                directions.append(_multi_positive_loss(torch.cat(parts, dim=1), torch.cat(positives, dim=1)))
            stream_loss = torch.stack(directions).mean()  # L_u
            out[f"loss_{u}"] = stream_loss.detach()
            total = total + stream_loss
        out["loss"] = total
        out["acc"] = torch.stack([positive_accuracy(logits[s].detach()) for s in STREAMS]).mean()
        out["negatives"] = torch.isfinite(logits[STREAMS[0]][:, 1:]).sum(dim=1).float().mean().detach()
        out["mined"] = torch.stack([mined[s].sum(dim=1).float().mean() for s in STREAMS]).mean()
        out["cross"] = cross.float()
        if self.training:  # dequeue-and-enqueue after the loss, every queue in lockstep (entry i: one sample)
            ids = self.gather(sample_ids) if sample_ids is not None else None
            for stream in STREAMS:
                self.memory_banks[stream].enqueue(self.gather(keys[stream]), ids)
        return out


def _multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """``-mean_{p in P} log softmax(logits)[p]`` averaged over rows (code's form); ``positives`` bool, same shape
    as ``logits`` ``(N, L)``. With the key as the only positive it is ``contrastive_cross_entropy``."""
    log_p = F.log_softmax(logits.float(), dim=1)  # (N, L); -inf logits (masked entries) are never positives
    return -(torch.where(positives, log_p, 0.0).sum(dim=1) / positives.sum(dim=1)).mean()


class _Concatenated(nn.Module):
    """The three streams of a :class:`CrossCLR` as one encoder of Cartesian windows: ``(N, T, V, 3) -> (N, 3 F)``."""

    def __init__(self, method: CrossCLR):
        super().__init__()
        self.encoders = nn.ModuleDict(method.encoders())
        self._input = method.stream_input
        self.out_dim = sum(getattr(e, "out_dim", 0) for e in self.encoders.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(self._input(x, stream)) for stream, encoder in self.encoders.items()], dim=1)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _build(config) -> CrossCLR:
    """3s-CrosSCLR (Li et al., CVPR 2021): joint, motion and bone MoCo streams with cross-view knowledge mining."""
    return CrossCLR(config.options, config.contrast, lambda: AGCN(config.model), representation=config.representation,
                    epochs=config.epochs)


register("crossclr", _build, options=CrossCLRConfig, paper=PAPER)
