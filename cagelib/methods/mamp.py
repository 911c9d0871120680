"""MAMP: masked motion prediction (Mao, Deng, Zhou, Fang, Lu, Li, ICCV 2023, "Masked Motion Predictors are
Strong 3D Action Representation Learners"), a peer of CAGE in the same loop, data, evaluation and health.

One training step on a Cartesian batch ``x`` (N, T, V, 3):

    x      = T(x)                                 the method's views (``config.views``, as CAGE's; MAMP: rotation
                                                  + crop-resize), then the first T' = l * floor(T / l) frames
    m_t    = x_{t+1} - x_t, m_{T'-1} = 0          motion (frame differences), (N, T', V, 3)
    tokens = (segment of l frames) x joint        TP = T' / l segments, L = TP * V tokens of l * 3 values
    e      = Linear(tokens) + temporal pos + joint pos                (N, L, D)
    mask   = a fraction ``mask_ratio`` of the L tokens per sample, drawn without replacement from
             softmax(|m| per token / (max |m| * tau)) (motion-aware, Gumbel top-k; tau = 0: uniform)
    h      = Encoder(e[visible])                  the encoder sees ONLY the visible tokens (N, L_vis, D)
    p      = Decoder(h scattered into mask tokens + decoder pos)      (N, L, l * 3)
    target = the motion tokens, each normalised by its own mean and std (``norm_target``)
    loss   = mean over masked tokens of the per-token MSE ||p - target||^2 / (l * 3)

Evaluation (``encoders()["cartesian"]``, :class:`MotionEncoder`): every token, no mask, the encoder's
output mean-pooled over all tokens, ``(N, T, V, 3) -> (N, dim)``.

Hyperparameters (paper / its NTU-60 config ``pretrain_mamp_t120_layer8+3_mask90`` vs the CPU defaults here):

    ==================  ==========================  ====================================
    setting             paper                       ``MAMPConfig()`` (CPU)
    ==================  ==========================  ====================================
    window, joints      T = 120 frames, V = 25      the data's: 48 (32 in the lab), 16
    segment length l    4                           4  (48 frames: 12 x 16 = 192 tokens)
    encoder             dim 256, depth 8, 8 heads   dim 64, depth 4, 4 heads
    decoder             dim 256, depth 3 (5 NTU120) dim 64, depth 1
    MLP ratio           4                           4
    masking ratio       0.9                         0.9 (19 of 192 tokens visible)
    motion-aware tau    0.80 (0.75 in some configs) 0.80
    target              motion, per-token norm      the same
    optimizer           AdamW lr 1e-3, wd 0.05,     AdamW (``PretrainConfig.optimizer="adamw"``),
                        betas (0.9, 0.95), 20 warm- lr 1e-3, wd 0.05, betas (0.9, 0.95); the loop's
                        up epochs, cosine to 5e-4,  MultiStepLR schedule, no warmup
                        400 epochs, batch 32
    ==================  ==========================  ====================================

Adaptation to 16 joints and short windows: the token grid follows the data (V = 16 joints, T' / l segments);
the temporal position embedding is sized for ``max_frames`` and its first T' / l rows are used, so one model
takes windows of any length up to ``max_frames``; trailing frames beyond a multiple of l are dropped.

Deviations (docs/decisions.md, "MAMP"): the views are cagelib's (``body_augment.contrastive_views``) instead
of MAMP's random rotation and valid-crop-resize; the motion-aware masking scores a token by the mean absolute
motion inside it (MAMP: the difference to the previous segment's values); the schedule is the loop's
MultiStepLR (no warmup, no cosine); padding of short sequences and two-person inputs (NTU) do not occur here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..representation import DEFAULT_REPRESENTATION
from .body_augment import DEFAULT_VIEWS, VIEWS, contrastive_views
from .registry import register

__all__ = ["MAMPConfig", "MAMP", "MotionEncoder", "motion", "patchify", "PAPER", "adapt"]

OPTIMIZER = dict(optimizer="adamw", lr=1e-3, weight_decay=0.05)  # its NTU configs: AdamW (betas 0.9, 0.95)


@dataclass
class MAMPConfig:
    segment: int = 4  # l: frames per token (paper: 4)
    dim: int = 64  # encoder width (paper: 256)
    depth: int = 4  # encoder blocks (paper: 8)
    heads: int = 4  # attention heads of encoder and decoder (paper: 8)
    decoder_dim: int = 64  # decoder width (paper: 256)
    decoder_depth: int = 1  # decoder blocks (paper: 3 on NTU-60, 5 on NTU-120)
    mlp_ratio: float = 4.0  # MLP hidden width / block width (paper: 4)
    mask_ratio: float = 0.9  # fraction of tokens masked (paper: 0.9)
    motion_aware_tau: float = 0.8  # tau of the motion-aware masking; 0 = uniform random masking (paper: 0.8)
    norm_target: bool = True  # normalise each target token by its own mean and std (paper: True)
    max_frames: int = 128  # longest window the temporal position embedding covers (paper: 120)
    views: str = DEFAULT_VIEWS  # the views applied before masking (body_augment.VIEWS; "crop": no body transforms)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"MAMPConfig: mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.segment < 2 or self.max_frames < self.segment or self.motion_aware_tau < 0:
            raise ValueError("MAMPConfig: need segment >= 2, max_frames >= segment, motion_aware_tau >= 0")
        if self.dim % self.heads or self.decoder_dim % self.heads:
            raise ValueError(f"MAMPConfig: dim and decoder_dim must be multiples of heads={self.heads}")
        if self.views not in VIEWS:
            raise ValueError(f"MAMPConfig: views must be one of {VIEWS}, got {self.views!r}")

    @classmethod
    def paper(cls, **overrides) -> "MAMPConfig":
        """The paper's model (NTU-60 config) for windows up to 120 frames."""
        return cls(**{**dict(dim=256, depth=8, heads=8, decoder_dim=256, decoder_depth=3, max_frames=120),
                      **overrides})



