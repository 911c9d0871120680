"""AimCLR (Guo, Liu, Chen, Liu, Wang, Ding, AAAI 2022, "Contrastive Learning from Extremely Augmented Skeleton
Sequences for Self-supervised Action Recognition"), a MoCo-style peer of CAGE in the same loop, data and health.

One training step on a Cartesian batch ``x`` (N, T, V, 3) (every feature L2-normalised, tau = temperature):

    x_q, x_k = T(x), T(x)        normal views: temporal crop + shear ("Data Augmentation", normal)
    x_e      = T_e(x)            extreme view: crop, shear, spatial flip, rotation, temporal flip, Gaussian noise,
                                 Gaussian blur over time, axis mask ("Data Augmentation", extreme)
    z = f(x_q), z^ = f^(x_k)     query network f (A-GCN + MLP head), momentum copy f^ (theta^ <- m theta^ + (1-m) theta)
    F = A-GCN feature map of x_e (N, C, T', V); z_e = head(pool(F)), z_ed = head(pool(EADM(F)))
    EADM  (energy-based attention-guided drop): SimAM's minimal energy per activation gives the attention
          sigmoid((F - mu)^2 / (4 (sigma^2 + lambda)) + 1/2) (mu, sigma^2 over T' x V per channel); joints whose
          mean attention (over C, T') reaches ``drop_threshold`` are dropped, then every activation whose attention
          reaches it (the public code's temporal DropBlock); the survivors are rescaled by numel / kept
    p(.|z)  = softmax([z.z^, z.m_1, ..., z.m_K] / tau) over the key and the K queue entries m_i (likewise z_e, z_ed)
    L_N   = InfoNCE of z against z^ and the queue; from the mining epoch on (NNM, nearest-neighbours mining) the
            top-k queue entries nearest to z, z_e and z_ed join the positive set: L_N = -mean_{i in P} log p(i|z)
    L_D3M = [KL(p(.|z) || p(.|z_e)) + KL(p(.|z) || p(.|z_ed))] / 2, p(.|z) detached (the normal view's
            distribution is the target; "Dual Distributional Divergence Minimization Loss")
    L     = L_N + d3m_weight * L_D3M;  after the loss the keys z^ are enqueued (FIFO, ``MemoryBank``)

The paper's equations are cited by section name: their numbers could not be checked for this implementation.
Facts of the public code (github.com/Levigty/AimCLR: ``net/aimclr.py``, ``net/att_drop.py``, ``feeder/tools.py``,
``processor/pretrain_aimclr.py``, ``config/ntu60/pretext/*.yaml``) are marked "code".

Hyperparameters (paper / code NTU-60 config vs the CPU defaults here):

    ====================  ==================================  ======================================
    setting               paper / code                        here
    ====================  ==================================  ======================================
    encoder               ST-GCN, 1/4 widths (16 ... 64),     A-GCN (``PretrainConfig.model``; CPU:
                          hidden 256                          ``AGCNConfig.small``, out_dim 64)
    queue K, m, tau, D    32,768, 0.999, 0.07, 128            ContrastConfig: 2,048, 0.999, 0.07, 128
    batch, optimizer      128, SGD 0.1, wd 1e-4, no Nesterov  32, SGD 0.1, wd 1e-4 (the loop's)
    schedule              300 epochs, lr x0.1 at 250          ``PAPER``: the same
    mining (NNM)          from epoch 150 (of 300), top-1      from epoch 10 (of PretrainConfig's 20), top-1
    EADM                  threshold 0.7, lambda 1e-4          the same
    ====================  ==================================  ======================================

Deviations: 16 joints (``cagelib.skeleton``; the flip swaps ``LEFT_RIGHT_PAIRS``) instead of NTU's 25, one
person, no 2-person axis; one stream (``config.contrast.streams``, Cartesian by default; code: joint, motion and
bone streams trained separately, then ensembled); A-GCN instead of ST-GCN; the spatial transforms (shear,
rotation, mirror) act in the body frame (``body_augment.BodyFrame``) for the run's representation; the Gaussian
blur kernel is normalised (code: unnormalised, so a blurred sequence is scaled by up to ~5); the temporal crop,
flip, noise and blur keep zero padding zero (``augment.valid_lengths``); empty bank entries and stale keys of
a sample's own are masked (``losses.MemoryBank``, as CAGE) instead of a random initial queue; L_D3M is reported
as a KL divergence (code: the cross-entropy, which has the same gradient and exceeds the KL by the target's
entropy); mining applies in every step with a tensor flag (``set_epoch``; no branch, no host sync), the mined
loss equals InfoNCE while mining is off (``mining_epoch`` is 0-based: 150 mines from the 151st epoch on, as the
code's 1-based ``epoch <= mining_epoch`` test); the extreme view's features come from one encoder pass with and
without EADM (as the code) and go through the head in one batch. Two differences found by comparing with the
code on identical tensors are now as the code by default (``docs/decisions.md``, "AimCLR as its code"): the
extreme view's rotation turns about x and z as the code's ``R = R.T`` (``rotate_as_code=True``; False keeps the
opposite turning of cagelib's first version), and the temporal flip is off (``time_flip_p=0``: the feeder's
default since 2022-03-31, ``aug_method="12345"``; its first release flipped with p = 0.5 after the rotation, the
order kept here when the flip is on).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..representation import DEFAULT_REPRESENTATION, REPRESENTATIONS
from ..skeleton import flip_permutation
from .augment import Compose, Crop, Shear, _check, _gather_frames, _randint_below, valid_lengths
from .body_augment import VIEWS, BodyFrame, _axis_rotation, contrastive_views
from .cage import ContrastBranch, ContrastConfig, stream_coordinates
from .encoders import AGCN, ProjectionHead
from .losses import MemoryBank, info_nce_logits, momentum_update, positive_accuracy
from .registry import register

__all__ = ["AimCLRConfig", "AimCLR", "ExtremeAugment", "energy_attention", "attention_drop", "mine_neighbours",
           "d3m_divergence", "spatial_flip", "rotation_matrix", "PAPER", "adapt"]



@dataclass
class AimCLRConfig:
    views: str = "aimclr"  # normal views: "aimclr" (crop + whole-body shear, as code) or a body_augment.VIEWS name
    padding_ratio: int = 6  # temporal crop: pad L // gamma frames at each end (code: 6)
    shear: float = 0.5  # shear factors U(-s, s), whole body (code: 0.5)
    flip_p: float = 0.5  # extreme: probability of the left/right joint swap (code: 0.5)
    flip_mirror: bool = False  # extreme: also negate the lateral axis, a true mirror (code: False, joints swapped only)
    rotate_degrees: float = 30.0  # extreme: one random main axis rotated by U(0, 30) degrees (code: 30)
    rotate_minor_degrees: float = 1.0  # extreme: the two other axes by U(0, 1) degrees (code: 1)
    rotate_as_code: bool = True  # extreme: turn about x and z as the code (R.T); False: the other way (cagelib
    #                              before the comparison with the code)
    time_flip_p: float = 0.0  # extreme: probability of reversing the valid frames (code: off in its feeder's
    #                           default since 2022-03-31, aug_method "12345"; 0.5 in its first release)
    noise_p: float = 0.5  # extreme: probability of Gaussian noise (code: 0.5)
    noise_std: float = 0.01  # extreme: its standard deviation, in the data's units (code: 0.01 on metres)
    blur_p: float = 0.5  # extreme: probability of the Gaussian blur over time (code: 0.5)
    blur_kernel: int = 15  # extreme: blur kernel length in frames, odd (code: 15)
    blur_sigma: tuple = (0.1, 2.0)  # extreme: blur sigma ~ U(low, high) frames (code: 0.1, 2)
    axis_mask_p: float = 0.5  # extreme: probability of zeroing one random coordinate axis (code: 0.5)
    drop_threshold: float = 0.7  # EADM: drop where the energy attention reaches this (code: keep_prob 0.7)
    energy_lambda: float = 1e-4  # EADM: lambda of the minimal energy (code: 1e-4)
    mining_epoch: int = 10  # NNM from this 0-based epoch on (code: 150 of 300; CPU: half of PretrainConfig's 20)
    topk: int = 1  # NNM: queue entries mined per view of each query (code: 1)
    d3m_weight: float = 1.0  # weight of L_D3M (code: 1, L = L_N + (L_e + L_ed) / 2)

    def __post_init__(self) -> None:
        self.blur_sigma = tuple(float(s) for s in self.blur_sigma)
        probabilities = (self.flip_p, self.time_flip_p, self.noise_p, self.blur_p, self.axis_mask_p)
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise ValueError("AimCLRConfig: the augmentation probabilities must be in [0, 1]")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0 or not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError("AimCLRConfig: blur_kernel must be odd and positive, blur_sigma 0 < low <= high")
        if self.topk < 1 or self.mining_epoch < 0 or self.d3m_weight < 0:
            raise ValueError("AimCLRConfig: need topk >= 1, mining_epoch >= 0, d3m_weight >= 0")
        if self.views != "aimclr" and self.views not in VIEWS:
            raise ValueError(f"AimCLRConfig: views must be 'aimclr' or one of {VIEWS}, got {self.views!r}")

    @classmethod
    def paper(cls, **overrides) -> "AimCLRConfig":
        """The code's NTU-60 settings: mining from epoch 150 (of 300)."""
        return cls(**{"mining_epoch": 150, **overrides})



