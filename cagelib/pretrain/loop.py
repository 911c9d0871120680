"""Self-supervised pretraining of a method (``cagelib.methods.registry``): the epoch loop and exact resume.

A run lives in ``run_dir`` (default ``outputs/<run>/``): ``config.json``, ``metrics.jsonl`` and
``checkpoint.pt`` (``cagelib.pretrain.checkpoint``), ``provenance.json`` (where each start of the run came
from: ``cagelib.provenance``) and, with the ``tensorboard`` package, ``tensorboard/`` event files
(``cagelib.pretrain.logger``). The whole data set sits on the device as one tensor;
each epoch is shuffled by a generator seeded from ``(seed, epoch)``, and augmentations draw from one
device generator whose state is checkpointed, so a run interrupted and resumed gives the same numbers
as an uninterrupted one (CPU). The hot loop never syncs with the host: losses are summed on the device
and read once per epoch.

One loop serves one process and a DDP process group (as MoCo's ``main_worker``):
``cagelib.pretrain.distributed.pretrain_distributed`` calls ``pretrain`` with ``processes=`` (a
``Processes``): the model is readied for the group (global batch sharded, keys gathered, batch norms
converted, DDP), epoch metrics are averaged over processes, and rank 0 alone holds the run folder's lock and
writes its files.

Training health (``cagelib.pretrain.health``, ``config.health``; None = off): a ``HealthMonitor`` on
fixed corpus windows and views measures retrieval, alignment, uniformity, spread (and k-NN when
``health_labels`` are given) before training and after every epoch. After an epoch they are merged into
that epoch's ``metrics.jsonl`` record (and the history), so ``metrics.jsonl`` keeps one line per trained
epoch. Before training they go to ``health_init.json`` in the run folder (with ``"epoch": 0`` and
``"chance"``, retrieval's chance level 1 / windows), written once by the
fresh run and read back on resume (never recomputed from a resumed model), also returned as
``PretrainResult.health_init`` and passed to ``callback.health_init(metrics)`` when the callback has it. The monitor draws from its own
generator and runs the model in eval mode, so the losses are bitwise those of a run with health off.
A run over processes skips health.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..device import resolve_device
from ..atomic import atomic_write_json
from ..errors import CheckpointError, NonFiniteError
from .checkpoint import CHECKPOINT, data_fingerprint, load_state_strict, read_checkpoint, save_checkpoint, write_config
from .config import PretrainConfig, PretrainResult, build_model
from .fast import make_fast_step, optimizer_options
from .health import HealthMonitor
from .logger import RunLogger, record_provenance
from .run_lock import RunLock, lock_on_rank_0

HEALTH_INIT = "health_init.json"  # the health metrics before training (epoch 0)

__all__ = ["PretrainConfig", "PretrainResult", "build_model", "pretrain", "check_data", "train_step", "epoch_seed",
           "prepare_run", "make_step", "run_epoch", "make_optimization", "epoch_metrics", "announce_epoch",
           "Processes"]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
               generator: torch.Generator, sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One SGD step on ``batch`` (N, T, V, 3); returns the model's metrics, all detached (no host sync)."""
    optimizer.zero_grad(set_to_none=True)
    out = model(batch, generator, sample_ids)
    out["loss"].backward()
    optimizer.step()
    out["loss"] = out["loss"].detach()
    return out


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the shuffle of ``epoch``: a distinct stream per (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class Processes:
    """The process group a run spans (``pretrain(..., processes=)``), built by ``pretrain_distributed``.

    ``prepare(model) -> module``: readies the built (and restored) model for the group and returns what the
    steps call (``distributed.prepare_model``: ``RankShard`` on the augmentations, gathered keys, converted
    batch norms, DDP). ``files``: JSON files rank 0 writes beside ``config.json`` (``distributed.json``).
    A run over processes skips the health monitor, shows one printed line per epoch (rank 0) instead of a
    bar and gives the fast step no planned-steps hint, as ``pretrain_distributed`` always did.
    """
    rank: int
    world_size: int
    device: torch.device
    prepare: Callable[[nn.Module], nn.Module]
    files: dict[str, dict] = field(default_factory=dict)
    caller: str = "pretrain_distributed"  # names the entry point in error messages


def pretrain(config: PretrainConfig, x, run_dir: str | os.PathLike | None = None, resume: bool = False,
             callback: Callable[[int, dict], None] | None = None, health_labels=None, *,
             processes: Processes | None = None, tensorboard: bool = True) -> PretrainResult:
    """Pretrain on Cartesian sequences ``x`` (N, T, V, 3) (tensor or array; labels are never used).

    ``run_dir`` overrides ``config.run_dir``. With ``resume=True`` an existing ``checkpoint.pt`` is
    continued up to ``config.epochs`` (the other settings and the data must be unchanged); without it an
    existing checkpoint is an error, never silently overwritten. ``callback(epoch, metrics)`` runs after
    every epoch (live plots); a callback with a ``health_init(metrics)`` method also gets the health
    before training. ``health_labels = (x, y, groups)``: labelled TRAINING windows (of a task's fold, never its test
    side) for the health monitor's k-NN; None = no ``knn_*`` metrics. ``processes``: the DDP group the run
    spans (``pretrain_distributed`` passes it; None = this process alone, refused inside a multi-process
    group). ``tensorboard=False``: ``metrics.jsonl`` only, no event files.

    The run folder is locked for the whole run (``cagelib.pretrain.run_lock.RunLock``; by rank 0 over
    processes): a second process on the same folder stops with ``RunFolderBusyError`` naming the holder,
    and a run whose folder is replaced meanwhile (a rerun) stops with ``RunFolderReplacedError`` instead of
    writing into it. A run that fails before its first checkpoint leaves no folder behind when it created
    the folder.
    """
    run_dir = Path(run_dir if run_dir is not None else config.run_dir)
    config = config.with_options()  # what the run saves: its method's options written out
    if processes is None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise RuntimeError(f"pretrain: called inside a process group of {dist.get_world_size()} processes; use "
                           "cagelib.pretrain.distributed.pretrain_distributed, which shards the global batch, "
                           "converts the batch norms and wraps the model in DDP")
    lock = (RunLock(run_dir).acquire() if processes is None else  # over processes: rank 0's, None elsewhere
            lock_on_rank_0(run_dir, processes.rank, processes.world_size, processes.device, processes.caller))
    try:
        return _run(config, x, run_dir, resume, callback, health_labels, processes, lock, tensorboard)
    except BaseException:
        if lock is not None and lock.created and lock.owns() and not (run_dir / CHECKPOINT).exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # half-made, by this call
        raise
    finally:
        if lock is not None:
            lock.release()


def _run(config: PretrainConfig, x, run_dir: Path, resume: bool, callback, health_labels,
         processes: Processes | None, lock: RunLock | None, tensorboard: bool) -> PretrainResult:
    """The epoch loop of one process (``processes`` None) or of one rank of a group."""
    alone = processes is None
    device = resolve_device(config.device) if alone else processes.device
    multi = not alone and processes.world_size > 1
    lead = lock is not None  # this process writes the run folder
    data, steps, fingerprint, model, state = prepare_run(config, x, device, run_dir, resume,
                                                         "pretrain" if alone else processes.caller)
    checkpoint_path = run_dir / CHECKPOINT
    stepped = model if alone else processes.prepare(model)  # what the steps call (DDP over processes)
    optimizer, scheduler, generator, start, history = make_optimization(config, model, device, state, checkpoint_path)
    logger, monitor, health_init, bar = None, None, None, None
    try:
        if lead:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock.check()
            write_config(run_dir, config)
            for name, content in ({} if alone else processes.files).items():
                atomic_write_json(run_dir / name, content)
            record_provenance(run_dir, resumed=state is not None, start_epoch=start, device=device,
                              world_size=1 if alone else processes.world_size)
            logger = RunLogger(run_dir, history, start, tensorboard=tensorboard)  # writes metrics.jsonl
        if alone and config.health is not None:
            monitor = HealthMonitor(data, getattr(model, "augment", _identity_views), config.health, health_labels,
                                    device)
            lock.check()
            health_init = _health_init(run_dir, monitor, model, fresh=state is None)
            if health_init is not None and state is None:
                logger.log_health_init(health_init)
            if health_init is not None and hasattr(callback, "health_init"):
                callback.health_init(health_init)

        if alone and config.progress and start < config.epochs:
            bar = tqdm(total=(config.epochs - start) * steps, desc=f"pretrain {config.contrast.method}")
        stepped.train()
        step_fn = make_step(stepped, optimizer, config, device,
                            planned_steps=(config.epochs - start) * steps if alone else None)
        shard = None if not multi else functools.partial(_rank_queries, rank=processes.rank,
                                                         size=config.batch_size // processes.world_size)
        for epoch in range(start, config.epochs):
            began, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
            announce_epoch(model, epoch)
            sums = run_epoch(step_fn, data, config, epoch, generator, query_ids=shard,
                             on_step=bar.update if bar is not None else None)
            scheduler.step()
            # over processes, the epoch's one collective outside the steps: the mean of the processes' means
            metrics = epoch_metrics(sums, steps, epoch, lr, began, run_dir, _mean_over_processes if multi else None)
            if monitor is not None:
                metrics.update(monitor(model))
            history.append(metrics)
            if lead:
                lock.check()  # a rerun may have replaced the folder meanwhile: never write into its files
                logger.log_epoch(metrics)  # metrics.jsonl (and TensorBoard)
                if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
                    lock.check()
                    save_checkpoint(checkpoint_path, model, optimizer, scheduler, generator, epoch + 1, history,
                                     config, fingerprint)
            if multi:
                dist.barrier()  # the checkpoint is complete before anyone goes on (or resumes from it)
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{metrics['loss']:.4f}")
            elif config.progress and lead:
                print(f"epoch {epoch + 1}/{config.epochs} loss {metrics['loss']:.4f} ({metrics['seconds']:.1f} s)")
            if callback is not None:
                callback(epoch + 1, metrics)
        if bar is not None:
            bar.close()
    except BaseException:
        if logger is not None:
            logger.close(quiet=True)  # the run's own error is the one to see
        raise
    if logger is not None:
        logger.close()
    return PretrainResult(run_dir=run_dir, history=history, model=model, health_init=health_init)


def _rank_queries(ids: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    return ids[rank * size:(rank + 1) * size]  # (B / W,) this process's queries of the global batch (B,)


def _mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(values)
    return values / dist.get_world_size()


def announce_epoch(model: nn.Module, epoch: int) -> None:
    """Tell a method that has ``set_epoch(epoch)`` (AimCLR: its mining start) the 0-based epoch about to run;
    other methods are untouched. Called before every epoch, also the first one of a resumed run."""
    if hasattr(model, "set_epoch"):
        model.set_epoch(epoch)


def _identity_views(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x


def _health_init(run_dir: Path, monitor: HealthMonitor, model: nn.Module, fresh: bool) -> dict | None:
    """The epoch-0 health: measured and written to ``health_init.json`` by a fresh run; read back on
    resume (None if that run had none)."""
    path = run_dir / HEALTH_INIT
    if not fresh:
        return json.loads(path.read_text()) if path.is_file() else None
    health = {"epoch": 0, "chance": monitor.chance, **monitor(model)}  # chance: retrieval's, 1 / windows
    atomic_write_json(path, health)
    return health


def check_data(config: PretrainConfig, x, caller: str = "pretrain") -> None:
    """Refuse, without creating or writing anything, data that ``pretrain`` would refuse: not (N, T, V, 3),
    NaN or inf, fewer windows than ``batch_size``. For callers that write files before calling ``pretrain``
    (so that a refused run leaves no half-made run folder)."""
    data = _as_data(x, config, torch.device("cpu"))
    if data.shape[0] // config.batch_size == 0:
        raise ValueError(f"{caller}: {data.shape[0]} samples are fewer than batch_size={config.batch_size}")


def prepare_run(config: PretrainConfig, x, device: torch.device, run_dir: Path, resume: bool,
                caller: str) -> tuple[torch.Tensor, int, list, nn.Module, dict | None]:
    """The start shared by ``pretrain`` and ``pretrain_distributed``: the data on ``device``, steps per
    epoch, the data's fingerprint, the model (restored from ``run_dir``'s checkpoint when resuming) and
    the checkpoint's state (None for a fresh run). ``caller`` names the function in error messages."""
    data = _as_data(x, config, device)  # (N, T, V, 3) on the device
    steps = data.shape[0] // config.batch_size
    if steps == 0:
        raise ValueError(f"{caller}: {data.shape[0]} samples are fewer than batch_size={config.batch_size}")
    fingerprint = data_fingerprint(data)
    model = build_model(config).to(device)
    checkpoint_path = run_dir / CHECKPOINT
    state = read_checkpoint(checkpoint_path, resume, config, fingerprint, device)
    if state is not None:
        load_state_strict(model, state["model"], checkpoint_path)
    return data, steps, fingerprint, model, state


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, config: PretrainConfig,
              device: torch.device, planned_steps: int | None = None) -> Callable:
    """``step(batch, generator, ids) -> metrics``: the fast step when ``config.fast`` is set, else ``train_step``.
    ``planned_steps``: the steps this run will take (the fast step's automatic compile decision on CPU)."""
    if config.fast is not None:
        return make_fast_step(model, optimizer, config.fast, device, planned_steps)
    return functools.partial(train_step, model, optimizer)


def run_epoch(step_fn: Callable, data: torch.Tensor, config: PretrainConfig, epoch: int,
              generator: torch.Generator, query_ids: Callable | None = None,
              on_step: Callable | None = None) -> dict[str, torch.Tensor]:
    """One epoch of ``step_fn(batch, generator, ids)`` over ``data`` (N, T, V, 3) shuffled by a generator
    seeded from ``(seed, epoch)``; the last incomplete batch is dropped. ``query_ids(ids)`` picks the ids
    of this process's queries (distributed). Returns per-metric sums over the steps, on the device."""
    shuffle = torch.Generator(device=data.device)
    shuffle.manual_seed(epoch_seed(config.seed, epoch))
    order = torch.randperm(data.shape[0], generator=shuffle, device=data.device)  # (N,) same on every process
    sums: dict[str, torch.Tensor] = {}
    for step in range(data.shape[0] // config.batch_size):
        ids = order[step * config.batch_size:(step + 1) * config.batch_size]  # (B,) the (global) batch
        out = step_fn(data[ids], generator, ids if query_ids is None else query_ids(ids))
        for key, value in out.items():
            sums[key] = sums[key] + value if key in sums else value.clone()
        if on_step is not None:
            on_step(1)
    return sums


def make_optimization(config: PretrainConfig, model: nn.Module, device: torch.device, state: dict | None = None,
                      source: str | os.PathLike = CHECKPOINT):
    """SGD (or AdamW, ``config.optimizer``), its MultiStepLR schedule and the augmentation generator, restored from ``state`` when given:
    ``(optimizer, scheduler, generator, start_epoch, history)``. An optimizer state of another model or
    configuration is a ``CheckpointError`` naming ``source`` (the checkpoint), not torch's message."""
    if config.optimizer == "adamw":  # MAMP's optimizer (betas of its code)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95),
                                      weight_decay=config.weight_decay, **optimizer_options(config.fast, device))
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.sgd_momentum,
                                    weight_decay=config.weight_decay, **optimizer_options(config.fast, device))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.lr_gamma)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    if state is None:
        return optimizer, scheduler, generator, 0, []
    _load_optimizer_state(optimizer, state["optimizer"], source)
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"].cpu())
    return optimizer, scheduler, generator, state["epoch"], list(state["history"])


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved, source) -> None:
    """``optimizer.load_state_dict(saved)``, refusing (``CheckpointError`` naming ``source``) a state of another
    model or configuration: other parameter groups or counts (torch's raw ``ValueError`` / ``KeyError``), or
    per-parameter buffers (momentum, Adam moments) whose shapes differ from the parameters' (torch would
    accept those and fail at the first step)."""
    other = ("belongs to another model or configuration than the run's config.json", "resume only with the "
             "checkpoint.pt written by this run (same config.json), or start a new run_dir")
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        raise CheckpointError(source, "entry 'optimizer'", f"{other[0]} ({type(err).__name__}: {err})",
                              other[1]) from None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        for name, buffer in optimizer.state.get(param, {}).items():
            if torch.is_tensor(buffer) and buffer.dim() > 0 and tuple(buffer.shape) != tuple(param.shape):
                raise CheckpointError(source, "entry 'optimizer'", f"{other[0]} (parameter {i}: {name} has shape "
                                      f"{tuple(buffer.shape)}, the model's parameter {tuple(param.shape)})", other[1])