PAPER = dict(epochs=400, milestones=(), options=MAMPConfig.paper(), **OPTIMIZER)  # its cosine schedule: no milestones


def _sgd_lr(config) -> float:
    """The default of ``config``'s ``lr`` field (SGD's 0.1): the scale a run's ``lr`` is given on."""
    return type(config).__dataclass_fields__["lr"].default


def adapt(config) -> dict:
    """MAMP's recipe at a run's scale: a run written for SGD (``optimizer="sgd"``) gets AdamW, weight decay 0.05
    and lr x0.01 of its SGD lr (0.1 -> 1e-3); its model, when not set, is sized as the encoder (the CPU's
    ``MAMPConfig()``, else ``.paper()``). A configuration adapted once is left as it is."""
    paper_sized = config.model == type(config.model)()
    out = dict(options=config.options or (MAMPConfig.paper() if paper_sized else MAMPConfig()))
    if config.optimizer == "sgd":
        out.update(OPTIMIZER, lr=config.lr * OPTIMIZER["lr"] / _sgd_lr(config))
    return out


def motion(x: torch.Tensor) -> torch.Tensor:
    """Frame differences ``m_t = x_{t+1} - x_t`` with the last frame 0: ``(N, T, V, C) -> (N, T, V, C)``."""
    return torch.cat([x[:, 1:] - x[:, :-1], torch.zeros_like(x[:, :1])], dim=1)


