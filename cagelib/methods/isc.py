"""ISC: inter-skeleton contrast (Thoker, Doughty, Snoek, ACM MM 2021, "Skeleton-Contrastive 3D Action
Representation Learning"), a MoCo-style peer of CAGE in the same loop, data, evaluation and health.

Two input representations of the same skeleton sequence, each with its own encoder: ``graph`` (A-GCN on the
(T, V, 3) sequence, the paper's graph-based representation) and ``sequence`` (a bidirectional GRU over the
per-frame vectors of the V x 3 joint coordinates, the paper's sequence-based representation). Each has a query
network (encoder + MLP head), a momentum copy and a queue of its momentum keys.

One training step on a Cartesian batch ``x`` (N, T, V, 3) (features L2-normalised, tau = temperature):

    S1, S2 = A(x), A(x)             two augmented views (ISC's, Sec. "skeleton augmentations"): temporal
                                    crop-resize, then per sample either pose augmentation (a shear) or joint
                                    corruption (random joints zeroed or multiplied by a random 3 x 3 matrix)
    q_g = f_g(S1), q_s = f_s(S1)    queries of both representations, (N, D)
    k_g = f^_g(S2), k_s = f^_s(S2)  keys (momentum encoders), (N, D)
    inter-skeleton contrast (the paper's method): the query of one representation against the key and the
    queue of the OTHER representation,
        L_inter = InfoNCE(q_g, k_s, M_s) + InfoNCE(q_s, k_g, M_g)
    intra-skeleton contrast (the paper's single-representation baseline), each against its own,
        L_intra = InfoNCE(q_g, k_g, M_g) + InfoNCE(q_s, k_s, M_s)
    L = inter_weight * L_inter + intra_weight * L_intra;  after the loss k_g enters M_g and k_s enters M_s

The paper's equations are cited by section name: their numbers could not be checked for this implementation.
Facts of the public code (github.com/fmthoker/skeleton-contrast: ``moco/builder_inter.py``, ``moco/GRU.py``,
``feeder/augmentations.py``, ``feeder/feeder_pretraining_inter.py``, ``options/options_pretraining.py``,
``script_pretrain.sh``) are marked "code".

Hyperparameters (code NTU-60 settings vs the CPU defaults here):

    ====================  ==================================  ======================================
    setting               code                                here
    ====================  ==================================  ======================================
    graph encoder         2s-AGCN (10 units, 256)             A-GCN (``PretrainConfig.model``; CPU:
                                                              ``AGCNConfig.small``, out_dim 64)
    sequence encoder      bi-GRU, 3 layers, hidden 1024       bi-GRU, 2 layers, hidden 32 (out 64)
    queue K, m, tau, D    16,384, 0.999, 0.07, 128            ContrastConfig: 2,048, 0.999, 0.07, 128
    head                  Linear(F, F) - ReLU - Linear(F, D)  the same (``ProjectionHead``)
    batch, optimizer      64, SGD 0.01, momentum 0.9, wd 1e-4 32, SGD ``PretrainConfig.lr`` (paper: 0.01)
    schedule              451 epochs, lr x0.1 at 351          ``PAPER``: the same
    crop-resize           length U(0.1, 1) x L, >= 64 frames, U(0.1, 1) x L, >= 24 frames, resized to
                          resized to 64 frames                the window's T
    shear, corruption     U(-1, 1); 15 of 25 joints           U(-1, 1); 10 of 16 joints
    losses                inter only                          inter_weight 1, intra_weight 0
    ====================  ==================================  ======================================

Evaluation: ``encoders()`` gives both query encoders, ``graph`` (first: the A-GCN every other method is probed
with) and ``sequence``; both take the Cartesian window as it is (no ``stream_input``). The code evaluates one
encoder at a time (``--finetune-skeleton-representation``; its README's example: the sequence encoder), so both
are worth probing; there is no concatenated protocol.

Deviations: 16 joints, one person (code: 25 joints x 2 persons, 150 values per frame); A-GCN of cagelib; the GRU
runs over the whole window in one call and its feature is the last layer's final hidden state of both
directions (code: it feeds one frame at a time with the hidden state carried, so its "backward" direction never
sees the future, and takes the output at the last frame); padding frames are not skipped (windows here are
unpadded; the crop-resize resizes the valid frames to the full window); the crop floor is 24 frames of a
48-frame window (code: 64 frames, its output length, which on 48-frame windows would never crop); the shear
and the joint corruption act in the body frame (``body_augment.BodyFrame``), so a zeroed joint sits at the root;
empty queue entries and stale keys of a sample's own are masked (``losses.MemoryBank``, as CAGE) instead of a
random initial queue; the intra-skeleton losses are available (``intra_weight``), off by default.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..representation import DEFAULT_REPRESENTATION, REPRESENTATIONS
from .augment import Shear, _check, _random_joint_mask, _randint_below, _transform_joints, _uniform, valid_lengths
from .body_augment import VIEWS, BodyFrame, contrastive_views
from .cage import ContrastBranch, ContrastConfig
from .encoders import AGCN, AGCNConfig, ProjectionHead
from .losses import MemoryBank, contrastive_cross_entropy, info_nce_logits, momentum_update, positive_accuracy
from .registry import register

__all__ = ["ISCConfig", "ISC", "SequenceEncoder", "ISCViews", "crop_resize", "joint_corruption", "STREAMS",
           "PAPER", "adapt"]

STREAMS = ("graph", "sequence")


@dataclass
class ISCConfig:
    gru_hidden: int = 32  # hidden units per direction of the sequence encoder (code: 1024)
    gru_layers: int = 2  # GRU layers (code: 3)
    inter_weight: float = 1.0  # weight of the inter-skeleton loss (code: 1, the method)
    intra_weight: float = 0.0  # weight of the intra-skeleton loss (code: 0; the paper's baseline alone: 1 and inter 0)
    views: str = "isc"  # "isc" (crop-resize + shear or joint corruption, as code) or a body_augment.VIEWS name
    crop_ratio: tuple = (0.1, 1.0)  # crop length / valid length ~ U(low, high) (code: 0.1, 1)
    crop_min_frames: int = 24  # shortest crop, in frames (code: 64 of sequences up to 300 frames)
    shear: float = 1.0  # pose augmentation: shear factors U(-s, s), whole body (code: 1)
    corrupt_joints: int = 10  # joint corruption: joints zeroed or transformed per sample (code: 15 of 25)
    pose_p: float = 0.5  # probability of the pose augmentation instead of joint corruption (code: 0.5)
    zero_p: float = 0.5  # joint corruption: probability of zeroing instead of a random matrix (code: 0.5)

    def __post_init__(self) -> None:
        self.crop_ratio = tuple(float(r) for r in self.crop_ratio)
        if not (len(self.crop_ratio) == 2 and 0 < self.crop_ratio[0] <= self.crop_ratio[1] <= 1):
            raise ValueError(f"ISCConfig: crop_ratio must be (low, high), 0 < low <= high <= 1, got {self.crop_ratio}")
        if self.gru_hidden < 1 or self.gru_layers < 1 or self.crop_min_frames < 1 or self.corrupt_joints < 0:
            raise ValueError("ISCConfig: need gru_hidden, gru_layers, crop_min_frames >= 1 and corrupt_joints >= 0")
        if not (0 <= self.pose_p <= 1 and 0 <= self.zero_p <= 1) or min(self.inter_weight, self.intra_weight) < 0:
            raise ValueError("ISCConfig: pose_p and zero_p must be in [0, 1], the loss weights >= 0")
        if self.inter_weight + self.intra_weight == 0:
            raise ValueError("ISCConfig: inter_weight and intra_weight are both 0: nothing to train")
        if self.views != "isc" and self.views not in VIEWS:
            raise ValueError(f"ISCConfig: views must be 'isc' or one of {VIEWS}, got {self.views!r}")

    @classmethod
    def paper(cls, **overrides) -> "ISCConfig":
        """The code's sequence encoder: a 3-layer bi-GRU with 1024 hidden units per direction."""
        return cls(**{"gru_hidden": 1024, "gru_layers": 3, **overrides})



