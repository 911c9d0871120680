"""The notebooks' workbench: where runs go, and one pretraining run of an experiment in a run folder.

Paths are resolved against the repository (``repo_root``), never the notebook's folder; ``outputs_dir`` is
``$CAGELIB_OUTPUTS`` or ``<repo>/outputs``. ``pretrain_run(exp, seed)`` pretrains one seed of an experiment
(``cagelib.experiment``) into a run folder and records it there (``experiment.json``: the tree, the seed,
the variant, the data); ``run_experiment`` reads that record back, also from a ``workbench.json`` written
before the tree (``legacy_experiment``).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_json
from ..data.tasks import GaitTask, emotion_data
from ..errors import DataFileError
from ..experiment import Experiment, load
from ..pretrain.config import config_identity
from ..pretrain.loop import PretrainResult, check_data, pretrain
from .runner import health_labels

EXPERIMENT_FILE, LEGACY_FILE, EVALUATION_FILE = "experiment.json", "workbench.json", "evaluation.json"


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository folder: the nearest parent of ``start`` (default: the working directory) holding
    ``pyproject.toml`` and ``cagelib/``; else the checkout the package was imported from (an editable
    install); else, for a regular install (site-packages), the working directory itself, so relative
    paths such as ``outputs/`` land where the user is, never inside site-packages."""
    here = Path(start or Path.cwd()).resolve()
    package_parent = Path(__file__).resolve().parents[2]
    for folder in (here, *here.parents, package_parent):
        if (folder / "pyproject.toml").is_file() and (folder / "cagelib").is_dir():
            return folder
    return here


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path as is; a relative one relative to the repository (not the notebook's folder)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(repo_root() / path))


def outputs_dir(outputs: str | os.PathLike | None = "") -> Path:
    """``outputs`` if given, else ``$CAGELIB_OUTPUTS``, else ``<repo>/outputs``."""
    chosen = outputs or os.environ.get("CAGELIB_OUTPUTS") or "outputs"
    return resolve_path(chosen)


def run_data(exp: Experiment) -> GaitTask:
    """The first task of ``exp.data`` and its pretraining corpus (the embedded set)."""
    return emotion_data(exp.data)


def new_run_dir(method: str, seed: int = 0, outputs: str | os.PathLike | None = "") -> Path:
    """A fresh ``outputs/runs/<method>-s<seed>-<date>-<time>`` folder name (not created)."""
    base = outputs_dir(outputs) / "runs" / f"{method}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON; a broken file is a ValueError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def run_record(exp: Experiment, seed: int, variant: str | None = None, data: dict | None = None) -> dict:
    """What ``experiment.json`` of a run folder holds: the resolved tree, the seed, the variant, the data."""
    return {"experiment": exp.to_dict(), "seed": seed, "variant": variant or exp.pretrain.contrast.method,
            "data": data}


def run_key(exp: Experiment, seed: int) -> dict:
    """What makes two runs the same run: the data and the pretraining's identity (``config_identity``)."""
    return {"data": json.loads(json.dumps(asdict(exp.data))), "pretrain": config_identity(exp.pretrain_config(seed, ""))}


def legacy_experiment(settings: dict, source=None) -> Experiment:
    """The experiment of a ``workbench.json`` written before the tree: its ``RunSettings`` fields mapped onto the
    ``notebook`` preset; its runs predate ``representation`` and ``views`` when those are missing (first-frame
    windows, the paper's views)."""
    s = {"representation": "first_frame", "views": "paper", "milestones": [], "epochs": 2, **settings}
    epochs = int(s["epochs"])  # milestones [] then meant 50 % and 80 % of the epochs, rounded to the nearest
    then = sorted({m for m in (round(epochs * f) for f in (0.5, 0.8)) if 0 < m < epochs})
    overrides = {"pretrain.contrast.method": s.get("method", "cage"), "seeds": [int(s.get("seed", 0))],
                 "pretrain.milestones": list(s["milestones"]) or then,
                 "pretrain.model": "small" if s.get("encoder", "small") == "small" else "paper",
                 "pretrain.fast": {} if s.get("fast") else "none", "data.representation": s["representation"],
                 "pretrain.contrast.views": s["views"]}
    moved = {"epochs": "pretrain.epochs", "batch_size": "pretrain.batch_size", "lr": "pretrain.lr",
             "device": "pretrain.device", "queue_size": "pretrain.contrast.queue_size",
             "momentum": "pretrain.contrast.momentum", "ambiguity_speed": "pretrain.contrast.ambiguity_speed",
             "speed_up_rate": "pretrain.contrast.speed_up_rate", "speed_down_rate": "pretrain.contrast.speed_down_rate",
             "window": "data.window", "max_pretrain_windows": "data.max_pretrain_windows", "corpus": "data.corpus"}
    overrides.update({target: s[name] for name, target in moved.items() if name in s})
    try:
        return load("notebook", overrides, source=str(source) if source else "workbench.json")
    except ValueError as err:
        raise DataFileError(source, "settings", f"not a readable RunSettings ({err})") from None


def run_experiment(run_dir: str | os.PathLike) -> tuple[Experiment, int, str] | None:
    """``(experiment, seed, variant)`` of a run folder made by the workbench (``experiment.json``, or a
    ``workbench.json`` of before the tree), else None. A broken record is a ``DataFileError`` naming the file."""
    run_dir = Path(run_dir)
    path = run_dir / EXPERIMENT_FILE
    if path.is_file():
        saved = read_json(path)
        if not isinstance(saved, dict) or "experiment" not in saved:
            raise DataFileError(path, "experiment", "missing: a run's experiment.json holds its tree under "
                                "'experiment'", "restore the file, or delete it")
        exp = Experiment.from_dict(saved["experiment"], path)
        return exp, int(saved.get("seed", exp.seeds[0])), str(saved.get("variant") or exp.pretrain.contrast.method)
    legacy = run_dir / LEGACY_FILE
    if legacy.is_file():
        saved = read_json(legacy)
        if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
            raise DataFileError(legacy, "settings", "missing (a workbench.json holds the run's RunSettings under "
                                "'settings')", "restore the file from a copy, or delete it")
        exp = legacy_experiment(saved["settings"], legacy)
        return exp, exp.seeds[0], exp.pretrain.contrast.method
    return None


def pretrain_run(exp: Experiment, seed: int | None = None, run_dir: str | os.PathLike = "",
                 outputs: str | os.PathLike | None = "", callback=None, progress: bool = True,
                 variant: str | None = None) -> PretrainResult:
    """Pretrain ``exp`` (its first seed, or ``seed``) on its corpus into ``run_dir`` (default: a new
    ``outputs/runs/...`` folder). An existing run in ``run_dir`` of the same experiment is continued (up to its
    epochs); another experiment's run there raises. Returns ``cagelib.pretrain.config.PretrainResult``."""
    seed = exp.seeds[0] if seed is None else seed
    run_dir = resolve_path(run_dir) if run_dir else new_run_dir(exp.pretrain.contrast.method, seed, outputs)
    saved = run_experiment(run_dir) if run_dir.is_dir() else None
    if saved is not None and run_key(saved[0], saved[1]) != run_key(exp, seed):
        raise ValueError(f"{run_dir}: the run there belongs to another experiment; choose another run_dir")
    data = run_data(exp)
    config = exp.pretrain_config(seed, run_dir, progress)
    check_data(config, data.pretrain_x)  # a refused run leaves no folder holding only experiment.json
    atomic_write_json(run_dir / EXPERIMENT_FILE, run_record(exp, seed, variant, data.summary()))
    return pretrain(config, data.pretrain_x, run_dir, resume=True, callback=callback,
                    health_labels=health_labels(data))


def set_threads(threads: int = 1) -> int:
    """torch CPU threads of this process (``0`` keeps torch's default, one per core); returns the count.

    One thread is the notebooks' default: the models are small, and on a shared or busy 2-core machine
    two threads contend with other processes and run several times slower.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
