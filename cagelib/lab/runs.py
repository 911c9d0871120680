"""Pretraining runs under ``outputs/``: find them (any depth: notebook runs, ``make demo`` runs,
``python -m cagelib reproduce`` grids), read their experiment, loss history and evaluation; ``find_run`` pretrains
one when none fits only when asked (``train_if_missing=True``, as notebooks 04 and 05 do on a fresh clone).

A run folder holds ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (``cagelib.pretrain``), and when
made by the workbench ``experiment.json`` (its experiment tree, seed and variant; ``workbench.json`` before the
tree) and, once evaluated, ``evaluation.json``
(``cagelib.lab.evaluation``). Runs are listed newest first (by the time their files were last written).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.tasks import DataConfig
from ..experiment import Experiment, load
from ..methods.encoders import AGCNConfig
from ..pretrain.config import PretrainConfig, check_config_types
from .workbench import (EVALUATION_FILE, outputs_dir, pretrain_run, read_json, resolve_path, run_experiment,
                        run_key)
from .tables import results_table


@dataclass
class Run:
    """A pretraining run found under ``outputs/``."""

    path: Path  # the run folder
    config: dict  # config.json (cagelib.pretrain.config.PretrainConfig as a dict)
    record: tuple | None  # (Experiment, seed, variant) of experiment.json; None for runs made outside the workbench
    history: list = field(default_factory=list, repr=False)  # metrics.jsonl, one dict per epoch
    evaluation: dict | None = field(default=None, repr=False)  # evaluation.json (cagelib.lab.evaluation)

    @property
    def method(self) -> str:
        return self.config["contrast"]["method"]

    @property
    def experiment(self) -> Experiment | None:
        return self.record[0] if self.record else None

    @property
    def variant(self) -> str:
        """The variant the run was made as (a grid's variant name, else its method)."""
        return self.record[2] if self.record else self.method

    @property
    def encoder(self) -> str:
        """``"small"`` / ``"paper"`` (``AGCNConfig.small()`` / ``.paper()``) or ``"custom"``."""
        model = AGCNConfig(**self.config["model"])
        return next((name for name, ref in (("small", AGCNConfig.small()), ("paper", AGCNConfig()))
                     if asdict(ref) == asdict(model)), "custom")

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def complete(self) -> bool:
        return len(self.history) >= int(self.config["epochs"]) and (self.path / "checkpoint.pt").is_file()

    @property
    def modified(self) -> float:
        return max((self.path / n).stat().st_mtime for n in ("config.json", "metrics.jsonl", "checkpoint.pt")
                   if (self.path / n).exists())

    def data_config(self) -> DataConfig:
        """The data the run was pretrained on (``DataConfig()`` for a run without experiment.json)."""
        return self.experiment.data if self.record else DataConfig()

    def row(self, outputs: Path | None = None) -> dict:
        """A summary row: name, method, seed, epochs, encoder, final loss and evaluated top-1 (mean over folds)."""
        name = str(self.path.relative_to(outputs)) if outputs and self.path.is_relative_to(outputs) else str(self.path)
        row = {"run": name, "method": self.variant, "seed": self.seed,
               "epochs": f"{len(self.history)}/{self.config['epochs']}",
               "encoder": self.encoder,
               "final loss": self.history[-1]["loss"] if self.history else None}
        for protocol, res in ((self.evaluation or {}).get("results") or {}).items():
            row[protocol] = res["aggregate"]["top1_mean"]
        return row


def load_run(path: str | os.PathLike) -> Run:
    """Read a run folder (``config.json`` is required; its values and ``workbench.json``'s are type-checked,
    ``DataFileError`` naming the file and the key). A folder without ``config.json`` is a
    ``FileNotFoundError`` listing the run folders below it (``outputs/demo`` -> ``seed0/pretrain_...``)."""
    path = resolve_path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(not_a_run_message(path))
    metrics = path / "metrics.jsonl"
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []
    record = run_experiment(path)
    evaluation = read_json(path / EVALUATION_FILE) if (path / EVALUATION_FILE).is_file() else None
    config = read_json(path / "config.json")
    check_config_types(PretrainConfig, config, path / "config.json")
    return Run(path, config, record, history, evaluation)


def run_folders_below(path: Path, limit: int = 20) -> list[Path]:
    """The folders below ``path`` (any depth) holding a ``config.json``, sorted, at most ``limit``."""
    if not path.is_dir():
        return []
    return sorted({config.parent for config in path.rglob("config.json")})[:limit]


def not_a_run_message(path: Path) -> str:
    """Why ``path`` is not a run folder, and the run folders below it if any."""
    if not path.exists():
        return f"{path}: not found; a run folder holds config.json and checkpoint.pt (e.g. outputs/demo/seed0/" \
               "pretrain_emotion4+style15)"
    found = run_folders_below(path)
    if not found:
        return f"{path / 'config.json'} not found: is {path} a pretraining run folder? (no run folder below it either)"
    shown = ", ".join(str(p.relative_to(path)) for p in found)
    return (f"{path}: not a pretraining run folder (no config.json); it holds {len(found)}"
            f"{'+' if len(found) == 20 else ''} run folder{'s' if len(found) > 1 else ''} below it: {shown}; "
            f"pass one of them, e.g. {found[0]}")


def list_runs(outputs: str | os.PathLike | None = "", method: str | None = None, complete: bool | None = None,
              experiment: Experiment | None = None, seed: int | None = None) -> list[Run]:
    """Runs under ``outputs`` (any depth), newest first; filtered by method, completeness and by being a run of
    ``experiment`` with ``seed`` (its first seed by default)."""
    key = run_key(experiment, experiment.seeds[0] if seed is None else seed) if experiment is not None else None
    root = outputs_dir(outputs)
    runs = []
    for config in sorted(root.rglob("config.json")) if root.is_dir() else []:
        try:
            run = load_run(config.parent)
            run.method  # noqa: B018 (a config.json of something else has no contrast method)
        except (ValueError, KeyError, TypeError):
            continue
        if method is not None and run.method != method:
            continue
        if complete is not None and run.complete != complete:
            continue
        if key is not None and not (run.record and run_key(run.record[0], run.record[1]) == key):
            continue
        runs.append(run)
    return sorted(runs, key=lambda r: r.modified, reverse=True)


def latest_run(outputs: str | os.PathLike | None = "", method: str | None = None,
               experiment: Experiment | None = None) -> Run | None:
    """The newest complete run (of ``method``, or of ``experiment``'s first seed), or None."""
    runs = list_runs(outputs, method, complete=True, experiment=experiment)
    return runs[0] if runs else None


def ensure_run(experiment: Experiment, outputs: str | os.PathLike | None = "", progress: bool = True,
               train_if_missing: bool = False) -> Path:
    """The newest complete run of ``experiment`` (its first seed). Without one: a FileNotFoundError saying how
    to make it, or, with ``train_if_missing=True``, it is pretrained first (printed, so a notebook shows it)."""
    found = latest_run(outputs, experiment=experiment)
    if found is not None:
        return found.path
    shown = f"preset {experiment.name!r} with overrides {list(experiment.overrides)}"
    if not train_if_missing:
        raise FileNotFoundError(f"no complete run of {shown} under {outputs_dir(outputs)}: run notebook "
                                "03_pretrain with them, or pass train_if_missing=True")
    print(f"No complete run of {shown} under {outputs_dir(outputs)}: pretraining one now")
    return pretrain_run(experiment, outputs=outputs, progress=progress).run_dir


def find_run(method: str, outputs: str | os.PathLike | None = "", device: str = "auto", progress: bool = True,
             train_if_missing: bool = False) -> Path:
    """The newest complete run of ``method`` (any settings). Without one: a FileNotFoundError naming the
    missing run and how to make it, or, with ``train_if_missing=True``, a run of the ``notebook`` preset
    with that method is pretrained first and says so (notebooks 04 and 05 pass it, so they run on a fresh clone)."""
    found = latest_run(outputs, method)
    if found is not None:
        return found.path
    if not train_if_missing:
        raise FileNotFoundError(f"no complete {method!r} run under {outputs_dir(outputs)}: run notebook 03_pretrain "
                                f"with method={method!r}, or pass train_if_missing=True")
    exp = load("notebook", {"pretrain.contrast.method": method, "pretrain.device": device}, source="find_run")
    print(f"No complete {method!r} run under {outputs_dir(outputs)}: this notebook needs one, so it pretrains a "
          f"{method!r} run of the notebook preset now ({exp.pretrain.epochs} epochs of the small encoder on at most "
          f"{exp.data.max_pretrain_windows} windows, seconds to a minute on a CPU). For a longer run, use notebook "
          f"03_pretrain with overrides such as pretrain.contrast.method={method}, then rerun this notebook; it "
          "picks the newest complete run.")
    return pretrain_run(exp, outputs=outputs, progress=progress).run_dir


def runs_table(outputs: str | os.PathLike | None = "", method: str | None = None) -> str:
    """Markdown table of the runs under ``outputs`` (newest first) with the top-1 % (mean over folds) of
    each protocol of their last evaluation."""
    root = outputs_dir(outputs)
    rows = [run.row(root) for run in list_runs(outputs, method)]
    return results_table(rows) if rows else f"(no runs under {root})\n"
