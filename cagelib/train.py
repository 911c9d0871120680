"""Self-supervised pretraining of a ``CAGE`` model: the epoch loop, checkpoints, exact resume, metrics.

A run lives in ``run_dir`` (default ``outputs/<run>/``):

    config.json      the full PretrainConfig (nested dataclasses as dicts)
    metrics.jsonl    one JSON object per finished epoch: epoch, loss components, acc, lr, seconds
    checkpoint.pt    model (encoders, momentum encoders, memory banks), optimizer, scheduler,
                     augmentation-generator state, epoch, history, data fingerprint

All three are written atomically (temp file in the same folder + ``os.replace``). The whole data set
sits on the device as one tensor; each epoch is shuffled by a generator seeded from ``(seed, epoch)``,
and augmentations draw from one device generator whose state is checkpointed, so a run interrupted
and resumed gives the same numbers as an uninterrupted one (CPU). The hot loop never syncs with the
host: losses are summed on the device and read once per epoch.
"""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path, atomic_write_text
from .contrast import CAGE, ContrastConfig
from .fast import FastConfig, make_fast_step, optimizer_options
from .model import AGCN, AGCNConfig
from .probes import resolve_device

CHECKPOINT, CONFIG, METRICS = "checkpoint.pt", "config.json", "metrics.jsonl"
# Fields that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = ("epochs", "device", "run_dir", "checkpoint_every", "progress", "fast")
_TWO_STREAM_METHODS = ("c3l", "cage")


@dataclass
class PretrainConfig:
    epochs: int = 20  # training epochs (paper: GE-CLR 200, CAGE 300)
    batch_size: int = 32  # mini-batch size; the last incomplete batch of an epoch is dropped (paper: 32)
    lr: float = 0.1  # initial SGD learning rate (paper: 0.1)
    sgd_momentum: float = 0.9  # SGD momentum (paper: 0.9)
    weight_decay: float = 1e-4  # SGD weight decay (paper: 1e-4)
    milestones: tuple = (10, 16)  # epochs where lr *= lr_gamma (paper: GE-CLR 100, 160; CAGE 150, 250)
    lr_gamma: float = 0.1  # learning-rate decay factor (paper: 0.1)
    seed: int = 0  # seeds model init, per-epoch shuffling and the augmentation generator
    device: str = "auto"  # "auto" (CUDA if available, else CPU), "cpu", "cuda:0", ...
    model: AGCNConfig = field(default_factory=AGCNConfig.small)  # encoder (paper: AGCNConfig())
    contrast: ContrastConfig = field(default_factory=ContrastConfig)  # method (paper: ContrastConfig.preset("cage"))
    run_dir: str = "outputs/pretrain"  # where config, metrics and checkpoint go
    checkpoint_every: int = 1  # write checkpoint.pt every this many epochs (and after the last)
    progress: bool = True  # show a tqdm progress bar
    fast: FastConfig | None = None  # fast step (cagelib.fast: bf16, compile, CUDA graph; CUDA only); None = train_step

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        if isinstance(self.model, dict):
            self.model = AGCNConfig(**self.model)
        if isinstance(self.contrast, dict):
            self.contrast = ContrastConfig.from_dict(self.contrast)
        if isinstance(self.fast, dict):
            self.fast = FastConfig(**self.fast)
        if self.epochs < 0 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("PretrainConfig: need epochs >= 0, batch_size >= 1, checkpoint_every >= 1")

    @classmethod
    def paper(cls, method: str = "cage", **overrides) -> "PretrainConfig":
        """The paper's settings: full A-GCN, batch 32, SGD lr 0.1; 300 epochs (x0.1 at 150, 250) for the
        two-stream methods (CAGE, C3L: "difficult to converge", more epochs), 200 (x0.1 at 100, 160) for
        the single-stream ones (GE-CLR and the ACL ablations)."""
        epochs, milestones = (300, (150, 250)) if method in _TWO_STREAM_METHODS else (200, (100, 160))
        base = cls(epochs=epochs, milestones=milestones, model=AGCNConfig(),
                   contrast=ContrastConfig.preset(method), run_dir=f"outputs/{method}")
        return replace(base, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        """Inverse of ``to_dict`` (also of its JSON round trip)."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"PretrainConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


@dataclass
class PretrainResult:
    run_dir: Path  # folder with config.json, metrics.jsonl, checkpoint.pt
    history: list  # one metrics dict per epoch (as in metrics.jsonl)
    model: CAGE  # the trained model (in train mode, on the training device)


def build_model(config: PretrainConfig) -> CAGE:
    """A freshly initialised ``CAGE`` (A-GCN encoders), seeded by ``config.seed`` without touching the
    caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return CAGE(config.contrast, lambda: AGCN(config.model))


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


def pretrain(config: PretrainConfig, x, run_dir: str | os.PathLike | None = None, resume: bool = False,
             callback: Callable[[int, dict], None] | None = None) -> PretrainResult:
    """Pretrain on Cartesian sequences ``x`` (N, T, V, 3) (tensor or array; labels are never used).

    ``run_dir`` overrides ``config.run_dir``. With ``resume=True`` an existing ``checkpoint.pt`` is
    continued up to ``config.epochs`` (the other settings and the data must be unchanged); without it an
    existing checkpoint is an error, never silently overwritten. ``callback(epoch, metrics)`` runs after
    every epoch (live plots).
    """
    run_dir = Path(run_dir if run_dir is not None else config.run_dir)
    device = resolve_device(config.device)
    data, steps, fingerprint, model, state = prepare_run(config, x, device, run_dir, resume, "pretrain")
    checkpoint_path = run_dir / CHECKPOINT
    optimizer, scheduler, generator, start, history = make_optimization(config, model, device, state)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(run_dir / CONFIG, json.dumps(config.to_dict(), indent=2))
    _write_metrics(run_dir / METRICS, history)

    bar = None
    if config.progress and start < config.epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=(config.epochs - start) * steps, desc=f"pretrain {config.contrast.method}")
    model.train()
    step_fn = make_step(model, optimizer, config, device)
    for epoch in range(start, config.epochs):
        began, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        sums = run_epoch(step_fn, data, config, epoch, generator, on_step=bar.update if bar is not None else None)
        scheduler.step()
        metrics = epoch_metrics(sums, steps, epoch, lr, began, run_dir)
        history.append(metrics)
        _write_metrics(run_dir / METRICS, history)
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            _save_checkpoint(checkpoint_path, model, optimizer, scheduler, generator, epoch + 1, history,
                             config, fingerprint)
        if bar is not None:
            bar.set_postfix(epoch=epoch + 1, loss=f"{metrics['loss']:.4f}")
        if callback is not None:
            callback(epoch + 1, metrics)
    if bar is not None:
        bar.close()
    return PretrainResult(run_dir=run_dir, history=history, model=model)


