"""Notebook workbench: paths, the notebooks' data, pretraining runs, live loss plot, notebook stripping.

The notebooks (``notebooks/01_data`` ... ``05_tsne``) and ``cagelib.reproduce`` share this module:

- Paths: ``repo_root()`` (found from any working directory, e.g. ``notebooks/`` under nbval) and
  ``outputs_dir()`` (``$CAGELIB_OUTPUTS`` or ``<repo>/outputs``); relative paths given to the notebooks
  are relative to the repository, never to the notebook's folder.
- ``RunSettings``: one pretraining run of the Bandai emotion experiment (``cagelib.tasks``): method,
  schedule, encoder size, window length, corpus. CPU-sized defaults; ``RunSettings.paper(method)``.
- ``pretrain_run(settings)``: build the corpus, pretrain, write the run to ``outputs/runs/<name>/``:
  ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (``cagelib.train``) and ``workbench.json``
  (the ``RunSettings``, so evaluation rebuilds the same windows).
- ``set_threads``: torch CPU threads of the kernel (1 by default in the notebooks).
- ``LiveLossPlot``: a ``pretrain`` callback that redraws the loss curve in the notebook every epoch.
- ``python -m cagelib.workbench strip notebooks/*.ipynb [--check]``: remove outputs and widget state.

Finding runs under ``outputs/`` is ``cagelib.runs``; evaluating them ``cagelib.experiments``.

Caveat (SPEC): on the Bandai data, style and performer are confounded, and the emotion task has 7
clips per class: report repeated clip-grouped folds with their spread (``cagelib.experiments``).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_json, atomic_write_text
from .tasks import EmotionTask, TaskConfig, emotion_task

SETTINGS_FILE, EVALUATION_FILE = "workbench.json", "evaluation.json"
CORPORA = ("other", "dataset-2")
ENCODERS = ("small", "paper")
_TWO_STREAM = ("c3l", "cage")


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository folder: the nearest parent of ``start`` (default: the working directory) holding
    ``pyproject.toml`` and ``cagelib/``; else the folder above the installed package."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "cagelib").is_dir():
            return folder
    return Path(__file__).resolve().parents[1]


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

    method: str = "cage"  # preset: geclr | hsmb | asmb | csmb | c3l | cage | spherical | spherical_acl
    epochs: int = 2  # pretraining epochs (paper: 300 for CAGE and C3L, 200 for the others)
    milestones: tuple = ()  # epochs where lr *= 0.1; () = at 50 % and 80 % of the epochs (paper's ratios)
    batch_size: int = 32  # mini-batch size (paper: 32)
    lr: float = 0.1  # initial SGD learning rate (paper: 0.1)
    queue_size: int = 256  # memory bank size K (paper: 2,048); keep it below the corpus size
    encoder: str = "small"  # "small" (4-unit A-GCN, width x0.25) or "paper" (the 10-unit A-GCN)
    window: int = 32  # frames per window (Bandai is 30 fps)
    max_pretrain_windows: int = 128  # seeded subset of the pretraining corpus; 0 = every window
    corpus: str = "other"  # "other": every clip outside the emotion task; "dataset-2": its walking clips only
    ambiguity_speed: str = "up"  # speed change of the ambiguity samples (ACL methods): "up" or "down"
    speed_up_rate: int = 4  # keep every r-th frame (paper: 4, of 2 / 4 / 8)
    speed_down_rate: float = 0.3  # stretch a window of r * T frames to T (paper: 0.3, of 0.1 / 0.3 / 0.5)
    seed: int = 0  # model init, shuffling and augmentation
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    fast: bool = False  # CUDA only: bf16 autocast, torch.compile, CUDA graphs (cagelib.fast); no effect on CPU

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        if self.encoder not in ENCODERS or self.corpus not in CORPORA:
            raise ValueError(f"RunSettings: encoder must be one of {ENCODERS} and corpus one of {CORPORA}, "
                             f"got {self.encoder!r}, {self.corpus!r}")
        if self.epochs < 1 or self.window < 9 or self.max_pretrain_windows < 0:
            raise ValueError("RunSettings: need epochs >= 1, window >= 9 frames, max_pretrain_windows >= 0")

    @classmethod
    def paper(cls, method: str = "cage", **overrides) -> "RunSettings":
        """The paper's pretraining settings on the full corpus (a GPU job): full A-GCN, queue 2,048,
        300 epochs (x0.1 at 150, 250) for CAGE/C3L, 200 (x0.1 at 100, 160) for the others."""
        epochs, milestones = (300, (150, 250)) if method in _TWO_STREAM else (200, (100, 160))
        base = cls(method=method, epochs=epochs, milestones=milestones, queue_size=2048, encoder="paper",
                   window=48, max_pretrain_windows=0)
        return replace(base, **overrides)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def schedule(self) -> tuple[int, ...]:
        """The lr milestones: the given ones, or 50 % and 80 % of the epochs (dropping those >= epochs)."""
        if self.milestones:
            return self.milestones
        return tuple(sorted({m for m in (round(self.epochs * 0.5), round(self.epochs * 0.8)) if 0 < m < self.epochs}))

    def task_config(self) -> TaskConfig:
        """Windows of the emotion task and the corpus (task stride = window / 4, corpus stride = window)."""
        return TaskConfig(window=self.window, stride=max(1, self.window // 4), pretrain_stride=self.window,
                          max_pretrain_windows=self.max_pretrain_windows or None)

    def pretrain_config(self, run_dir: str | os.PathLike, progress: bool = True):
        from .contrast import ContrastConfig
        from .model import AGCNConfig
        from .train import PretrainConfig

        from .fast import FastConfig

        model = AGCNConfig.small() if self.encoder == "small" else AGCNConfig()
        return PretrainConfig(fast=FastConfig() if self.fast else None, epochs=self.epochs, milestones=self.schedule(), batch_size=self.batch_size,
                              lr=self.lr, seed=self.seed, device=self.device, model=model,
                              contrast=ContrastConfig.preset(self.method, queue_size=self.queue_size,
                                                             ambiguity_speed=self.ambiguity_speed,
                                                             speed_up_rate=self.speed_up_rate,
                                                             speed_down_rate=self.speed_down_rate),
                              run_dir=str(run_dir), progress=progress)

    @property
    def variant(self) -> str:
        """The method, plus the ambiguity speed when it differs from the paper's choice: the row name of
        results tables (``"hsmb"``, ``"hsmb (down r=0.1)"``)."""
        from .contrast import PRESETS

        if PRESETS[self.method]["bank_mode"] == "none":
            return self.method
        if self.ambiguity_speed == "up":
            return self.method if self.speed_up_rate == 4 else f"{self.method} (up r={self.speed_up_rate})"
        return f"{self.method} (down r={self.speed_down_rate:g})"

    def matches(self, other: dict) -> bool:
        """Same settings as a saved ``workbench.json`` (device and ``fast``, how it ran, may differ)."""
        def key(settings: RunSettings) -> dict:
            return {k: v for k, v in asdict(settings).items() if k not in ("device", "fast")}

        return key(self) == key(RunSettings.from_dict(other))


@functools.lru_cache(maxsize=1)
def embedded_set():
    """The embedded Bandai set, loaded once per process (treat as read-only)."""
    from .data import load_embedded

    return load_embedded()


def emotion_data(task: TaskConfig | None = None, corpus: str = "other") -> EmotionTask:
    """The emotion task and pretraining corpus (``cagelib.tasks.emotion_task``) from the embedded set.

    ``corpus="dataset-2"`` pretrains on dataset-2 walking only, instead of every non-task clip.
    """
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {CORPORA}, got {corpus!r}")
    gs = embedded_set()
    if corpus == "dataset-2":
        from .data import emotion_clips

        task_ids = set(emotion_clips(gs).meta["clip_id"])
        keep = (gs.meta["dataset"] == "dataset-2") | np.isin(gs.meta["clip_id"], list(task_ids))
        gs = gs.subset(np.flatnonzero(keep))
    return emotion_task(gs, task or TaskConfig())


def new_run_dir(method: str, seed: int = 0, outputs: str | os.PathLike | None = "") -> Path:
    """A fresh ``outputs/runs/<method>-s<seed>-<date>-<time>`` folder name (not created)."""
    base = outputs_dir(outputs) / "runs" / f"{method}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (temp file in the same folder, then ``os.replace``)."""
    return atomic_write_json(path, data)


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON; a broken file is a ValueError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def pretrain_run(settings: RunSettings, run_dir: str | os.PathLike = "", outputs: str | os.PathLike | None = "",
                 callback=None, progress: bool = True):
    """Pretrain ``settings`` on its corpus into ``run_dir`` (default: a new ``outputs/runs/...`` folder).

    An existing run in ``run_dir`` with the same settings is continued (up to ``settings.epochs``);
    different settings raise. Returns ``cagelib.train.PretrainResult``.
    """
    from .train import pretrain

    run_dir = resolve_path(run_dir) if run_dir else new_run_dir(settings.method, settings.seed, outputs)
    saved = run_dir / SETTINGS_FILE
    if saved.is_file() and not settings.matches(read_json(saved)["settings"]):
        raise ValueError(f"{saved}: the run there has other settings; choose another run_dir")
    data = emotion_data(settings.task_config(), settings.corpus)
    write_json(saved, {"settings": asdict(settings), "task": asdict(settings.task_config()),
                       "data": data.summary()})
    return pretrain(settings.pretrain_config(run_dir, progress), data.pretrain_x, run_dir, resume=True,
                    callback=callback)


