"""Multi-process (multi-GPU) pretraining with ``torch.distributed`` DDP, launched by ``torchrun``.

    torchrun --nproc_per_node=4 -m cagelib pretrain --config paper --data features.npy --device cuda \\
        out=outputs/cage_ddp

Design (``docs/design.md``, "GPU path and distributed training"):

- **Global batch.** ``PretrainConfig.batch_size`` is the global batch (the paper's 32), split into equal
  contiguous shards, one per process. Every process holds the whole data set on its device (E-Gait is
  ~100 MB) and shuffles it with the same per-epoch seed, so all agree on the global batch.
- **Augmentation randomness.** :class:`RankShard` draws the views of the *global* batch from the shared
  generator and keeps this process's rows: the same seed gives the same views whatever the number of
  processes (augmenting all rows costs a few elementwise kernels; the encoders see only the shard).
- **Keys across processes.** ``CAGE.gather`` is :func:`concat_all_gather` (MoCo's ``concat_all_gather``):
  keys, their sample ids and the ambiguity features of every process enter the memory bank (and ASMB's
  batch bank), in rank order = global-batch order, so every process keeps an identical bank.
- **Batch norm: synchronised (``bn="sync"``, default).** Every BatchNorm of the query and momentum
  encoders normalises with the statistics of the global batch (:class:`GlobalBatchNorm`, one all-reduce
  per layer, differentiable, works with gloo and NCCL; ``nn.SyncBatchNorm`` does not run on CPU). A DDP
  run is then the same computation as one process on the global batch. MoCo's shuffle-BN is not used:
  it only exists to hide intra-batch statistics from the keys, and our single-process run (like the
  paper's) does not hide them either; keeping both identical is what makes the runs comparable.
  ``bn="torch_sync"`` uses ``nn.SyncBatchNorm`` (CUDA only), ``bn="local"`` per-process statistics.
- **Gradients.** DDP averages them; every loss term is a mean over queries, so the average over equal
  shards equals the single-process gradient.
- **One loop.** :func:`pretrain_distributed` builds a ``cagelib.pretrain.loop.Processes`` (rank, world size,
  :func:`prepare_model`, ``distributed.json``) and runs ``pretrain``'s own epoch loop with it: rank 0 holds
  the run folder's lock and writes every file (config, metrics, checkpoint, TensorBoard, provenance).
"""
from __future__ import annotations

import functools
import inspect
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import PretrainConfig, PretrainResult
from .loop import Processes, pretrain

BN_MODES = ("sync", "torch_sync", "local")


@dataclass
class DistInfo:
    rank: int  # global rank of this process
    world_size: int  # number of processes
    local_rank: int  # rank on this machine (selects the GPU)
    device: torch.device  # this process's device
    backend: str | None  # "nccl", "gloo" or None when no process group was initialised


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_from_env(backend: str | None = None, device: str = "auto") -> DistInfo:
    """Initialise the process group from torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``); without them, a single process with no process group.

    ``device="auto"``: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU. ``backend`` defaults to NCCL
    on CUDA and gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size == 1 and not dist.is_initialized():
        return DistInfo(0, 1, 0, dev, None)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        options = {"device_id": dev} if dev.type == "cuda" and "device_id" in inspect.signature(
            dist.init_process_group).parameters else {}  # binds NCCL to this GPU (torch >= 2.3)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **options)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, dist.get_backend())


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation over all processes along dim 0, in rank order (no gradient): ``(B, ...) -> (W*B, ...)``.

    Identity outside a multi-process group. Every process must pass the same shape.
    """
    if not is_distributed():
        return tensor
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