def patchify(x: torch.Tensor, segment: int) -> torch.Tensor:
    """Tokens of ``segment`` frames of one joint: ``(N, T, V, C) -> (N, T // l * V, l * C)``, token index
    ``s * V + v`` (segment-major); frames beyond a multiple of ``l`` are dropped."""
    n, t, v, c = x.shape
    tp = t // segment
    x = x[:, : tp * segment].reshape(n, tp, segment, v, c)  # (N, TP, l, V, C)
    return x.permute(0, 1, 3, 2, 4).reshape(n, tp * v, segment * c)  # (N, TP, V, l, C) -> (N, L, l * C)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``; ``(N, L, D) -> (N, L, D)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(n, length, 3, self.heads, d // self.heads)  # (N, L, 3, H, d/H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (N, H, L, d/H)
        attended = F.scaled_dot_product_attention(q, k, v)  # (N, H, L, d/H)
        x = x + self.proj(attended.transpose(1, 2).reshape(n, length, d))  # (N, L, D)
        return x + self.mlp(self.norm2(x))


def _embedding(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.trunc_normal_(torch.zeros(*shape), std=0.02))


class MotionEncoder(nn.Module):
    """MAMP's encoder over (segment x joint) tokens. ``forward``: ``(N, T, V, 3) -> (N, dim)``, every token,
    mean-pooled (the features evaluation probes); ``out_dim`` = ``dim``."""

    def __init__(self, config: MAMPConfig, num_joints: int, in_channels: int = 3):
        super().__init__()
        self.segment, self.num_joints, self.out_dim = config.segment, num_joints, config.dim
        self.embed = nn.Linear(config.segment * in_channels, config.dim)
        self.temporal_pos = _embedding(config.max_frames // config.segment, 1, config.dim)  # (TPmax, 1, D)
        self.joint_pos = _embedding(1, num_joints, config.dim)  # (1, V, D)
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded tokens with position: ``(N, T, V, 3) -> (N, L, D)``, ``L = T // l * V``."""
        n, t, v, _ = x.shape
        tp = t // self.segment
        if v != self.num_joints or not 1 <= tp <= self.temporal_pos.shape[0]:
            raise ValueError(f"MotionEncoder: expects (N, T, {self.num_joints}, 3) with {self.segment} <= T <= "
                             f"{self.temporal_pos.shape[0] * self.segment}, got {tuple(x.shape)}")
        position = (self.temporal_pos[:tp] + self.joint_pos).reshape(tp * v, -1)  # (TP, V, D) -> (L, D)
        return self.embed(patchify(x, self.segment)) + position  # (N, L, D)

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """The transformer on whichever tokens it is given: ``(N, L', D) -> (N, L', D)``."""
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(self.tokens(x)).mean(dim=1)  # (N, L, D) -> (N, D)


class MAMP(nn.Module):
    """Masked motion prediction (see the module docstring); the method interface of ``cagelib.methods.registry``."""

    def __init__(self, config: MAMPConfig, num_joints: int, representation: str = DEFAULT_REPRESENTATION):
        super().__init__()
        self.config, self.representation = config, representation
        self.augment = contrastive_views(config.views, representation)  # also the health monitor's views
        self.encoder = MotionEncoder(config, num_joints)
        self.decoder_embed = nn.Linear(config.dim, config.decoder_dim)
        self.mask_token = _embedding(config.decoder_dim)
        self.decoder_temporal_pos = _embedding(config.max_frames // config.segment, 1, config.decoder_dim)
        self.decoder_joint_pos = _embedding(1, num_joints, config.decoder_dim)
        self.decoder = nn.ModuleList(Block(config.decoder_dim, config.heads, config.mlp_ratio)
                                     for _ in range(config.decoder_depth))
        self.decoder_norm = nn.LayerNorm(config.decoder_dim)
        self.predict = nn.Linear(config.decoder_dim, config.segment * 3)

    def encoders(self) -> dict[str, nn.Module]:
        return {"cartesian": self.encoder}

    def draw_mask(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(visible, masked)``: the token indices ``(N, L_vis)`` the encoder sees and a bool mask ``(N, L)``
        (True = masked), motion-aware as MAMP (Gumbel top-k over softmax(|m| / (max |m| * tau)))."""
        segment, tau = self.config.segment, self.config.motion_aware_tau
        n, t, v, _ = x.shape
        length = t // segment * v
        keep = max(1, int(length * (1 - self.config.mask_ratio)))
        uniform = torch.rand(n, length, generator=generator, device=x.device)  # (N, L)
        scores = -torch.log(-torch.log(uniform + 1e-10) + 1e-10)  # Gumbel noise (N, L)
        if tau > 0:
            intensity = patchify(motion(x), segment).abs().mean(dim=2)  # (N, L) mean |m| per token
            scaled = intensity / (intensity.amax(dim=1, keepdim=True) * tau + 1e-10)
            scores = scores + torch.log_softmax(scaled, dim=1)
        visible = scores.argsort(dim=1)[:, :keep]  # lowest scores are kept: (N, L_vis)
        masked = torch.ones(n, length, dtype=torch.bool, device=x.device).scatter(1, visible, False)  # (N, L)
        return visible, masked

    def masked_loss(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The masked-motion loss of a batch ``(N, T, V, 3)`` as it is (no views): ``loss``, ``prediction``
        ``(N, L, l * 3)``, ``target`` ``(N, L, l * 3)``, ``masked`` ``(N, L)``, ``visible`` ``(N, L_vis)``."""
        segment = self.config.segment
        x = x[:, : x.shape[1] // segment * segment]  # (N, T', V, 3), T' a multiple of l
        target = patchify(motion(x), segment)  # (N, L, l * 3)
        if self.config.norm_target:
            target = (target - target.mean(dim=2, keepdim=True)) / (target.var(dim=2, keepdim=True) + 1e-6).sqrt()
        visible, masked = self.draw_mask(x, generator)
        tokens = self.encoder.tokens(x)  # (N, L, D)
        seen = tokens.gather(1, visible[..., None].expand(-1, -1, tokens.shape[2]))  # (N, L_vis, D)
        encoded = self.decoder_embed(self.encoder.transform(seen))  # (N, L_vis, Dd)
        n, length = masked.shape
        full = self.mask_token.expand(n, length, -1)  # (N, L, Dd)
        encoded = encoded.to(full.dtype)  # under autocast (cagelib.pretrain.fast) the encoder gives bf16
        full = full.scatter(1, visible[..., None].expand(-1, -1, full.shape[2]), encoded)  # visible in place
        tp = length // self.encoder.num_joints
        full = full + (self.decoder_temporal_pos[:tp] + self.decoder_joint_pos).reshape(length, -1)  # (N, L, Dd)
        for block in self.decoder:
            full = block(full)
        prediction = self.predict(self.decoder_norm(full))  # (N, L, l * 3)
        per_token = (prediction - target).pow(2).mean(dim=2)  # (N, L)
        weights = masked.float()
        loss = (per_token * weights).sum() / weights.sum()
        return {"loss": loss, "prediction": prediction, "target": target, "masked": masked, "visible": visible}

    def forward(self, x: torch.Tensor, generator: torch.Generator,
                sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One MAMP step on a Cartesian batch ``(N, T, V, 3)``: the views, then :meth:`masked_loss`.
        Returns ``loss`` (with gradient); ``sample_ids`` are not used."""
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"MAMP expects a Cartesian batch (N, T, V, 3), got {tuple(x.shape)}")
        return {"loss": self.masked_loss(self.augment(x, generator), generator)["loss"]}

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The masked-motion loss of ``x`` as it is, with masks from ``generator`` (health: ``reconstruction``)."""
        return self.masked_loss(x, generator)["loss"]


def _build(config) -> MAMP:
    """MAMP (Mao et al., ICCV 2023): masked motion prediction with a transformer over joint-time tokens."""
    return MAMP(config.options, config.model.num_joints, representation=config.representation)


register("mamp", _build, options=MAMPConfig, paper=PAPER, adapt=adapt)