def prepare_run(config: PretrainConfig, x, device: torch.device, run_dir: Path, resume: bool,
                caller: str) -> tuple[torch.Tensor, int, list, CAGE, dict | None]:
    """The start shared by ``pretrain`` and ``pretrain_distributed``: the data on ``device``, steps per
    epoch, the data's fingerprint, the model (restored from ``run_dir``'s checkpoint when resuming) and
    the checkpoint's state (None for a fresh run). ``caller`` names the function in error messages."""
    data = _as_data(x, config, device)  # (N, T, V, 3) on the device
    steps = data.shape[0] // config.batch_size
    if steps == 0:
        raise ValueError(f"{caller}: {data.shape[0]} samples are fewer than batch_size={config.batch_size}")
    fingerprint = _fingerprint(data)
    model = build_model(config).to(device)
    checkpoint_path = run_dir / CHECKPOINT
    state = read_checkpoint(checkpoint_path, resume, config, fingerprint, device)
    if state is not None:
        load_state_strict(model, state["model"], checkpoint_path)
    return data, steps, fingerprint, model, state


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, config: PretrainConfig,
              device: torch.device) -> Callable:
    """``step(batch, generator, ids) -> metrics``: the fast step when ``config.fast`` is set, else ``train_step``."""
    if config.fast is not None:
        return make_fast_step(model, optimizer, config.fast, device)
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