class RankShard:
    """Apply ``augment`` to the global batch and keep rank ``rank``'s contiguous shard of rows.

    Every process draws the same random numbers from its (identically seeded) generator, so the views
    of a sample do not depend on the number of processes.
    """

    def __init__(self, augment, rank: int, world_size: int):
        self.augment, self.rank, self.world_size = augment, rank, world_size

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.shape[0] % self.world_size:
            raise ValueError(f"RankShard: global batch {x.shape[0]} is not divisible by {self.world_size} processes")
        return self.augment(x, generator).chunk(self.world_size)[self.rank]  # (N / W, T, V, C)

    def __repr__(self) -> str:
        return f"RankShard({self.augment!r}, rank={self.rank}, world_size={self.world_size})"


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of every input is the sum of all processes' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch over all processes.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm1d/2d/3d``. Each process computes the
    mean and the sum of squared deviations of its rows (two-pass, float32); one differentiable
    all-reduce exchanges ``(count, mean, M2)`` of every process, combined with Chan's parallel formula.
    Outside a multi-process group (or in eval mode) it is ordinary batch norm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        return self._global_forward(x)

    @torch.compiler.disable  # collectives inside autograd: run eagerly between compiled regions
    def _global_forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        c, world, rank = x.shape[1], dist.get_world_size(), dist.get_rank()
        dims = [0] + list(range(2, x.dim()))
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        mean_local = xf.mean(dims)  # (C,)
        m2_local = (xf - mean_local.view(shape)).square().sum(dims)  # (C,)
        row = torch.cat([count, mean_local, m2_local])  # (1 + 2C,)
        table = torch.stack([row if r == rank else torch.zeros_like(row) for r in range(world)])  # (W, 1+2C)
        table = _AllReduceSum.apply(table)  # every process's row; gradients flow back to each row's owner
        counts, means, m2s = table[:, :1], table[:, 1:c + 1], table[:, c + 1:]  # (W, 1), (W, C), (W, C)
        total = counts.sum()
        mean = (counts * means).sum(0) / total  # (C,)
        var = (m2s + counts * (means - mean).square()).sum(0) / total  # (C,) biased, for normalising
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), total.detach())
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        # momentum None: cumulative moving average, as nn.BatchNorm (no host-device copy either way)
        factor = 1.0 / self.num_batches_tracked.float() if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp_min(1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def convert_batchnorm(module: nn.Module, mode: str = "sync") -> nn.Module:
    """Replace every BatchNorm in ``module`` for distributed training (``BN_MODES``); parameters and buffers
    are shared with the originals, so call it before building the optimizer. Returns the module."""
    if mode not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {mode!r}")
    if mode == "local":
        return module
    if mode == "torch_sync":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child, mode)
    return module


def prepare_model(model: nn.Module, info: DistInfo, bn: str = "sync") -> nn.Module:
    """Make a ``CAGE`` model ready for ``info``'s process group: shard its augmentations, gather its keys,
    convert its batch norms and wrap it in DDP (returned; ``.module`` is the ``CAGE``). One process:
    the model unchanged."""
    if info.world_size == 1:
        return model
    model.augment = RankShard(model.augment, info.rank, info.world_size)
    if model.ambiguity is not None:
        model.ambiguity = RankShard(model.ambiguity, info.rank, info.world_size)
    model.gather = concat_all_gather
    convert_batchnorm(model, bn)
    model.to(info.device)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    # buffers (BN statistics, banks) stay identical on every process by construction: no per-step broadcast
    ddp = nn.parallel.DistributedDataParallel
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})
    return ddp(model, device_ids=device_ids, **no_sync)


def spawn(fn, world_size: int, *args, backend: str = "gloo", start_method: str = "spawn") -> None:
    """Run ``fn(*args)`` in ``world_size`` local processes that form a process group (``torchrun``-like
    environment variables are set, so :func:`init_from_env` works inside). With ``start_method="spawn"``
    ``fn`` must be picklable; ``"fork"`` starts faster (CPU only, from a single-threaded parent)."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(_spawned, args=(world_size, port, backend, fn, args), nprocs=world_size,
                                          join=True, start_method=start_method)


def _spawned(rank: int, world_size: int, port: int, backend: str, fn, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_from_env(backend=backend, device="cpu" if backend == "gloo" else "auto")
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def pretrain_distributed(config: PretrainConfig, x, info: DistInfo | None = None, bn: str = "sync",
                         run_dir: str | os.PathLike | None = None, resume: bool = False,
                         callback=None, tensorboard: bool = True) -> PretrainResult:
    """``cagelib.pretrain.loop.pretrain`` over the processes of ``info`` (default: :func:`init_from_env`).

    ``config.batch_size`` is the global batch; it must be divisible by the number of processes. The
    schedule, shuffling and augmentation draws are those of ``pretrain`` with the same config (it is the
    same loop, given a ``Processes``), so a run matches a single-process run up to floating-point summation
    order. Rank 0 holds the run folder's lock and writes the run folder (same files as ``pretrain``, plus
    ``distributed.json``); every process returns the history and calls ``callback(epoch, metrics)`` (the
    metrics averaged over processes) after every epoch. No health monitor.
    """
    info = info or init_from_env(device=config.device)
    world = info.world_size
    if config.batch_size % world:
        raise ValueError(f"pretrain_distributed: batch_size={config.batch_size} is not divisible by {world} processes")
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    processes = Processes(rank=info.rank, world_size=world, device=info.device,
                          prepare=functools.partial(prepare_model, info=info, bn=bn),
                          files={"distributed.json": {"world_size": world, "backend": info.backend, "bn": bn,
                                                      "device": str(info.device)}})
    return pretrain(config, x, run_dir, resume, callback, processes=processes, tensorboard=tensorboard)