PAPER = dict(epochs=300, milestones=(250,), options=AimCLRConfig.paper())  # code: 300 epochs, lr x0.1 at 250


def adapt(config) -> dict:
    """AimCLR at a run's length: nearest-neighbours mining from half the run (its code: 150 of 300 epochs)."""
    return dict(options=config.options or AimCLRConfig(mining_epoch=config.epochs // 2))


def _bernoulli(n: int, p: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``(N, 1, 1, 1)`` bool: True with probability ``p`` per sample."""
    return torch.rand(n, 1, 1, 1, generator=generator, device=like.device) < p


def spatial_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5, mirror: bool = False) -> torch.Tensor:
    """Swap every left joint with its right partner (``skeleton.LEFT_RIGHT_PAIRS``) in a fraction ``p`` of the
    samples; ``mirror`` also negates the lateral axis (x). An involution with ``p = 1``. ``(N, T, V, 3)``."""
    _check(x, generator, "spatial_flip")
    flipped = x[:, :, torch.as_tensor(flip_permutation(), device=x.device)]  # (N, T, V, 3)
    if mirror:
        flipped = flipped * torch.tensor([-1.0, 1.0, 1.0], device=x.device, dtype=x.dtype)
    return torch.where(_bernoulli(x.shape[0], p, generator, x), flipped, x)


@dataclass
class _Rotate3:
    """Code's rotation: per sample one main axis by U(0, major) degrees, the others by U(0, minor), applied
    about x, y, z in turn (row vectors)."""

    major: float
    minor: float
    as_code: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        main = _randint_below(torch.full((n,), 3, device=x.device), generator)  # (N,)
        u = torch.rand(n, 3, generator=generator, device=x.device, dtype=x.dtype)  # (N, 3)
        axes = torch.arange(3, device=x.device)
        degrees = u * torch.where(axes[None, :] == main[:, None], self.major, self.minor)  # (N, 3)
        angles = torch.deg2rad(degrees)
        return torch.einsum("ntvc,ncd->ntvd", x, rotation_matrix(angles, self.as_code))  # (N, T, V, 3)


def rotation_matrix(angles: torch.Tensor, as_code: bool = True) -> torch.Tensor:
    """``(N, 3, 3)`` row-vector rotation by ``angles (N, 3)`` radians about x, then y, then z. ``as_code``: each
    axis turned as AimCLR's ``random_rotate`` (its matrix transposed, ``R = R.T``, before ``seq @ R``); about y
    that is ``body_augment._axis_rotation``, about x and z its inverse."""
    sign = -1.0 if as_code else 1.0
    return (_axis_rotation(sign * angles[:, 0], 0) @ _axis_rotation(angles[:, 1], 1)
            @ _axis_rotation(sign * angles[:, 2], 2))


@dataclass
class ExtremeAugment:
    """AimCLR's extreme view ``x -> x_e`` (code's ``_strong_aug`` order), batched, from ``generator`` only."""

    config: AimCLRConfig
    representation: str = DEFAULT_REPRESENTATION

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg, rep = self.config, self.representation
        n, t = x.shape[:2]
        x = Crop(cfg.padding_ratio)(x, generator)
        x = BodyFrame(Shear(cfg.shear, joint_fraction=1.0), rep)(x, generator)
        x = BodyFrame(lambda y, g: spatial_flip(y, g, cfg.flip_p, cfg.flip_mirror), rep)(x, generator)
        x = BodyFrame(_Rotate3(cfg.rotate_degrees, cfg.rotate_minor_degrees, cfg.rotate_as_code), rep)(x, generator)
        length = valid_lengths(x)  # (N,)
        frames = torch.arange(t, device=x.device)[None, :]  # (1, T)
        valid = frames < length[:, None]  # (N, T)
        reversed_ = _gather_frames(x, (length[:, None] - 1 - frames).clamp_min(0), valid)  # valid part backwards
        x = torch.where(_bernoulli(n, cfg.time_flip_p, generator, x), reversed_, x)
        noise = cfg.noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + noise * (_bernoulli(n, cfg.noise_p, generator, x) & valid[:, :, None, None])
        x = torch.where(_bernoulli(n, cfg.blur_p, generator, x), self._blur(x, valid, generator), x)
        axis = _randint_below(torch.full((n,), 3, device=x.device), generator)  # (N,) the axis to zero
        zeroed = F.one_hot(axis, 3).to(torch.bool)[:, None, None, :] & _bernoulli(n, cfg.axis_mask_p, generator, x)
        return x.masked_fill(zeroed, 0.0)  # (N, T, V, 3)

    def _blur(self, x: torch.Tensor, valid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Normalised Gaussian kernel over time, one sigma per sample, zero beyond each sequence's valid part."""
        low, high = self.config.blur_sigma
        radius = self.config.blur_kernel // 2
        sigma = low + (high - low) * torch.rand(x.shape[0], 1, generator=generator, device=x.device, dtype=x.dtype)
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (k,)
        kernel = torch.softmax(-offsets.square() / (2 * sigma.square()), dim=1)  # (N, k), sums to 1
        padded = F.pad(x.permute(0, 2, 3, 1), (radius, radius))  # (N, V, 3, T + 2r)
        windows = padded.unfold(3, 2 * radius + 1, 1)  # (N, V, 3, T, k)
        blurred = torch.einsum("nvctk,nk->ntvc", windows, kernel)  # (N, T, V, 3)
        return blurred * valid[:, :, None, None]


def energy_attention(feature_map: torch.Tensor, energy_lambda: float = 1e-4) -> torch.Tensor:
    """EADM's attention of every activation, ``sigmoid(1 / e*)`` with SimAM's minimal energy ``e*``:
    ``(N, C, T, V) -> (N, C, T, V)`` in (0.62, 1); the further from its channel's mean, the higher."""
    t, v = feature_map.shape[2:]
    deviation = (feature_map - feature_map.mean(dim=(2, 3), keepdim=True)).square()  # (N, C, T, V)
    variance = deviation.sum(dim=(2, 3), keepdim=True) / max(t * v - 1, 1)  # (N, C, 1, 1)
    return torch.sigmoid(deviation / (4 * (variance + energy_lambda)) + 0.5)


def attention_drop(feature_map: torch.Tensor, threshold: float = 0.7,
                   energy_lambda: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EADM: ``(dropped (N, C, T, V), joint_keep (N, V), element_keep (N, C, T, V))``. The joints whose mean
    attention reaches ``threshold`` are zeroed, then every activation whose attention reaches it; each mask
    rescales the survivors by (mask size / kept count), as the code's DropBlocks. The masks carry no gradient."""
    with torch.no_grad():
        attention = energy_attention(feature_map.detach().float(), energy_lambda)  # (N, C, T, V)
        joint_keep = attention.mean(dim=(1, 2)) < threshold  # (N, V) spatial: the most-attended joints go
        element_keep = attention < threshold  # (N, C, T, V) temporal (code: per channel, joint and frame)
        joint_scale = joint_keep.numel() / joint_keep.sum().clamp_min(1)
        element_scale = element_keep.numel() / element_keep.sum().clamp_min(1)
    dropped = feature_map * (joint_keep[:, None, None, :] * joint_scale).to(feature_map.dtype)
    return dropped * (element_keep * element_scale).to(feature_map.dtype), joint_keep, element_keep


def mine_neighbours(logits: list[torch.Tensor], topk: int) -> torch.Tensor:
    """NNM: bool ``(N, K)``, True on the ``topk`` queue entries most similar to each query of every view
    (``logits``: ``(N, 1 + K)`` each, the key at 0, masked entries ``-inf``); masked entries are never mined."""
    queue = [view[:, 1:] for view in logits]  # (N, K) each
    mined = torch.zeros_like(queue[0], dtype=torch.bool)
    k = min(topk, mined.shape[1])
    for similarities in queue:
        mined.scatter_(1, similarities.topk(k, dim=1).indices, True)
    return mined & torch.isfinite(queue[0])


def d3m_divergence(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(target) || softmax(logits))`` averaged over rows, the target detached; 0 where the two
    distributions match; ``-inf`` logits (masked entries) count as probability 0 in both."""
    target_log = F.log_softmax(target_logits.detach().float(), dim=1)  # (N, 1 + K)
    log_p = F.log_softmax(logits.float(), dim=1)  # (N, 1 + K)
    target = target_log.exp()
    terms = torch.where(target > 0, target * (target_log - log_p), torch.zeros_like(target))
    return terms.sum(dim=1).mean()


class AimCLR(nn.Module):
    """AimCLR (see the module docstring); the method interface of ``cagelib.methods.registry``.

    ``encoder_factory()`` returns an encoder with ``out_dim``, ``feature_map(x) -> (N, C, T', V)`` and
    ``pool(map) -> (N, C)`` (``encoders.AGCN``). ``contrast`` gives the MoCo settings (queue, momentum,
    temperature, feature size, head width, own-key masking, the one stream). ``set_epoch(epoch)`` (the loop
    calls it before every epoch) switches mining on from ``config.mining_epoch``.
    """

    def __init__(self, config: AimCLRConfig, contrast: ContrastConfig, encoder_factory: Callable[[], nn.Module],
                 representation: str = DEFAULT_REPRESENTATION):
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(f"AimCLR: unknown representation {representation!r}; choose from {REPRESENTATIONS}")
        if len(contrast.streams) != 1:
            raise ValueError(f"AimCLR: one stream, got {contrast.streams}")
        self.config, self.contrast, self.representation = config, contrast, representation
        self.stream = contrast.streams[0]
        if config.views == "aimclr":
            self.augment = Compose([Crop(config.padding_ratio), BodyFrame(Shear(config.shear, 1.0), representation)])
        else:
            self.augment = contrastive_views(config.views, representation)
        self.extreme = ExtremeAugment(config, representation)
        encoder = encoder_factory()
        head = ProjectionHead(encoder.out_dim, contrast.projection_hidden_dim or encoder.out_dim, contrast.feature_dim)
        self.query_net = ContrastBranch(encoder, head)
        self.momentum_net = copy.deepcopy(self.query_net).requires_grad_(False)  # f^ starts as a copy of f
        self.memory_bank = MemoryBank(contrast.queue_size, contrast.feature_dim)
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long), persistent=False)

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch about to run (from the training loop): mining is on from ``config.mining_epoch``."""
        self.epoch.fill_(epoch)

    def encoders(self) -> dict[str, nn.Module]:
        return {self.stream: self.query_net.encoder}

    def stream_input(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        return stream_coordinates(x, stream, self.representation, self.contrast.phi_mode)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """The query network's L2-normalised projection ``(N, T, V, 3) -> (N, D)`` (health metrics)."""
        return self.query_net(self.stream_input(x, stream))

    @torch.no_grad()
    def momentum_update(self) -> None:
        momentum_update([self.momentum_net], [self.query_net], self.contrast.momentum)

    def extreme_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_e, z_ed)``, both ``(N, D)``: the extreme view's projection without and with EADM (one encoder pass)."""
        encoder, head, dtype = self.query_net.encoder, self.query_net.head, self.query_net.autocast_dtype
        autocast = (contextlib.nullcontext() if dtype is None  # as ContrastBranch: float32 unless fast sets a dtype
                    else torch.autocast(x.device.type, dtype=dtype, cache_enabled=False))
        with autocast:
            feature_map = encoder.feature_map(x)  # (N, C, T', V)
            dropped = attention_drop(feature_map, self.config.drop_threshold, self.config.energy_lambda)[0]
            h = head(torch.cat([encoder.pool(feature_map), encoder.pool(dropped)]))  # (2N, D)
        return F.normalize(h.float(), dim=1).chunk(2)

    def forward(self, x: torch.Tensor, generator: torch.Generator,
                sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One AimCLR step on a Cartesian batch ``(N, T, V, 3)``. Training mode: momentum update first, keys
        enqueued after the loss; eval mode leaves bank and momentum encoder untouched. Returns ``loss`` and
        detached ``loss_info`` (L_N), ``loss_d3m``, ``acc``, ``negatives`` and ``mined`` (positives per query)."""
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"AimCLR expects a Cartesian batch (N, T, V, 3), got {tuple(x.shape)}")
        cfg, tau = self.config, self.contrast.temperature
        if self.training:
            self.momentum_update()
        x_q, x_k = self.augment(x, generator), self.augment(x, generator)  # (N, T, V, 3) each
        x_e = self.extreme(x, generator)  # (N, T, V, 3)
        z = self.query_net(self.stream_input(x_q, self.stream))  # (N, D)
        z_e, z_ed = self.extreme_features(self.stream_input(x_e, self.stream))  # (N, D) each
        with torch.no_grad():
            key = self.momentum_net(self.stream_input(x_k, self.stream))  # (N, D)
        queue = self.memory_bank.features.clone()  # (K, D), a copy: the bank is written before backward
        mask = self.memory_bank.negative_mask(sample_ids, mask_own=self.contrast.mask_own_keys)  # (N or 1, K)
        logits, logits_e, logits_ed = (info_nce_logits(q, key, queue, tau, mask) for q in (z, z_e, z_ed))  # (N, 1+K)
        mining = self.epoch >= cfg.mining_epoch  # () bool tensor: no branch, no host sync
        mined = mine_neighbours([logits, logits_e, logits_ed], cfg.topk) & mining  # (N, K)
        positives = torch.cat([torch.ones_like(mined[:, :1]), mined], dim=1)  # (N, 1 + K), the key always
        log_p = F.log_softmax(logits.float(), dim=1)
        loss_info = -(torch.where(positives, log_p, 0.0).sum(dim=1) / positives.sum(dim=1)).mean()
        loss_d3m = 0.5 * (d3m_divergence(logits, logits_e) + d3m_divergence(logits, logits_ed))
        out = {"loss": loss_info + cfg.d3m_weight * loss_d3m, "loss_info": loss_info.detach(),
               "loss_d3m": loss_d3m.detach(), "acc": positive_accuracy(logits.detach()),
               "negatives": torch.isfinite(logits[:, 1:]).sum(dim=1).float().mean().detach(),
               "mined": mined.sum(dim=1).float().mean()}
        if self.training:
            self.memory_bank.enqueue(key, sample_ids)
        return out


def _build(config) -> AimCLR:
    """AimCLR (Guo et al., AAAI 2022): MoCo with extreme views, attention-guided drop, D3M loss and mining."""
    return AimCLR(config.options, config.contrast, lambda: AGCN(config.model), representation=config.representation)


register("aimclr", _build, options=AimCLRConfig, paper=PAPER, adapt=adapt)
