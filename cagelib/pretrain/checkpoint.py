"""A run's files: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``; exact resume; loading a trained model.

All three are written atomically (``cagelib.atomic``). A checkpoint holds the model (encoders, momentum
encoders, memory banks), optimizer, scheduler, augmentation-generator state, epoch, history, config and
a fingerprint of the data; resuming refuses other settings (except ``RESUMABLE_CHANGES``) or other data.

The data fingerprint is the shape plus the SHA-256 of the float32 data in C order: reordered windows,
left and right swapped, any changed value are other data. Checkpoints written before it (fingerprint
``[shape, sum, sum of squares]``) stay resumable, checked the old way (shape and sums only); their next
save stores the new fingerprint. A checkpoint that cannot be read (empty, truncated, not cagelib's,
holding pickled objects), lacks an entry or belongs to other settings/data raises ``CheckpointError``
naming the file and the entry; checkpoints are only ever loaded weights-only.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path, atomic_write_json, atomic_write_text, remove_stale_temp_files
from ..errors import CheckpointError
from .config import PretrainConfig, build_model, check_same_run

CHECKPOINT, CONFIG, METRICS = "checkpoint.pt", "config.json", "metrics.jsonl"
# Fields that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "device", "run_dir", "checkpoint_every", "progress", "fast", "health")
# Entries every resumable checkpoint has (save_checkpoint may write more).
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "generator", "epoch", "history", "config", "fingerprint")
FINGERPRINT_FORMAT = 2


def write_config(run_dir: Path, config: PretrainConfig) -> None:
    """``config.json``: the full PretrainConfig (nested dataclasses as dicts)."""
    atomic_write_json(run_dir / CONFIG, config.to_dict())


def write_metrics(path: Path, history: list) -> None:
    """``metrics.jsonl``: one JSON object per finished epoch."""
    atomic_write_text(path, "".join(json.dumps(m) + "\n" for m in history))


def read_checkpoint(path: Path, resume: bool, config: PretrainConfig, fingerprint: dict,
                    device: torch.device) -> dict | None:
    """The checkpoint to resume from (None for a fresh run); refuses to overwrite one without ``resume``
    and to resume with other settings or other data."""
    if not path.exists():
        return None
    if not resume:
        raise FileExistsError(f"{path} exists: pass resume=True to continue that run, or choose another run_dir")
    remove_stale_temp_files(path.parent)  # left by a run killed while writing
    state = load_checkpoint_file(path, device)
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(path, f"entry {missing[0]!r}", f"missing (the checkpoint lacks {missing}); it was "
                              "not written by cagelib's pretrain, or by a version without resume",
                              "start a new run_dir")
    check_resumable(path, state, config, fingerprint)
    return state


def load_checkpoint_file(path: Path, map_location) -> dict:
    """``torch.load(path, weights_only=True)`` as a dict, or ``CheckpointError`` naming ``path``."""
    if path.stat().st_size == 0:
        raise CheckpointError(path, None, "is empty (a write was interrupted, or the file was truncated)",
                              "delete it, or restore it from a copy")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):
            raise CheckpointError(path, None, "holds Python objects other than tensors and plain containers; "
                                  "cagelib loads checkpoints weights-only and will not unpickle it (it was not "
                                  "written by cagelib, or was modified)") from None
        raise CheckpointError(path, None, "is not a torch checkpoint (corrupt, or another kind of file)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        kind = "corrupt" if zipfile.is_zipfile(path) else "truncated, or not a torch checkpoint"
        raise CheckpointError(path, None, f"cannot be read: {kind} (torch.load raised {type(err).__name__})",
                              "delete it, or restore it from a copy") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, None, f"is not a cagelib checkpoint (holds a {type(state).__name__}, not a dict)")
    return state


def save_checkpoint(path: Path, model, optimizer, scheduler, generator, epoch: int, history: list,
                     config: PretrainConfig, fingerprint: dict) -> None:
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


def data_fingerprint(data: torch.Tensor) -> dict:
    """Shape and SHA-256 of the data as contiguous float32 (plus the old sums, to check old checkpoints).

    Any reordering, mirroring or changed value gives another hash. Cost: one copy to the host and the
    hash, measured 0.7 s for 10,000 windows of 60 frames (115 MB) on one busy CPU core.
    """
    d = data.detach()
    array = d.to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.sha256(memoryview(array).cast("B")).hexdigest()
    d64 = d.double()
    return {"format": FINGERPRINT_FORMAT, "shape": list(data.shape), "dtype": "float32", "sha256": digest,
            "sum": d64.sum().item(), "sum_sq": (d64 * d64).sum().item()}


def _same_data(saved, now: dict) -> bool:
    if isinstance(saved, dict) and saved.get("format") == FINGERPRINT_FORMAT:
        return saved.get("shape") == now["shape"] and saved.get("sha256") == now["sha256"]
    # the format before the hash: [shape, sum, sum of squares] (cannot see reordering or mirroring)
    return (list(saved[0]) == now["shape"]
            and np.allclose(saved[1:], [now["sum"], now["sum_sq"]], rtol=1e-9, atol=1e-6))


def check_resumable(path: Path, state: dict, config: PretrainConfig, fingerprint: dict) -> None:
    try:
        saved = PretrainConfig.load(dict(state["config"]), path).to_dict()  # of any schema (upgrade_config)
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(path, "entry 'config'", f"not a valid PretrainConfig ({error})") from None
    now = config.with_options().to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES
                     and json.dumps(saved.get(k)) != json.dumps(now[k]))
    if changed:
        raise CheckpointError(path, None, f"cannot resume with changed settings {changed}; only "
                              f"{list(RESUMABLE_CHANGES)} may change")
    saved_print = state["fingerprint"]
    try:
        same_data = _same_data(saved_print, fingerprint)
        saved_shape = saved_print["shape"] if isinstance(saved_print, dict) else list(saved_print[0])
    except (KeyError, IndexError, TypeError, ValueError):
        raise CheckpointError(path, "entry 'fingerprint'", f"unreadable fingerprint {str(saved_print)[:80]}") from None
    if not same_data:
        raise CheckpointError(path, None, f"the data differ from those the run was started with (shape "
                              f"{saved_shape} vs {fingerprint['shape']}; same shape means reordered, mirrored or "
                              "changed values)", "pass the same data in the same order, or start a new run_dir")


def load_pretrained(run_dir: str | os.PathLike, map_location=None) -> nn.Module:
    """The method (e.g. ``CAGE``) of a run, rebuilt from ``config.json`` and loaded strictly from ``checkpoint.pt``."""
    run_dir = Path(run_dir)
    config_path, checkpoint_path = run_dir / CONFIG, run_dir / CHECKPOINT
    for path in (config_path, checkpoint_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: is {run_dir} a pretraining run folder?")
    try:
        config = PretrainConfig.load(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{config_path}: not a valid PretrainConfig: {error}") from error
    model = build_model(config)
    state = load_checkpoint_file(checkpoint_path, map_location or "cpu")
    if "model" not in state:
        raise CheckpointError(checkpoint_path, "entry 'model'", "missing: not a cagelib pretraining checkpoint")
    check_same_run(config_path, config, checkpoint_path, state)  # another run's checkpoint.pt is refused
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
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(source, "entry 'model'", "is not a state dict (names -> tensors)")
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(source, None, f"checkpoint does not match the model; missing keys: {missing}; "
                              f"unexpected keys: {unexpected}; shape mismatches: {shapes}")
    module.load_state_dict(state, strict=True)
