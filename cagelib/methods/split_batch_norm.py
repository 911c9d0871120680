"""Batch norm over a batch of equal parts, part by part: one pass over ``torch.cat(parts)`` that equals one
pass per part (features and running statistics), so that two views can share one forward pass without
sharing their batch statistics (``CAGE.shared_key_pass``, ``cagelib.pretrain.fast``)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class _SplitBatchNorm:
    """Mixin of :func:`split_batch_norm`: in training mode a batch of ``batch_chunks`` equal parts is normalised
    part by part (each by its own statistics, running statistics updated part after part), i.e. exactly as
    ``batch_chunks`` separate calls; ``batch_chunks == 1`` or eval mode: the plain batch norm."""

    batch_chunks = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_chunks > 1 and self.training:
            plain = super().forward  # (zero-argument super() does not work inside a comprehension)
            return torch.cat([plain(part) for part in x.chunk(self.batch_chunks)])
        return super().forward(x)


class SplitBatchNorm1d(_SplitBatchNorm, nn.BatchNorm1d):
    pass


class SplitBatchNorm2d(_SplitBatchNorm, nn.BatchNorm2d):
    pass


class SplitBatchNorm3d(_SplitBatchNorm, nn.BatchNorm3d):
    pass


_SPLIT_BATCH_NORMS = {nn.BatchNorm1d: SplitBatchNorm1d, nn.BatchNorm2d: SplitBatchNorm2d,
                      nn.BatchNorm3d: SplitBatchNorm3d}


def can_split_batch_norm(module: nn.Module) -> bool:
    """Whether every batch norm inside ``module`` is a plain ``nn.BatchNorm1d/2d/3d`` (or already split),
    the kinds :func:`split_batch_norm` handles (not e.g. a distributed ``GlobalBatchNorm``)."""
    return all(type(m) in _SPLIT_BATCH_NORMS or isinstance(m, _SplitBatchNorm)
               for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


@contextlib.contextmanager
def split_batch_norm(module: nn.Module, chunks: int):
    """Inside the block, every batch norm of ``module`` normalises a batch of ``chunks`` equal parts part by
    part, so one pass over ``torch.cat(parts)`` equals one pass per part (``CAGE.shared_key_pass``). The
    batch norms become ``SplitBatchNorm*d`` (same parameters, buffers and state-dict keys; plain
    behaviour outside the block). Needs :func:`can_split_batch_norm`."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        if not isinstance(norm, _SplitBatchNorm):
            norm.__class__ = _SPLIT_BATCH_NORMS[type(norm)]
        norm.batch_chunks = chunks
    try:
        yield module
    finally:
        for norm in norms:
            norm.batch_chunks = 1