def epoch_metrics(sums: dict[str, torch.Tensor], steps: int, epoch: int, lr: float, began: float,
                  run_dir: Path, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """One epoch's metrics from per-step sums (the epoch's one host sync); ``reduce`` averages over
    processes. Raises on a non-finite loss."""
    names = sorted(sums)
    values = torch.stack([sums[k].float() for k in names]) / steps  # (len(names),)
    if reduce is not None:
        values = reduce(values)
    metrics = {"epoch": epoch + 1, **dict(zip(names, values.tolist())), "lr": lr,
               "seconds": time.perf_counter() - began}
    if not np.isfinite(metrics["loss"]):
        raise FloatingPointError(f"pretraining: the loss became {metrics['loss']} in epoch {epoch + 1} "
                                 f"({run_dir}); lower lr or check the data")
    return metrics


def _as_data(x, config: PretrainConfig, device: torch.device) -> torch.Tensor:
    data = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)
    if data.dim() != 4 or data.shape[2] != config.model.num_joints or data.shape[3] != 3:
        raise ValueError(f"pretrain expects Cartesian sequences (N, T, {config.model.num_joints}, 3), "
                         f"got {tuple(data.shape)}")
    if not torch.isfinite(data).all():
        window = int((~torch.isfinite(data.reshape(len(data), -1)).all(dim=1)).nonzero()[0, 0])
        raise NonFiniteError("pretrain data", f"window {window}", "contains NaN or inf",
                             'drop it, or load the data with nan_policy="interpolate" (cagelib.data.gaps)')
    return data.to(device)
