"""A run's files: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``; exact resume; loading a trained model.

All three are written atomically (``cagelib.atomic``). A checkpoint holds the model (encoders, momentum
encoders, memory banks), optimizer, scheduler, augmentation-generator state, epoch, history, config and
a fingerprint of the data; resuming refuses other settings (except ``RESUMABLE_CHANGES``) or other data.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path, atomic_write_json, atomic_write_text
from .config import PretrainConfig, build_model

CHECKPOINT, CONFIG, METRICS = "checkpoint.pt", "config.json", "metrics.jsonl"
# Fields that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "device", "run_dir", "checkpoint_every", "progress", "fast", "health")


def write_config(run_dir: Path, config: PretrainConfig) -> None:
    """``config.json``: the full PretrainConfig (nested dataclasses as dicts)."""
    atomic_write_json(run_dir / CONFIG, config.to_dict())


def write_metrics(path: Path, history: list) -> None:
    """``metrics.jsonl``: one JSON object per finished epoch."""
    atomic_write_text(path, "".join(json.dumps(m) + "\n" for m in history))


def read_checkpoint(path: Path, resume: bool, config: PretrainConfig, fingerprint: list,
                    device: torch.device) -> dict | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite one without ``resume``
    and to resume with other settings or other data."""
    if not path.exists():
        return None
    if not resume:
        raise FileExistsError(f"{path} exists: pass resume=True to continue that run, or choose another run_dir")
    state = torch.load(path, map_location=device, weights_only=True)
    check_resumable(path, state, config, fingerprint)
    return state


def save_checkpoint(path: Path, model, optimizer, scheduler, generator, epoch: int, history: list,
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


def data_fingerprint(data: torch.Tensor) -> list:
    """Shape and two checksums of the data, to refuse resuming on different data."""
    d = data.double()
    return [list(data.shape), d.sum().item(), (d * d).sum().item()]


def check_resumable(path: Path, state: dict, config: PretrainConfig, fingerprint: list) -> None:
    saved, now = PretrainConfig.from_dict(dict(state["config"])).to_dict(), config.to_dict()  # fills fields added since
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES
                     and json.dumps(saved.get(k)) != json.dumps(now[k]))
    if changed:
        raise ValueError(f"{path}: cannot resume with changed settings {changed}; only "
                         f"{list(RESUMABLE_CHANGES)} may change")
    saved_print = state["fingerprint"]
    same_data = list(saved_print[0]) == fingerprint[0] and np.allclose(saved_print[1:], fingerprint[1:],
                                                                        rtol=1e-9, atol=1e-6)
    if not same_data:
        raise ValueError(f"{path}: the data differ from those the run was started with "
                         f"(shape {state['fingerprint'][0]} vs {fingerprint[0]})")


def load_pretrained(run_dir: str | os.PathLike, map_location=None) -> nn.Module:
    """The method (e.g. ``CAGE``) of a run, rebuilt from ``config.json`` and loaded strictly from ``checkpoint.pt``."""
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
    encoders = load_pretrained(run_dir, map_location).encoders()
    if stream not in encoders:
        raise KeyError(f"{run_dir}: the run has streams {tuple(encoders)}, not {stream!r}")
    return encoders[stream].eval()


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
