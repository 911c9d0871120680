"""The A-GCN encoder (2s-AGCN, Shi et al. 2019), the MLP projection head and a linear classifier.

CAGE uses A-GCN as its backbone. One unit of the network is

    spatial:  y = sum_k  W_k x (A_k + B_k + C_k)          (adaptive graph convolution)
    temporal: z = BN(Conv_{9x1, stride s}(y))             (temporal convolution)
    output:   relu(z + residual(x))

with three adjacency subsets ``A_k`` (identity, inward, outward) of the fixed skeleton graph, a
learned matrix ``B_k`` per subset (initialised at 1e-6) and a data-dependent matrix
``C_k = softmax(theta_k(x)^T phi_k(x))`` computed per sample from 1x1 embeddings with ``out / 4``
channels. Ten units with widths 64, 64, 64, 64, 128 (stride 2), 128, 128, 256 (stride 2), 256, 256
are followed by global average pooling over time and joints.

Conventions: the public input is ``(N, T, V, C)``; inside, tensors are ``(N, C, T, V)``. Graph
multiplication is ``out[..., w] = sum_v x[..., v] A[v, w]``: ``A[v, w]`` is the weight of the message
from joint ``v`` to joint ``w``, and every subset is normalised so that each column sums to 1 (or 0
where a joint receives nothing in that subset). Zero-padded frames are not masked: they pass through
the network like any other frame, as in the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..skeleton import EDGES, NUM_JOINTS


def adjacency_subsets(edges=EDGES, num_joints: int = NUM_JOINTS) -> torch.Tensor:
    """The three normalised subsets ``(3, V, V)`` of the skeleton graph: identity, inward, outward.

    ``edges`` are ``(parent, child)`` pairs of a tree rooted at the centre joint (joint 0 for
    ``cagelib.skeleton.EDGES``). *Inward* carries messages from a child to its parent (towards the
    centre), *outward* from a parent to its children. Each column is divided by its sum (the
    receiving joint's in-degree in that subset), as ``normalize_digraph`` in ST-GCN / 2s-AGCN.
    """
    identity = torch.eye(num_joints)
    inward = torch.zeros(num_joints, num_joints)
    outward = torch.zeros(num_joints, num_joints)
    for parent, child in edges:
        inward[child, parent] = 1.0  # message child -> parent
        outward[parent, child] = 1.0  # message parent -> child

    def normalise_columns(a: torch.Tensor) -> torch.Tensor:
        degree = a.sum(dim=0, keepdim=True)  # (1, V) in-degree of each receiving joint
        return a / degree.clamp_min(1.0)

    return torch.stack([identity, normalise_columns(inward), normalise_columns(outward)])  # (3, V, V)


EMBEDDING_INITS = ("pytorch", "2s-agcn")  # AGCNConfig.embedding_init


@dataclass
class AGCNConfig:
    in_channels: int = 3  # coordinate channels per joint (x, y, z or r, theta, phi)
    num_joints: int = 16  # joints V; must match the adjacency built from cagelib.skeleton.EDGES
    widths: tuple = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)  # output channels per unit
    strides: tuple = (1, 1, 1, 1, 2, 1, 1, 2, 1, 1)  # temporal stride per unit
    temporal_kernel: int = 9  # frames covered by each temporal convolution (odd)
    num_subsets: int = 3  # adjacency subsets: identity, inward, outward
    adaptive: bool = True  # learned adjacency offset B (2s-AGCN)
    data_dependent: bool = True  # per-sample adjacency C = softmax(theta^T phi) (2s-AGCN)
    dropout: float = 0.0  # dropout on the pooled representation
    width_multiplier: float = 1.0  # scales every width (0.25 for CPU-sized runs)
    embedding_ratio: int = 4  # theta/phi embedding channels = width // embedding_ratio
    embedding_init: str = "pytorch"  # theta, phi and the residual `down` convolutions: "pytorch" (PyTorch's default
    #   Conv2d init, this project's so far) | "2s-agcn" (the original code's conv_init: Kaiming normal, fan_out,
    #   zero bias); docs/decisions.md, "A-GCN embedding init"

    def __post_init__(self) -> None:
        self.widths, self.strides = tuple(self.widths), tuple(self.strides)
        if len(self.widths) != len(self.strides) or not self.widths:
            raise ValueError(f"AGCNConfig: widths ({len(self.widths)}) and strides ({len(self.strides)}) "
                             "must be non-empty and equally long")
        if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
            raise ValueError(f"AGCNConfig: temporal_kernel must be odd and positive, got {self.temporal_kernel}")
        if self.num_subsets != 3:
            raise ValueError(f"AGCNConfig: num_subsets must be 3 (identity, inward, outward), got {self.num_subsets}")
        if self.width_multiplier <= 0:
            raise ValueError(f"AGCNConfig: width_multiplier must be positive, got {self.width_multiplier}")
        if self.embedding_init not in EMBEDDING_INITS:
            raise ValueError(f"AGCNConfig: embedding_init must be one of {EMBEDDING_INITS}, got {self.embedding_init!r}")

    @property
    def scaled_widths(self) -> tuple:
        """Unit widths after ``width_multiplier`` (at least 1 channel each)."""
        return tuple(max(1, round(w * self.width_multiplier)) for w in self.widths)

    @classmethod
    def paper(cls, **overrides) -> "AGCNConfig":
        """The paper's A-GCN: 10 units (2s-AGCN), widths 64 to 256; out_dim 256."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> "AGCNConfig":
        """A CPU-sized A-GCN: 4 units of widths 16, 16, 32 (stride 2), 64 (stride 2); out_dim 64."""
        base = cls(widths=(64, 64, 128, 256), strides=(1, 1, 2, 2), width_multiplier=0.25)
        return replace(base, **overrides)


class AdaptiveGraphConv(nn.Module):
    """Spatial graph convolution with A + B + C per subset, BN, its own residual and ReLU.

    ``fused`` (default False; ``cagelib.pretrain.fast`` sets it): the same function computed in one batched pass
    over the K subsets (one 1x1 convolution for every theta, one for every phi, one batched graph product,
    one 1x1 convolution for every W on the K stacked products), a third of the operations; equal to the
    per-subset loop up to float summation order, same parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor, config: AGCNConfig):
        super().__init__()
        num_subsets = adjacency.shape[0]
        self.register_buffer("A", adjacency.clone())  # (K, V, V) fixed, normalised
        # B: learned offset of the adjacency, initialised small so training starts from A.
        self.B = nn.Parameter(torch.full_like(adjacency, 1e-6)) if config.adaptive else None
        inter = max(1, out_channels // config.embedding_ratio)
        self.data_dependent = config.data_dependent
        if self.data_dependent:  # C = softmax(theta(x)^T phi(x)), one embedding pair per subset
            self.theta = nn.ModuleList(nn.Conv2d(in_channels, inter, 1) for _ in range(num_subsets))
            self.phi = nn.ModuleList(nn.Conv2d(in_channels, inter, 1) for _ in range(num_subsets))
        self.W = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1) for _ in range(num_subsets))
        self.bn = nn.BatchNorm2d(out_channels)
        if in_channels == out_channels:
            self.down = nn.Identity()
        else:
            self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU()
        for w in self.W:  # 2s-AGCN's branch init: variance shared among the K subsets
            nn.init.normal_(w.weight, 0.0, math.sqrt(2.0 / (out_channels * in_channels * num_subsets)))
            nn.init.zeros_(w.bias)
        nn.init.constant_(self.bn.weight, 1e-6)  # the unit starts as (nearly) its residual path
        if config.embedding_init == "2s-agcn":  # the original's conv_init on every other 1x1 convolution
            embeddings = [*self.theta, *self.phi] if self.data_dependent else []
            for conv in embeddings + [m for m in self.down.modules() if isinstance(m, nn.Conv2d)]:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out")
                nn.init.zeros_(conv.bias)
        self.fused = False  # one batched pass over the subsets (class docstring)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._forward_fused(x)
        n, c, t, v = x.shape  # (N, C, T, V)
        adjacency = self.A if self.B is None else self.A + self.B  # (K, V, V)
        flat = x.reshape(n, c * t, v)  # (N, C*T, V)
        y = 0
        for k, w in enumerate(self.W):
            a = adjacency[k].expand(n, v, v)  # (N, V, V)
            if self.data_dependent:
                th = self.theta[k](x)  # (N, inter, T, V)
                ph = self.phi[k](x)  # (N, inter, T, V)
                th = th.permute(0, 3, 1, 2).reshape(n, v, -1)  # (N, V, inter*T)
                ph = ph.reshape(n, -1, v)  # (N, inter*T, V)
                # softmax over the sending joint v: every receiving joint gets a convex combination
                c_k = torch.softmax(torch.bmm(th, ph) / th.shape[-1], dim=-2)  # (N, V, V)
                a = a + c_k
            y = y + w(torch.bmm(flat, a).reshape(n, c, t, v))  # (N, C_out, T, V)
        return self.relu(self.bn(y) + self.down(x))

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` with the K subsets batched: ``(N, C, T, V) -> (N, C_out, T, V)``."""
        n, c, t, v = x.shape  # (N, C, T, V)
        k = len(self.W)
        adjacency = self.A if self.B is None else self.A + self.B  # (K, V, V)
        if self.data_dependent:
            inter = self.theta[0].out_channels
            theta = nn.functional.conv2d(x, torch.cat([m.weight for m in self.theta]),
                                         torch.cat([m.bias for m in self.theta]))  # (N, K*inter, T, V)
            phi = nn.functional.conv2d(x, torch.cat([m.weight for m in self.phi]),
                                       torch.cat([m.bias for m in self.phi]))  # (N, K*inter, T, V)
            theta = theta.reshape(n * k, inter, t, v).permute(0, 3, 1, 2).reshape(n * k, v, inter * t)  # (NK, V, inter*T)
            phi = phi.reshape(n * k, inter * t, v)  # (NK, inter*T, V)
            c_k = torch.softmax(torch.bmm(theta, phi) / (inter * t), dim=-2)  # (NK, V, V), over the sending joint
            a = adjacency + c_k.reshape(n, k, v, v)  # (N, K, V, V)
        else:
            a = adjacency.expand(n, k, v, v)  # (N, K, V, V)
        products = torch.matmul(x.reshape(n, 1, c * t, v), a)  # (N, K, C*T, V): x A_k for every k
        weight = torch.cat([w.weight for w in self.W], dim=1)  # (C_out, K*C, 1, 1): sum_k W_k as one conv
        bias = torch.stack([w.bias for w in self.W]).sum(dim=0)  # (C_out,)
        y = nn.functional.conv2d(products.reshape(n, k * c, t, v), weight, bias)  # (N, C_out, T, V)
        return self.relu(self.bn(y) + self.down(x))


class TemporalConv(nn.Module):
    """``kernel x 1`` convolution over time (with stride) followed by BN: ``(N, C, T, V) -> (N, C', T', V)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel, 1), (stride, 1), ((kernel - 1) // 2, 0))
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class AGCNUnit(nn.Module):
    """One A-GCN unit: adaptive graph conv -> temporal conv, plus the unit's residual, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, adjacency: torch.Tensor,
                 config: AGCNConfig, residual: bool = True):
        super().__init__()
        self.gcn = AdaptiveGraphConv(in_channels, out_channels, adjacency, config)
        self.tcn = TemporalConv(out_channels, out_channels, config.temporal_kernel, stride)
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = TemporalConv(in_channels, out_channels, 1, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tcn(self.gcn(x))  # (N, C_out, T', V)
        if self.residual is not None:
            y = y + self.residual(x)
        return self.relu(y)


class AGCN(nn.Module):
    """A-GCN encoder: ``(N, T, V, C) -> (N, out_dim)`` globally pooled gait representation."""

    def __init__(self, config: AGCNConfig | None = None):
        super().__init__()
        self.config = config = config or AGCNConfig()
        if config.num_joints != NUM_JOINTS:
            raise ValueError(f"AGCNConfig: num_joints={config.num_joints} but the skeleton graph "
                             f"(cagelib.skeleton.EDGES) has {NUM_JOINTS} joints")
        adjacency = adjacency_subsets(EDGES, config.num_joints)  # (3, V, V)
        self.data_bn = nn.BatchNorm1d(config.num_joints * config.in_channels)
        widths = config.scaled_widths
        units, in_channels = [], config.in_channels
        for i, (width, stride) in enumerate(zip(widths, config.strides)):
            # as in 2s-AGCN, the first unit has no unit-level residual
            units.append(AGCNUnit(in_channels, width, stride, adjacency, config, residual=i > 0))
            in_channels = width
        self.units = nn.ModuleList(units)
        self.dropout = nn.Dropout(config.dropout)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x))  # (N, T, V, C) -> (N, out_dim)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last unit's output before pooling: ``(N, T, V, C) -> (N, out_dim, T', V)``."""
        if x.dim() != 4 or x.shape[2] != self.config.num_joints or x.shape[3] != self.config.in_channels:
            raise ValueError(f"AGCN expects (N, T, {self.config.num_joints}, {self.config.in_channels}) "
                             f"input, got {tuple(x.shape)}")
        n, t, v, c = x.shape  # (N, T, V, C)
        x = x.permute(0, 2, 3, 1).reshape(n, v * c, t)  # (N, V*C, T)
        x = self.data_bn(x)
        x = x.reshape(n, v, c, t).permute(0, 2, 3, 1).contiguous()  # (N, C, T, V)
        for unit in self.units:
            x = unit(x)  # (N, C_l, T_l, V)
        return x

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Global average pool over time and joints, then dropout: ``(N, C, T', V) -> (N, C)``."""
        return self.dropout(feature_map.mean(dim=(2, 3)))


class ProjectionHead(nn.Module):
    """AimCLR's MLP head ``Linear - ReLU - Linear``: ``(N, in_dim) -> (N, out_dim)``, not normalised."""

    def __init__(self, in_dim: int = 256, hidden_dim: int = 256, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class Classifier(nn.Module):
    """Encoder plus a linear layer: ``(N, T, V, C) -> logits (N, num_classes)``.

    Used by the supervised baseline, fine-tuning and the semi-supervised protocol (the linear protocol
    freezes ``encoder``).
    """

    def __init__(self, encoder: AGCN, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(encoder.out_dim, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))
