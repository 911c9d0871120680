"""InfoNCE (paper Eq. 2) and the FIFO memory bank of negatives (MoCo queue) used by GE-CLR, ACL and C3L.

``info_nce`` follows MoCo's form: the query ``z`` (gradient encoder) is compared with its positive key
``z^`` (momentum encoder) and with the negatives; the positive sits at logit index 0 and the loss is the
cross-entropy against that index. The paper writes ``L_InfoNCE(z^, z, N)`` with ``z^`` in the negative
dot products; since ``z^`` and the bank carry no gradient, cagelib puts the gradient-carrying ``z`` there
instead (the positive term ``z^ . z`` is symmetric, so Eq. 2 is otherwise unchanged).

``MemoryBank`` keeps a fixed-size ring buffer of L2-normalised features with the sample id of each entry
(``EMPTY`` = never written, ``UNKNOWN`` = no id). Shapes stay static: unwritten entries are masked out of
the loss instead of being filled with random vectors as MoCo does, so a fresh bank contributes nothing,
and stale copies of a sample's own key can be masked the same way (``docs/decisions.md``, "Empty bank entries are masked, not
random" and "Stale own keys (`mask_own_keys=True`, default)").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EMPTY = -2  # id of a bank entry that was never written
UNKNOWN = -1  # id of an entry whose sample is not known (never matches a query's id)


def info_nce_logits(
    query: torch.Tensor,
    positive_key: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``(N, 1 + K)`` of Eq. 2 with the positive at index 0, already divided by the temperature.

    ``query``, ``positive_key``: ``(N, D)``, L2-normalised. ``negatives``: ``(K, D)`` shared by every query
    or ``(N, K, D)`` per query. ``negative_mask``: bool ``(N, K)`` (or broadcastable), ``True`` drops that
    negative for that query (its logit becomes ``-inf``, i.e. it leaves the denominator of Eq. 2).
    """
    if query.shape != positive_key.shape or query.dim() != 2:
        raise ValueError(f"query and positive_key must both be (N, D), got {tuple(query.shape)} "
                         f"and {tuple(positive_key.shape)}")
    positive = (query * positive_key).sum(dim=-1, keepdim=True)  # (N, 1)
    if negatives.dim() == 2:
        negative = query @ negatives.to(query.dtype).T  # (N, K)
    elif negatives.dim() == 3 and negatives.shape[0] == query.shape[0]:
        negative = torch.einsum("nd,nkd->nk", query, negatives.to(query.dtype))  # (N, K)
    else:
        raise ValueError(f"negatives must be (K, D) or (N, K, D) with N = {query.shape[0]}, "
                         f"got {tuple(negatives.shape)}")
    if negative_mask is not None:
        negative = negative.masked_fill(negative_mask, float("-inf"))
    return torch.cat([positive, negative], dim=1) / temperature  # (N, 1 + K)


def info_nce(query: torch.Tensor, positive_key: torch.Tensor, negatives: torch.Tensor, temperature: float,
             negative_mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE loss, Eq. 2, averaged over the batch:

        -log exp(q.k/t) / (exp(q.k/t) + sum_n exp(q.k_n/t))

    Arguments as in :func:`info_nce_logits`. Returns a scalar tensor.
    """
    logits = info_nce_logits(query, positive_key, negatives, temperature, negative_mask)
    return contrastive_cross_entropy(logits)


def contrastive_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(N, 1 + K)`` logits against the positive at index 0 (computed in float32)."""
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), labels)


def positive_accuracy(logits: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose positive (index 0) has the largest logit, as a float tensor (no sync)."""
    return (logits.argmax(dim=1) == 0).float().mean()


class MemoryBank(nn.Module):
    """FIFO queue of ``size`` L2-normalised ``dim``-features plus the sample id of each entry.

    Everything lives in registered buffers (``features``, ``sample_ids``, ``pointer``), so the bank moves
    with ``.to(device)`` and is saved in ``state_dict``. ``enqueue`` never syncs with the host: the write
    positions are computed on the device.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"MemoryBank needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        self.size, self.dim = size, dim
        self.register_buffer("features", torch.zeros(size, dim))  # (K, D)
        self.register_buffer("sample_ids", torch.full((size,), EMPTY, dtype=torch.long))  # (K,)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next write position

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, sample_ids: torch.Tensor | None = None) -> None:
        """Write ``features`` ``(B, D)`` at the head of the queue, overwriting the oldest entries.

        Wraps around the end of the buffer; when ``B > size`` only the last ``size`` rows survive (as if
        the rows had been written one by one). ``sample_ids`` ``(B,)``: dataset index of each row, or
        ``None`` for ``UNKNOWN``.
        """
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"enqueue expects (B, {self.dim}) features, got {tuple(features.shape)}")
        n = features.shape[0]
        if n == 0:
            return
        if sample_ids is None:
            sample_ids = torch.full((n,), UNKNOWN, dtype=torch.long, device=features.device)
        elif sample_ids.shape != (n,):
            raise ValueError(f"sample_ids must be ({n},), got {tuple(sample_ids.shape)}")
        features = F.normalize(features.detach().to(self.features.dtype), dim=1)
        sample_ids = sample_ids.to(device=self.sample_ids.device, dtype=torch.long)
        skip = max(n - self.size, 0)  # rows overwritten within this same call
        offsets = torch.arange(skip, n, device=self.features.device)
        positions = (self.pointer + offsets) % self.size  # distinct positions, (min(B, K),)
        self.features.index_copy_(0, positions, features[skip:])
        self.sample_ids.index_copy_(0, positions, sample_ids[skip:])
        self.pointer.copy_((self.pointer + n) % self.size)

    def negative_mask(self, query_ids: torch.Tensor | None = None, mask_own: bool = True) -> torch.Tensor:
        """Bool mask ``(N, K)`` (or ``(1, K)`` without ids) of entries to drop from the negatives.

        Always drops ``EMPTY`` entries; with ``mask_own`` also drops entries whose id equals the query's
        own id (stale keys of the same sample from an earlier step). ``UNKNOWN`` entries are never dropped.
        """
        empty = (self.sample_ids == EMPTY).unsqueeze(0)  # (1, K)
        if query_ids is None or not mask_own:
            return empty
        query_ids = query_ids.to(self.sample_ids.device).unsqueeze(1)  # (N, 1)
        own = (self.sample_ids.unsqueeze(0) == query_ids) & (query_ids >= 0)  # (N, K)
        return empty | own

    def num_filled(self) -> torch.Tensor:
        """Number of written entries, as a tensor (no host sync)."""
        return (self.sample_ids != EMPTY).sum()

    def reset(self) -> None:
        """Empty the bank."""
        self.features.zero_()
        self.sample_ids.fill_(EMPTY)
        self.pointer.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


@torch.no_grad()
def momentum_update(key_nets, query_nets, momentum: float) -> None:
    """MoCo's key update ``theta^ <- m theta^ + (1 - m) theta`` over paired iterables of modules (the key
    network of each query network, in the same order), fused over all parameters."""
    key_params = [p for net in key_nets for p in net.parameters()]
    query_params = [p.detach() for net in query_nets for p in net.parameters()]
    torch._foreach_mul_(key_params, momentum)
    torch._foreach_add_(key_params, query_params, alpha=1.0 - momentum)