# its code (NTU-60): 451 epochs, lr x0.1 at 351, SGD lr 0.01 (momentum 0.9, wd 1e-4: the loop's), batch 64
PAPER = dict(epochs=451, milestones=(351,), lr=0.01, batch_size=64, options=ISCConfig.paper())


def _sgd_lr(config) -> float:
    """The default of ``config``'s ``lr`` field (SGD's 0.1): the scale a run's ``lr`` is given on."""
    return type(config).__dataclass_fields__["lr"].default


def adapt(config) -> dict:
    """ISC's recipe at a run's scale, for a run whose ISC options are not set yet: lr x0.1 of its CAGE-scale lr
    (0.1 -> ISC's 0.01) and the bi-GRU sized as the encoder (the CPU's ``ISCConfig()``, else ``.paper()``). Set
    ``options`` yourself and the lr is taken as given (an adapted configuration is left as it is)."""
    if config.options is not None:
        return {}
    paper_sized = config.model == type(config.model)()
    return dict(lr=config.lr * PAPER["lr"] / _sgd_lr(config), options=ISCConfig.paper() if paper_sized else ISCConfig())


def crop_resize(x: torch.Tensor, generator: torch.Generator, ratio: tuple = (0.1, 1.0), min_frames: int = 24,
                frames: int | None = None) -> torch.Tensor:
    """Temporal crop-resize (code: ``temporal_cropresize``): per sample a crop of ``clip(floor(L * U(ratio)),
    min_frames, L)`` valid frames at a uniform start, linearly resized to ``frames`` (default T) as
    ``F.interpolate(mode="bilinear", align_corners=False)``: ``(N, T, V, C) -> (N, frames, V, C)``. Every output
    frame interpolates two adjacent frames of the crop; the output has no padding (an empty sequence stays 0)."""
    _check(x, generator, "crop_resize")
    n, _, v, c = x.shape
    frames = frames or x.shape[1]
    length = valid_lengths(x).clamp_min(1)  # (N,)
    scale = _uniform((n,), ratio[0], ratio[1], generator, x)  # (N,)
    crop = torch.minimum(torch.floor(length * scale).long().clamp_min(min_frames), length)  # (N,) in [1, L]
    start = _randint_below(length - crop + 1, generator)  # (N,) in [0, L - crop]
    step = crop.float()[:, None] / frames  # (N, 1)
    position = ((torch.arange(frames, device=x.device) + 0.5) * step - 0.5).clamp_min(0)  # (N, frames) in the crop
    low = position.floor().long().clamp_max(crop[:, None] - 1)  # (N, frames)
    high = torch.minimum(low + 1, crop[:, None] - 1)
    weight = (position - low).clamp(0, 1).to(x.dtype)[:, :, None, None]  # (N, frames, 1, 1)

    def frames_at(index: torch.Tensor) -> torch.Tensor:
        return x.gather(1, (start[:, None] + index)[:, :, None, None].expand(n, frames, v, c))  # (N, frames, V, C)

    return frames_at(low) * (1 - weight) + frames_at(high) * weight


