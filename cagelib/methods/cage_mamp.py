"""CAGE + MAMP: CAGE's contrastive objective plus MAMP's masked motion prediction on the same A-GCN.

Neither paper proposes this; it is the workbench's combination of the two, an option whose value the peer
grid (``python -m cagelib peers``) measures. One step on a Cartesian batch ``x`` (N, T, V, 3):

    L = L_CAGE(x)                                   the base preset's loss (Eq. 2, 5-8, 10-11 of CAGE)
      + lambda * L_motion(x)                        masked motion prediction (MAMP, Mao et al. ICCV 2023)

    L_motion:  S = T(x)                              one view of the base method's views
               tokens (l frames x 1 joint), l = the A-GCN's temporal stride (4 for the small A-GCN)
               M ~ a uniform random mask over tokens, mask_ratio of them (N, L)
               h = f_C(S with masked tokens zeroed)  the Cartesian query encoder's feature map (N, C, T/l, V)
               m^ = decoder(h)                        one (l x 3) motion token per (segment, joint) (N, L, 3l)
               L_motion = mean over masked tokens of || m^ - norm(m) ||^2,  m = frame differences of S (Eq. 2 of MAMP)

The feature map of the A-GCN has one cell per (segment, joint) token, so the decoder is a per-token MLP
(MAMP's transformer decoder has nothing to attend to that the graph convolutions have not mixed already).

Deviations from MAMP: a graph encoder instead of a transformer, so masked tokens are zeroed in the input
(the encoder sees their positions, not their values) rather than dropped; a uniform mask (MAMP: motion-aware,
ratio 0.9 for its transformer; 0.9 of zeroed input leaves a graph convolution too little); a per-token MLP
decoder; the target is the per-token normalised motion as MAMP's ``norm_target``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from .cage import CAGE, PRESETS, ContrastConfig, paper_recipe
from .encoders import AGCN
from .mamp import motion, patchify
from .registry import register


@dataclass
class MaskedMotionConfig:
    base: str = "cage"  # the CAGE-family preset whose contrastive loss is kept (cagelib.methods.cage.PRESETS)
    weight: float = 1.0  # lambda of L_motion in L = L_CAGE + lambda L_motion (untuned)
    mask_ratio: float = 0.5  # fraction of (segment x joint) tokens zeroed (MAMP: 0.9 with a transformer)
    decoder_hidden: int = 64  # hidden width of the per-token decoder MLP
    norm_target: bool = True  # predict each token's motion normalised to zero mean, unit variance (as MAMP)

    def __post_init__(self) -> None:
        if self.base not in PRESETS:
            raise ValueError(f"MaskedMotionConfig: base must be a CAGE preset {sorted(PRESETS)}, got {self.base!r}")
        if not 0.0 < self.mask_ratio < 1.0 or self.weight < 0 or self.decoder_hidden < 1:
            raise ValueError("MaskedMotionConfig: need 0 < mask_ratio < 1, weight >= 0, decoder_hidden >= 1")


    def contrast(self, contrast: ContrastConfig) -> ContrastConfig:
        """``contrast`` with the base preset's method fields (streams, bank mode, cross-coordinate loss);
        its other fields (queue, momentum, temperature, views, ...) as given."""
        values = {f.name: getattr(contrast, f.name) for f in fields(ContrastConfig)}
        values.update(method=self.base, streams=None, bank_mode=None, cross_coordinate=None)
        return ContrastConfig(**values)


class CAGEMAMP(CAGE):
    """CAGE with the masked-motion term on its first stream's query encoder (module docstring)."""

    def __init__(self, masked: MaskedMotionConfig, contrast: ContrastConfig, encoder_factory, **kwargs):
        super().__init__(masked.contrast(contrast), encoder_factory, **kwargs)
        self.masked = masked
        self.motion_stream = self.config.streams[0]
        encoder = self.query_nets[self.motion_stream].encoder
        strides = getattr(getattr(encoder, "config", None), "strides", None)
        if strides is None or not hasattr(encoder, "feature_map"):
            raise TypeError("CAGEMAMP needs an A-GCN-like encoder with feature_map() and config.strides")
        self.segment = math.prod(strides)  # frames per token: one feature-map cell per (segment, joint)
        self.decoder = nn.Sequential(nn.Linear(encoder.out_dim, masked.decoder_hidden), nn.GELU(),
                                     nn.Linear(masked.decoder_hidden, self.segment * 3))

    def draw_mask(self, n: int, length: int, generator: torch.Generator, device) -> torch.Tensor:
        """A uniform random mask of ``round(mask_ratio * length)`` tokens per row: bool ``(N, L)``."""
        masked_count = max(1, round(self.masked.mask_ratio * length))
        scores = torch.rand(n, length, generator=generator, device=device)  # (N, L)
        chosen = scores.argsort(dim=1)[:, :masked_count]  # (N, L_masked)
        return torch.zeros(n, length, dtype=torch.bool, device=device).scatter(1, chosen, True)

    def masked_motion_loss(self, view: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """L_motion of one Cartesian view ``(N, T, V, 3)``: ``loss``, ``prediction`` and ``target``
        ``(N, L, 3l)``, ``masked`` ``(N, L)``, ``seen`` (the encoder's input, masked tokens zeroed)."""
        l = self.segment
        x = self.stream_input(view[:, : view.shape[1] // l * l], self.motion_stream)  # (N, T', V, 3), T' = l * TP
        n, t, v, _ = x.shape
        target = patchify(motion(x), l)  # (N, L, 3l), token s * V + j
        if self.masked.norm_target:
            target = (target - target.mean(dim=2, keepdim=True)) / (target.var(dim=2, keepdim=True) + 1e-6).sqrt()
        masked = self.draw_mask(n, target.shape[1], generator, x.device)  # (N, L)
        frame_mask = masked.reshape(n, t // l, 1, v).expand(n, t // l, l, v).reshape(n, t, v, 1)  # (N, T', V, 1)
        seen = x.masked_fill(frame_mask, 0.0)  # (N, T', V, 3)
        feature_map = self.query_nets[self.motion_stream].encoder.feature_map(seen)  # (N, C, TP, V)
        cells = feature_map.permute(0, 2, 3, 1).reshape(n, -1, feature_map.shape[1])  # (N, TP * V, C) = (N, L, C)
        if cells.shape[1] != target.shape[1]:
            raise ValueError(f"CAGEMAMP: the feature map has {cells.shape[1]} cells for {target.shape[1]} tokens")
        prediction = self.decoder(cells)  # (N, L, 3l)
        per_token = (prediction - target).pow(2).mean(dim=2)  # (N, L)
        weights = masked.float()
        loss = (per_token * weights).sum() / weights.sum()
        return {"loss": loss, "prediction": prediction, "target": target, "masked": masked, "seen": seen}

    def forward(self, x: torch.Tensor, generator: torch.Generator,
                sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """CAGE's step, then ``loss += weight * L_motion`` on a fresh view; adds ``loss_motion``."""
        out = super().forward(x, generator, sample_ids)
        motion_loss = self.masked_motion_loss(self.augment(x, generator), generator)["loss"]
        out["loss"] = out["loss"] + self.masked.weight * motion_loss
        out["loss_motion"] = motion_loss.detach()
        return out

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """L_motion of ``x`` as it is, with masks from ``generator`` (health: ``reconstruction``)."""
        return self.masked_motion_loss(x, generator)["loss"]


def _build(config) -> CAGEMAMP:
    """CAGE + MAMP (this workbench's combination): a CAGE preset's loss plus masked motion prediction."""
    return CAGEMAMP(config.options, config.contrast, lambda: AGCN(config.model), representation=config.representation)


register("cage_mamp", _build, options=MaskedMotionConfig, paper=paper_recipe(MaskedMotionConfig().base))