def read_checkpoint(path: Path, resume: bool, config: PretrainConfig, fingerprint: list,
                    device: torch.device) -> dict | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite one without ``resume``
    and to resume with other settings or other data."""
    if not path.exists():
        return None
    if not resume:
        raise FileExistsError(f"{path} exists: pass resume=True to continue that run, or choose another run_dir")
    state = torch.load(path, map_location=device, weights_only=True)
    _check_resumable(path, state, config, fingerprint)
    return state


def make_optimization(config: PretrainConfig, model: nn.Module, device: torch.device, state: dict | None = None):
    """SGD, its MultiStepLR schedule and the augmentation generator, restored from ``state`` when given:
    ``(optimizer, scheduler, generator, start_epoch, history)``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.sgd_momentum,
                                weight_decay=config.weight_decay, **optimizer_options(config.fast, device))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.lr_gamma)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    if state is None:
        return optimizer, scheduler, generator, 0, []
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"].cpu())
    return optimizer, scheduler, generator, state["epoch"], list(state["history"])


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


def load_pretrained(run_dir: str | os.PathLike, map_location=None) -> CAGE:
    """The ``CAGE`` model of a run, rebuilt from ``config.json`` and loaded strictly from ``checkpoint.pt``."""
    run_dir = Path(run_dir)
    config_path, checkpoint_path = run_dir / CONFIG, run_dir / CHECKPOINT
    for path in (config_path, checkpoint_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: is {run_dir} a pretraining run folder?")
    try:
        config = PretrainConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{config_path}: not a valid PretrainConfig: {error}") from error
    model = build_model(config)
    state = torch.load(checkpoint_path, map_location=map_location or "cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{checkpoint_path}: not a cagelib pretraining checkpoint (no 'model' entry)")
    load_state_strict(model, state["model"], checkpoint_path)
    if map_location is not None:
        model.to(map_location)
    return model


def load_encoder(run_dir: str | os.PathLike, stream: str = "cartesian", map_location=None) -> nn.Module:
    """The pretrained query encoder of ``stream`` (no projection head), in eval mode, for evaluation.

    A spherical encoder expects ``spherical_coordinates`` input (``EvalConfig(input_transform="spherical")``).
    """
    return load_pretrained(run_dir, map_location).encoders(stream).eval()


def load_state_strict(module: nn.Module, state: dict, source: str | os.PathLike) -> None:
    """``module.load_state_dict(state)`` that fails loudly, naming ``source`` and every mismatch."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(f"{source}: checkpoint does not match the model; missing keys: {missing}; "
                         f"unexpected keys: {unexpected}; shape mismatches: {shapes}")
    module.load_state_dict(state, strict=True)


def _as_data(x, config: PretrainConfig, device: torch.device) -> torch.Tensor:
    data = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)
    if data.dim() != 4 or data.shape[2] != config.model.num_joints or data.shape[3] != 3:
        raise ValueError(f"pretrain expects Cartesian sequences (N, T, {config.model.num_joints}, 3), "
                         f"got {tuple(data.shape)}")
    if not torch.isfinite(data).all():
        raise ValueError("pretrain: the data contain NaN or infinite values")
    return data.to(device)


def _fingerprint(data: torch.Tensor) -> list:
    """Shape and two checksums of the data, to refuse resuming on different data."""
    d = data.double()
    return [list(data.shape), d.sum().item(), (d * d).sum().item()]


def _check_resumable(path: Path, state: dict, config: PretrainConfig, fingerprint: list) -> None:
    saved, now = dict(state["config"]), config.to_dict()
    changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES
                     and json.dumps(saved.get(k)) != json.dumps(now[k]))
    if changed:
        raise ValueError(f"{path}: cannot resume with changed settings {changed}; only "
                         f"{list(_RESUMABLE_CHANGES)} may change")
    saved_print = state["fingerprint"]
    same_data = list(saved_print[0]) == fingerprint[0] and np.allclose(saved_print[1:], fingerprint[1:],
                                                                        rtol=1e-9, atol=1e-6)
    if not same_data:
        raise ValueError(f"{path}: the data differ from those the run was started with "
                         f"(shape {state['fingerprint'][0]} vs {fingerprint[0]})")


def _save_checkpoint(path: Path, model, optimizer, scheduler, generator, epoch: int, history: list,
                     config: PretrainConfig, fingerprint: list) -> None:
    state = {
        "model": model.state_dict(),  # encoders, momentum encoders and memory banks (buffers)
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "epoch": epoch,
        "history": history,
        "config": config.to_dict(),
        "fingerprint": fingerprint,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _write_metrics(path: Path, history: list) -> None:
    _atomic_write_text(path, "".join(json.dumps(m) + "\n" for m in history))


_atomic_write_text = atomic_write_text