def set_threads(threads: int = 1) -> int:
    """torch CPU threads of this process (``0`` keeps torch's default, one per core); returns the count.

    One thread is the notebooks' default: the models are small, and on a shared or busy 2-core machine
    two threads contend with other processes and run several times slower.
    """
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class LiveLossPlot:
    """``pretrain`` callback: after each epoch, redraw the loss components (and the positive-pair
    accuracy) in the notebook output, in place. ``history`` holds the metrics received so far."""

    def __init__(self, title: str = "pretraining"):
        self.title, self.history, self.handle = title, [], None

    def figure(self):
        from .viz import plot_loss_curves

        keys = [k for k in (self.history[0] if self.history else {}) if k.startswith("loss") or k == "acc"]
        series = {("positive-pair acc" if k == "acc" else k): [m[k] for m in self.history] for k in keys}
        return plot_loss_curves(series, title=self.title)

    def __call__(self, epoch: int, metrics: dict) -> None:
        from IPython.display import display

        self.history.append(dict(metrics))
        figure = self.figure()
        if self.handle is None:
            self.handle = display(figure, display_id=True)
        else:
            self.handle.update(figure)


def strip_notebook(path: str | os.PathLike) -> bool:
    """Remove outputs, execution counts and widget/papermill state from a notebook; True if it changed."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    for key in ("widgets", "papermill"):
        nb.metadata.pop(key, None)
    after = nbformat.writes(nb)
    if after != before:
        atomic_write_text(path, after)
    return after != before


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cagelib.workbench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    strip = sub.add_parser("strip", help="remove outputs and widget state from notebooks")
    strip.add_argument("notebooks", nargs="+")
    strip.add_argument("--check", action="store_true", help="only report; exit 1 if a notebook holds outputs")
    runs = sub.add_parser("runs", help="list the runs under outputs/")
    runs.add_argument("--outputs", default="")
    args = parser.parse_args(argv)
    if args.command == "runs":
        from .runs import runs_table

        print(runs_table(args.outputs), end="")
        return 0
    dirty = []
    for name in args.notebooks:
        if args.check:
            import nbformat

            nb = nbformat.read(name, as_version=4)
            if any(c.get("outputs") or c.get("execution_count") for c in nb.cells) or "widgets" in nb.metadata:
                dirty.append(name)
        elif strip_notebook(name):
            print(f"stripped {name}")
    for name in dirty:
        print(f"{name}: holds outputs or widget state (run: python -m cagelib.workbench strip {name})")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
