"""Data overview for the first notebook: which data sets are present, counts per class, clip lengths,
and a bone-length sanity check. Tables are lists of row dicts (``cagelib.lab.tables.results_table``
prints them as Markdown); figures are pyplot-free matplotlib Figures.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data import GaitSet, cut_windows, emotion_clips, load_egait
from ..data.bandai import embedded_path
from ..data.tasks import embedded_set
from ..skeleton import EDGES, JOINT_NAMES, bone_lengths
from .workbench import repo_root, resolve_path


def datasets_present(egait_features: str | os.PathLike = "data/features.h5",
                     egait_labels: str | os.PathLike = "data/labels.h5") -> tuple[list[dict], dict[str, GaitSet]]:
    """Rows describing each data set (present or not) and the loaded sets by name.

    The embedded Bandai set is always there (``data/bandai.npz``); E-Gait is loaded when its features
    file exists (relative paths are relative to the repository). A bad E-Gait file is reported in its row.
    """
    gs = embedded_set()
    rows = [_row("Bandai (embedded)", embedded_path(), gs)]
    sets = {"bandai": gs}
    features, labels = resolve_path(egait_features), resolve_path(egait_labels)
    if not features.is_file():
        rows.append({"data set": "E-Gait", "file": shown_path(features), "status": "not found: put the STEP/E-Gait "
                     "features.h5 (and labels.h5) in data/ to include it"})
        return rows, sets
    try:
        egait = load_egait(features, labels if labels.is_file() else None, extra_labels="ignore")
    except (ValueError, OSError) as err:
        rows.append({"data set": "E-Gait", "file": shown_path(features), "status": f"unreadable: {err}"})
        return rows, sets
    rows.append(_row("E-Gait", features, egait))
    sets["egait"] = egait
    return rows, sets


def shown_path(path: Path) -> str:
    """A path as a table shows it: relative to the repository when inside it, else as is."""
    path, root = Path(path).resolve(), repo_root()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _row(name: str, path: Path, gs: GaitSet) -> dict:
    s = gs.summary()
    lo, med, hi = s["length_min_median_max"]
    return {"data set": name, "file": shown_path(path), "status": "loaded", "clips": s["clips"], "frames": s["frames"],
            "fps": s["fps"], "units": s["units"], "length min/median/max": f"{lo} / {med:g} / {hi}",
            "labelled": len(gs) - s["labels"]["unlabelled"]}


def class_counts(gs: GaitSet, window: int, stride: int) -> list[dict]:
    """Per label (and unlabelled): clips, frames, median clip length and windows of ``window`` frames."""
    w = cut_windows(gs, window, stride)
    rows = []
    for label, name in [*enumerate(gs.label_names), (-1, "unlabelled")]:
        members = np.flatnonzero(gs.labels == label)
        if len(members) == 0:
            continue
        lengths = gs.lengths[members]
        rows.append({"label": name, "clips": len(members), "frames": int(lengths.sum()),
                     "median length": float(np.median(lengths)), f"windows ({window}/{stride})":
                     int((w.labels == label).sum()), "padded windows": int(((w.labels == label) & (w.lengths < window)).sum())})
    return rows


def emotion_task_counts(gs: GaitSet, window: int, stride: int) -> list[dict]:
    """``class_counts`` of the emotion task (dataset-1 locomotion clips with an emotion label)."""
    return class_counts(emotion_clips(gs), window, stride)


def length_histogram(gs: GaitSet, fps: float | None = None):
    """Clip lengths in seconds, one histogram per data set (``meta["dataset"]``), log-spaced bins."""
    from matplotlib.figure import Figure

    fps = fps or gs.fps
    groups = gs.meta.get("dataset", np.full(len(gs), "all"))
    seconds = gs.lengths / fps
    bins = np.geomspace(max(seconds.min(), 1e-2), seconds.max() * 1.01, 30)
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot(111)
    for name in np.unique(groups):
        ax.hist(seconds[groups == name], bins=bins, alpha=0.6, label=f"{name} ({(groups == name).sum()} clips)")
    ax.set_xscale("log")
    ax.set_xlabel("clip length (s, log scale)")
    ax.set_ylabel("clips")
    ax.set_title("clip lengths per data set")
    ax.legend(frameon=False)
    return fig


def bone_sanity(gs: GaitSet, tolerance: float = 0.05, max_clips: int | None = None) -> list[dict]:
    """Per bone: median length over all frames, and its variation within clips (max over clips of
    ``(max - min) / median``). Rigid bones vary ~0; ``flag`` marks bones above ``tolerance`` (on Bandai
    the neck-shoulder "bones" skip the chest and shoulder joints and vary by up to ~9 %: expected)."""
    clips = gs.positions[:max_clips] if max_clips else gs.positions
    medians, spreads = [], []
    for x in clips:
        b = bone_lengths(x)  # (T, E)
        med = np.median(b, axis=0)
        medians.append(med)
        spreads.append((b.max(axis=0) - b.min(axis=0)) / np.where(med > 0, med, 1.0))
    medians, spreads = np.array(medians), np.array(spreads)  # (clips, E)
    rows = []
    for e, (a, b) in enumerate(EDGES):
        worst = float(spreads[:, e].max())
        rows.append({"bone": f"{JOINT_NAMES[a]}-{JOINT_NAMES[b]}", "median length": float(np.median(medians[:, e])),
                     "median variation %": 100 * float(np.median(spreads[:, e])), "max variation %": 100 * worst,
                     "flag": "non-rigid" if worst > tolerance else ""})
    return rows


def find_clip(gs: GaitSet, clip_id: str) -> int:
    """Index of a clip by ``meta["clip_id"]``, or a ValueError listing a few ids."""
    ids = gs.meta["clip_id"]
    hits = np.flatnonzero(ids == clip_id)
    if len(hits) == 0:
        raise ValueError(f"no clip {clip_id!r}; e.g. {', '.join(map(str, ids[:5]))}")
    return int(hits[0])
