"""Notebook and grid settings -> the pretraining configuration; paths; pretraining a run of the lab.

The notebooks (``notebooks/01_data`` ... ``05_tsne``), ``make demo`` and ``cagelib.lab.reproduce`` share it:

- Paths: ``repo_root()`` (found from any working directory, e.g. ``notebooks/`` under nbval) and
  ``outputs_dir()`` (``$CAGELIB_OUTPUTS`` or ``<repo>/outputs``); relative paths given to the notebooks
  are relative to the repository, never to the notebook's folder.
- ``RunSettings``: one pretraining run of the Bandai emotion experiment (``cagelib.data.tasks``): method,
  schedule, encoder size, window length, corpus. Its own defaults are the CPU-sized ones (2 epochs,
  queue 256, small A-GCN, windows of 32 frames); every other default is the core's (``PretrainConfig``,
  ``ContrastConfig``), read from there. ``RunSettings.paper(method)`` gives the paper's settings.
- ``pretrain_config(settings, run_dir)``: THE one place where settings become a ``PretrainConfig``
  (notebook 03, the grid and the demo all go through it; ``tests/test_lab_settings.py`` checks that every
  notebook parameter arrives where it is used).
- ``pretrain_run(settings)``: build the corpus, pretrain, write the run to ``outputs/runs/<name>/``:
  ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (``cagelib.pretrain``) and ``workbench.json``
  (the ``RunSettings``, so evaluation rebuilds the same windows).
- ``lr_milestones``: the one rule for "decay the learning rate at these fractions of the epochs".
- ``set_threads``: torch CPU threads of the kernel (1 by default in the notebooks).

Finding runs under ``outputs/`` is ``cagelib.lab.runs``; evaluating them ``cagelib.lab.evaluation``.

Caveat (SPEC): on the Bandai data, style and performer are confounded, and the emotion task has 7
clips per class: report repeated clip-grouped folds with their spread (``cagelib.lab.evaluation``).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from ..atomic import atomic_write_json
from ..data.tasks import CORPORA, EmotionTask, TaskConfig, emotion_data
from ..methods.cage import PRESETS, ContrastConfig
from ..methods.encoders import AGCNConfig
from ..methods.registry import available_methods
from ..errors import DataFileError
from ..methods.registry import method as registered_method
from ..pretrain.config import PretrainConfig, check_config_types
from ..pretrain.fast import FastConfig
from ..pretrain.loop import PretrainResult, check_data, pretrain

SETTINGS_FILE, EVALUATION_FILE = "workbench.json", "evaluation.json"
ENCODERS = ("small", "paper")


def core_default(cls, name: str):
    """The default of field ``name`` of the core dataclass ``cls``: settings that the lab does not size
    for the CPU take their default from the class that uses them, so each default lives in one place."""
    default = {f.name: f for f in fields(cls)}[name].default
    if default is MISSING:
        raise TypeError(f"{cls.__name__}.{name} has no plain default")
    return default


def lr_milestones(epochs: int, fractions: Sequence[float], floor: bool = False) -> tuple[int, ...]:
    """The epochs at ``fractions`` of ``epochs`` where the learning rate drops, rounded to the nearest
    epoch (Python ``round``) or down (``floor``), keeping those in ``1 .. epochs - 1``, sorted."""
    rounding = math.floor if floor else round
    return tuple(sorted({m for m in (int(rounding(epochs * f)) for f in fractions) if 0 < m < epochs}))


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


@dataclass
class RunSettings:
    """One pretraining run of the notebooks' experiment. Defaults run in seconds on a CPU."""

    method: str = "cage"  # a registered method: cagelib.methods.registry.available_methods()
    epochs: int = 2  # CPU: pretraining epochs (paper: 300 for CAGE and C3L, 200 for the others)
    milestones: tuple = ()  # epochs where lr *= 0.1; () = at 50 % and 80 % of the epochs (paper's ratios)
    batch_size: int = core_default(PretrainConfig, "batch_size")  # mini-batch size
    lr: float = core_default(PretrainConfig, "lr")  # initial SGD learning rate (MAMP: AdamW at lr x 0.01, pretrain_config)
    queue_size: int = 256  # CPU: memory bank size K (paper: ContrastConfig's 2,048); below the corpus size
    momentum: float = core_default(ContrastConfig, "momentum")  # key-encoder momentum m
    encoder: str = "small"  # CPU: "small" (4-unit A-GCN, width x0.25) or "paper" (the 10-unit A-GCN)
    window: int = 32  # CPU: frames per window (Bandai is 30 fps)
    max_pretrain_windows: int = 128  # CPU: seeded subset of the pretraining corpus; 0 = every window
    corpus: str = "other"  # "other": every clip outside the emotion task; "dataset-2": its walking clips only
    ambiguity_speed: str = core_default(ContrastConfig, "ambiguity_speed")  # ACL methods: "up" or "down"
    speed_up_rate: int = core_default(ContrastConfig, "speed_up_rate")  # keep every r-th frame
    speed_down_rate: float = core_default(ContrastConfig, "speed_down_rate")  # stretch r * T frames to T
    seed: int = core_default(PretrainConfig, "seed")  # model init, shuffling and augmentation
    device: str = core_default(PretrainConfig, "device")  # "auto" (CUDA if available), "cpu", "cuda:1", ...
    fast: bool = False  # the fast step, FastConfig() chosen per device and run length (cagelib.pretrain.fast): CPU with
    #                     native bf16: bf16 + channels-last + fused graph conv, compile only for long runs; CUDA: bf16, compile, CUDA graph
    representation: str = core_default(TaskConfig, "representation")  # what the root joint holds (cagelib.representation)
    views: str = core_default(ContrastConfig, "views")  # contrastive views (cagelib.methods.body_augment.VIEWS)

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        if self.method not in available_methods():
            raise ValueError(f"RunSettings: unknown method {self.method!r}; choose from {available_methods()}")
        if self.encoder not in ENCODERS or self.corpus not in CORPORA:
            raise ValueError(f"RunSettings: encoder must be one of {ENCODERS} and corpus one of {CORPORA}, "
                             f"got {self.encoder!r}, {self.corpus!r}")
        if self.epochs < 1 or self.window < 9 or self.max_pretrain_windows < 0:
            raise ValueError("RunSettings: need epochs >= 1, window >= 9 frames, max_pretrain_windows >= 0")

    @classmethod
    def paper(cls, method: str = "cage", **overrides) -> "RunSettings":
        """The paper's pretraining settings on the full corpus (a GPU job): full A-GCN, ContrastConfig's
        queue (2,048), the schedule of ``cagelib.pretrain.config.paper_schedule``."""
        paper = registered_method(method).paper
        base = cls(method=method, epochs=paper["epochs"], milestones=paper["milestones"], encoder="paper", window=48,
                   max_pretrain_windows=0, queue_size=core_default(ContrastConfig, "queue_size"))
        return replace(base, **overrides)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSettings":
        """The settings in ``d`` (other keys ignored); a ``workbench.json`` written before ``representation``
        and ``views`` existed gets what its run was trained with (``LEGACY_REPRESENTATION``, ``LEGACY_VIEWS``)."""
        known = {f.name for f in fields(cls)}
        legacy = {"representation": "first_frame", "views": "paper"}
        return cls(**{**legacy, **{k: v for k, v in d.items() if k in known}})

    def schedule(self) -> tuple[int, ...]:
        """The lr milestones: the given ones, or 50 % and 80 % of the epochs (dropping those >= epochs)."""
        return self.milestones or lr_milestones(self.epochs, (0.5, 0.8))

    def task_config(self) -> TaskConfig:
        """Windows of the emotion task and the corpus (task stride = window / 4, corpus stride = window)."""
        return TaskConfig(window=self.window, stride=max(1, self.window // 4), pretrain_stride=self.window,
                          max_pretrain_windows=self.max_pretrain_windows or None, representation=self.representation)

    @property
    def variant(self) -> str:
        """The method, plus the ambiguity speed when it differs from the paper's choice: the row name of
        results tables (``"hsmb"``, ``"hsmb (down r=0.1)"``)."""
        if PRESETS.get(self.method, {}).get("bank_mode", "none") == "none":  # GE-CLR-like or a peer (MAMP)
            return self.method
        if self.ambiguity_speed == "up":
            return self.method if self.speed_up_rate == 4 else f"{self.method} (up r={self.speed_up_rate})"
        return f"{self.method} (down r={self.speed_down_rate:g})"

    def matches(self, other: dict) -> bool:
        """Same settings as a saved ``workbench.json`` (device and ``fast``, how it ran, may differ)."""
        def key(settings: RunSettings) -> dict:
            return {k: v for k, v in asdict(settings).items() if k not in ("device", "fast")}

        return key(self) == key(RunSettings.from_dict(other))


def pretrain_config(settings: RunSettings, run_dir: str | os.PathLike, progress: bool = True) -> PretrainConfig:
    """The ``PretrainConfig`` of ``settings``: the one mapping from notebook / grid / demo settings to the
    objects that use them (every ``RunSettings`` field but the data's ``window``, ``max_pretrain_windows``
    and ``corpus``, which ``run_data`` uses; ``representation`` goes to both)."""
    contrast = ContrastConfig.preset(settings.method, queue_size=settings.queue_size, momentum=settings.momentum,
                                     ambiguity_speed=settings.ambiguity_speed, speed_up_rate=settings.speed_up_rate,
                                     speed_down_rate=settings.speed_down_rate, views=settings.views)
    return PretrainConfig(epochs=settings.epochs, milestones=settings.schedule(), batch_size=settings.batch_size,
                          lr=settings.lr, seed=settings.seed, device=settings.device,
                          model=AGCNConfig.small() if settings.encoder == "small" else AGCNConfig(),
                          contrast=contrast, run_dir=str(run_dir), progress=progress,
                          fast=FastConfig() if settings.fast else None,
                          representation=settings.representation).adapted()


def run_data(settings: RunSettings) -> EmotionTask:
    """The emotion task and pretraining corpus of ``settings`` (its windows and corpus)."""
    return emotion_data(settings.task_config(), settings.corpus)


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


def read_settings(path: str | os.PathLike) -> dict:
    """The ``settings`` of a run's ``workbench.json`` (a dict of ``RunSettings`` fields), checked: a file that
    is not a JSON object, lacks ``settings``, or holds a value of the wrong type is a ``DataFileError`` naming
    the file and the key (``"workbench.json: settings: missing ..."``), never a ``KeyError``."""
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise DataFileError(path, None, f"expected a JSON object with 'settings', got a {type(saved).__name__}",
                            "it was not written by cagelib.lab.settings.pretrain_run; delete it or restore it")
    if "settings" not in saved:
        raise DataFileError(path, "settings", f"missing (the file has {sorted(saved)}): a workbench.json holds the "
                            "run's RunSettings under 'settings'", "restore the file from a copy, or delete it "
                            "(the run is then read as a run made outside the workbench)")
    check_config_types(RunSettings, saved["settings"], path, "settings.")
    return saved["settings"]


def pretrain_run(settings: RunSettings, run_dir: str | os.PathLike = "", outputs: str | os.PathLike | None = "",
                 callback=None, progress: bool = True) -> PretrainResult:
    """Pretrain ``settings`` on its corpus into ``run_dir`` (default: a new ``outputs/runs/...`` folder).

    An existing run in ``run_dir`` with the same settings is continued (up to ``settings.epochs``);
    different settings raise. Returns ``cagelib.pretrain.config.PretrainResult``.
    """
    run_dir = resolve_path(run_dir) if run_dir else new_run_dir(settings.method, settings.seed, outputs)
    saved = run_dir / SETTINGS_FILE
    if saved.is_file() and not settings.matches(read_settings(saved)):
        raise ValueError(f"{saved}: the run there has other settings; choose another run_dir")
    data = run_data(settings)
    config = pretrain_config(settings, run_dir, progress)
    check_data(config, data.pretrain_x)  # a refused run leaves no folder holding only workbench.json
    atomic_write_json(saved, {"settings": asdict(settings), "task": asdict(settings.task_config()),
                       "data": data.summary()})
    return pretrain(config, data.pretrain_x, run_dir, resume=True, callback=callback,
                    health_labels=health_labels(data))


def health_labels(task: EmotionTask) -> tuple:
    """The labelled windows of the health monitor's k-NN (``cagelib.pretrain.health``): the TRAINING side
    of fold 0 of the task's folds, ``(x, y, groups)``; its test side is never seen during pretraining."""
    train, _ = task.folds()[0]
    return task.x[train], task.y[train], task.groups[train]


def set_threads(threads: int = 1) -> int:
    """torch CPU threads of this process (``0`` keeps torch's default, one per core); returns the count.

    One thread is the notebooks' default: the models are small, and on a shared or busy 2-core machine
    two threads contend with other processes and run several times slower.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