def joint_corruption(x: torch.Tensor, generator: torch.Generator, num_joints: int = 10, zero_p: float = 0.5,
                     return_mask: bool = False):
    """Joint corruption (code: ``joint_courruption``): per sample ``num_joints`` distinct random joints are, with
    probability ``zero_p``, zeroed in every frame, else multiplied by one random 3 x 3 matrix ``U(-1, 1)``
    (row-vector product). ``(N, T, V, C) -> (N, T, V, C)``, and the joint mask ``(N, V)`` with ``return_mask``."""
    _check(x, generator, "joint_corruption")
    n, _, v, c = x.shape
    mask = _random_joint_mask(n, v, num_joints, generator, x.device)  # (N, V)
    matrix = _uniform((n, c, c), -1.0, 1.0, generator, x)  # (N, C, C)
    zero = torch.rand(n, generator=generator, device=x.device) < zero_p  # (N,)
    transformed = _transform_joints(x, matrix, mask)  # (N, T, V, C), only the masked joints changed
    out = torch.where((zero[:, None] & mask)[:, None, :, None], torch.zeros_like(x), transformed)
    return (out, mask) if return_mask else out


class ISCViews:
    """ISC's view (code: ``feeder_pretraining_inter``): crop-resize, then per sample the pose augmentation (a
    whole-body shear) with probability ``pose_p``, else joint corruption; the spatial ones in the body frame."""

    def __init__(self, config: ISCConfig, representation: str = DEFAULT_REPRESENTATION):
        self.config = config
        self.pose = BodyFrame(Shear(config.shear, joint_fraction=1.0), representation)
        self.corrupt = BodyFrame(self._corrupt, representation)

    def _corrupt(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return joint_corruption(x, generator, self.config.corrupt_joints, self.config.zero_p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        x = crop_resize(x, generator, cfg.crop_ratio, cfg.crop_min_frames)  # (N, T, V, 3)
        pose = torch.rand(x.shape[0], generator=generator, device=x.device) < cfg.pose_p  # (N,)
        return torch.where(pose[:, None, None, None], self.pose(x, generator), self.corrupt(x, generator))


class SequenceEncoder(nn.Module):
    """The sequence-based encoder: a bidirectional GRU over per-frame joint vectors, ``(N, T, V, C) -> (N, 2 H)``,
    the last layer's final hidden state of the forward and the backward direction; ``out_dim = 2 H``."""

    def __init__(self, num_joints: int, in_channels: int = 3, hidden: int = 32, layers: int = 2):
        super().__init__()
        self.num_joints, self.in_channels, self.out_dim = num_joints, in_channels, 2 * hidden
        self.gru = nn.GRU(num_joints * in_channels, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        for name, weight in self.gru.named_parameters():
            if name.startswith("weight"):  # code: xavier_uniform on every matrix
                nn.init.xavier_uniform_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2] != self.num_joints or x.shape[3] != self.in_channels:
            raise ValueError(f"SequenceEncoder expects (N, T, {self.num_joints}, {self.in_channels}), "
                             f"got {tuple(x.shape)}")
        n, t, v, c = x.shape
        _, hidden = self.gru(x.reshape(n, t, v * c))  # (layers * 2, N, H)
        return torch.cat([hidden[-2], hidden[-1]], dim=1)  # (N, 2 H): forward at T, backward at 0


class ISC(nn.Module):
    """ISC (see the module docstring); the method interface of ``cagelib.methods.registry``. ``contrast`` gives
    the MoCo settings (queue, momentum, temperature, feature size, head width, own-key masking)."""

    def __init__(self, config: ISCConfig, contrast: ContrastConfig, model: AGCNConfig,
                 representation: str = DEFAULT_REPRESENTATION):
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(f"ISC: unknown representation {representation!r}; choose from {REPRESENTATIONS}")
        self.config, self.contrast, self.representation = config, contrast, representation
        self.augment = ISCViews(config, representation) if config.views == "isc" else \
            contrastive_views(config.views, representation)
        self.ambiguity = None  # no ambiguity transform (``pretrain.distributed`` shards augment and ambiguity)
        self.gather = _identity  # keys and ids of every process before they enter a queue (distributed)
        encoders = {"graph": AGCN(model), "sequence": SequenceEncoder(model.num_joints, model.in_channels,
                                                                       config.gru_hidden, config.gru_layers)}
        self.query_nets, self.momentum_nets, self.memory_banks = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for stream, encoder in encoders.items():
            head = ProjectionHead(encoder.out_dim, contrast.projection_hidden_dim or encoder.out_dim,
                                  contrast.feature_dim)
            self.query_nets[stream] = ContrastBranch(encoder, head)
            self.momentum_nets[stream] = copy.deepcopy(self.query_nets[stream]).requires_grad_(False)
            self.memory_banks[stream] = MemoryBank(contrast.queue_size, contrast.feature_dim)

    def encoders(self) -> dict[str, nn.Module]:
        return {stream: net.encoder for stream, net in self.query_nets.items()}

    @torch.no_grad()
    def embed(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """The query network's L2-normalised projection ``(N, T, V, 3) -> (N, D)`` (health metrics)."""
        return self.query_nets[stream](x)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta^ <- m theta^ + (1 - m) theta for both representations, fused over all parameters (as CAGE's)."""
        momentum_update(self.momentum_nets.values(), self.query_nets.values(), self.contrast.momentum)

    def contrast_logits(self, queries: dict, keys: dict, sample_ids: torch.Tensor | None = None) -> dict:
        """InfoNCE logits ``(N, 1 + K)`` (the positive at 0) by name: ``inter_<s>``, the query of representation
        ``s`` against the key and queue of the other one, and ``intra_<s>`` (only with ``intra_weight > 0``)."""
        tau, other = self.contrast.temperature, {"graph": "sequence", "sequence": "graph"}
        mask = self.memory_banks["graph"].negative_mask(sample_ids, self.contrast.mask_own_keys)  # (N or 1, K)
        queue = {s: self.memory_banks[s].features.clone() for s in STREAMS}  # (K, D) copies: written before backward
        out = {f"inter_{s}": info_nce_logits(queries[s], keys[other[s]], queue[other[s]], tau, mask) for s in STREAMS}
        if self.config.intra_weight > 0:
            out.update({f"intra_{s}": info_nce_logits(queries[s], keys[s], queue[s], tau, mask) for s in STREAMS})
        return out

    def forward(self, x: torch.Tensor, generator: torch.Generator,
                sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One step on a Cartesian batch ``(N, T, V, 3)``. Training mode: momentum update first, keys enqueued
        after the loss; eval mode leaves queues and momentum encoders untouched. Returns ``loss`` and detached
        ``loss_inter``, ``loss_intra`` (when on), ``acc_<s>`` and ``acc`` (positive first, inter logits)."""
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"ISC expects a Cartesian batch (N, T, V, 3), got {tuple(x.shape)}")
        if self.training:
            self.momentum_update()
        view_query, view_key = self.augment(x, generator), self.augment(x, generator)  # S1, S2 (N, T, V, 3)
        queries = {s: self.query_nets[s](view_query) for s in STREAMS}  # (N, D) each
        with torch.no_grad():
            keys = {s: self.momentum_nets[s](view_key) for s in STREAMS}  # (N, D) each
        logits = self.contrast_logits(queries, keys, sample_ids)
        out: dict[str, torch.Tensor] = {}
        total = 0.0
        for kind, weight in (("inter", self.config.inter_weight), ("intra", self.config.intra_weight)):
            if weight > 0:
                loss = sum(contrastive_cross_entropy(logits[f"{kind}_{s}"]) for s in STREAMS)
                out[f"loss_{kind}"] = loss.detach()
                total = total + weight * loss
        out["loss"] = total
        for s in STREAMS:
            out[f"acc_{s}"] = positive_accuracy(logits[f"inter_{s}"].detach())
        out["acc"] = (out["acc_graph"] + out["acc_sequence"]) / 2
        if self.training:  # dequeue-and-enqueue after the loss, both queues in lockstep
            ids = self.gather(sample_ids) if sample_ids is not None else None
            for s in STREAMS:
                self.memory_banks[s].enqueue(self.gather(keys[s]), ids)
        return out


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _build(config) -> ISC:
    """ISC (Thoker et al., ACM MM 2021): inter-skeleton contrast of an A-GCN and a bi-GRU sequence encoder."""
    return ISC(config.options, config.contrast, config.model, representation=config.representation)


register("isc", _build, options=ISCConfig, paper=PAPER, adapt=adapt)
