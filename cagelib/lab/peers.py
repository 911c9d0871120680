"""The peers side by side: every pretraining method on the same data, split, encoder budget and probes.

    python -m cagelib peers                          # the preset `peers`: every variant x 3 seeds (resumable)
    python -m cagelib peers --only geclr mamp seeds=[0]
    python -m cagelib peers --list                   # the cells, and which are done
    make peers                                       # the same as the first line

One cell is one (variant, seed) of the ``peers`` preset (``cagelib/configs/peers.toml``): the demo's CPU
pretraining (8 epochs of 1,024 corpus windows of 48 frames, queue 512, key momentum 0.99, the method's own
optimiser: ``registry.Method.adapt``) on the clips outside the tasks' family, then on each task, over the same
clip-grouped folds (drawn with the seed), the probes of the method's first stream (``runner.run_cell``, part
"method"): linear (the paper's protocol on raw features), linear (z) (z-scored features), k-NN (k = 10) and
finetune (the encoder plus a linear layer trained with labels, the preset's ``finetune`` recipe).

A "controls" cell per seed holds the rows every method is read against: the A-GCN at random init (its
"finetune" column is the same encoder trained from scratch with the same recipe), the 62 hand-crafted gait
features with a logistic regression, and the majority class. Methods whose first encoder is not an A-GCN
(MAMP's transformer, ...) add a "random init" row of their own encoder. A "supervised" cell per seed trains
the same A-GCN from scratch with labels on each fold with its own recipe (``supervised``): the reference row.

Each cell's JSON is written when it finishes (``out``, committed), keyed on what its result depends on
(``cell_key``), so an interrupted grid continues where it stopped and a cell whose settings changed runs
again. Cells run seed by seed, in ``workers`` processes of one torch thread. ``table.md`` is rebuilt from the
cells present: balanced and clip accuracy, paired differences, cost and training health.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..evaluate.compare import bootstrap_difference, compare
from ..evaluate.protocols import EvalConfig
from ..experiment import Experiment
from ..pretrain.config import PretrainConfig
from ..provenance import device_info
from .jobs import run_jobs
from .runner import REFERENCE_ROWS, run_cell
from .tables import format_mean_std, results_table
from .workbench import repo_root

PROBES = ("linear", "linear (z)", "k-NN", "finetune")
CONTROLS = "controls"  # the cell name of a seed's reference rows
SUPERVISED = "supervised"  # the cell name of a seed's supervised reference
REFERENCE_CELLS = (CONTROLS, SUPERVISED)  # cells without a pretraining of their own (the A-GCN, the demo's windows)


def cell_key(exp: Experiment, name: str) -> dict:
    """What a cell's result depends on: a saved cell with another key is run again."""
    cell = exp.cell(None if name in REFERENCE_CELLS else name)
    key = {"tasks": list(cell.data.tasks), "folds": cell.folds, "data": asdict(cell.data),
           "linear": asdict(cell.linear), "finetune": asdict(cell.finetune),
           "pretrain": _kept(cell.pretrain_config(0, "").to_dict())}
    if cell.stream == "each" and name not in REFERENCE_CELLS:  # more rows (keys of other reads stay as before)
        key["stream"] = cell.stream
    if name == SUPERVISED:
        key["supervised"] = asdict(cell.supervised)
    if name == CONTROLS:  # a controls cell written before a reference row was added runs again
        key["references"] = list(REFERENCE_ROWS)
    return json.loads(json.dumps(key))


NOT_IN_KEYS = ("run_dir", "progress", "checkpoint_every")  # how a cell's run wrote its files, not what it computed


def _kept(pretrain: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in pretrain.items() if k not in NOT_IN_KEYS}))


def upgraded_key(key):
    """A cell key saved before the experiment tree (``finetune_epochs``, a ``SupervisedConfig``) in today's
    form: the grid's fixed recipes of then (the demo's windows, linear and finetune on the CPU, Adam lr 1e-3
    without milestones), the pretraining configuration in the current schema (``PretrainConfig.load``)."""
    if not isinstance(key, dict) or not isinstance(key.get("pretrain"), dict):
        return key
    key = {**key, "pretrain": _kept(PretrainConfig.load(key["pretrain"]).to_dict())}
    if "finetune_epochs" in key:
        epochs = key.pop("finetune_epochs")
        from ..data.tasks import DataConfig

        key["data"] = asdict(DataConfig(tasks=tuple(key["tasks"]), task_strides={"walkstyle7": 48}))
        key["linear"] = asdict(EvalConfig.paper("linear", device="cpu"))
        key["finetune"] = asdict(EvalConfig.paper("finetune", optimizer="adam", lr=1e-3, epochs=epochs,
                                                  milestones=(), device="cpu"))
        if "supervised" in key:
            old = {k: v for k, v in key["supervised"].items() if k != "seed"}
            key["supervised"] = asdict(EvalConfig.paper("supervised", **old))
    return json.loads(json.dumps(key))


def run_grid_cell(exp: Experiment, name: str, seed: int) -> dict:
    """One cell: ``{"method", "seed", "key", "rows": {row: {task: {probe: {top1, balanced, clip_top1}}}}, ...}``."""
    started = time.time()
    if name in REFERENCE_CELLS:
        result = run_cell(exp.cell(None), seed, "controls" if name == CONTROLS else "supervised")
        renamed = {"random init": "random init (A-GCN)"}
        rows = {renamed.get(row, row): v for row, v in result["rows"].items()}
        cell = {"method": name, "seed": seed, "key": cell_key(exp, name), "rows": rows, "torch": result["torch"]}
    else:
        result = run_cell(exp.cell(name), seed, "method", run_dir=lambda group: Path(exp.runs or exp.out) /
                          f"{name}-s{seed}")
        (group,) = result["pretrain_seconds"]  # the peer grid's tasks share one corpus
        renamed = {"pretrained": name, "random init": f"random init ({result['encoder']}, {name}'s)",
                   **{row: f"{name} {row[len('pretrained '):]}" for row in result["rows"]
                      if row.startswith("pretrained (")}}  # stream="each": "cage (spherical)", "cage (both)"
        seconds = result["pretrain_seconds"][group]
        if result.get("reused", {}).get(group):  # a finished run read again: its cost as its cell measured it
            seconds = _earlier_pretrain_seconds(exp, name, seed) or seconds
        cell = {"method": name, "seed": seed, "key": cell_key(exp, name),
                "rows": {renamed[row]: v for row, v in result["rows"].items()}, "torch": result["torch"],
                "pretrain_seconds": seconds, "steps": result["steps"][group],
                "health": result["health"][group], "stream": result["stream"], "encoder": result["encoder"]}
    cell["predictions"] = {renamed.get(row, row): v for row, v in result["predictions"].items()}  # bootstrap
    cell["device"] = device_info()  # the CPU and kernels the cell ran on (not in its key)
    cell["windows"] = result["windows"]
    cell["seconds"] = time.time() - started
    return cell


def _earlier_pretrain_seconds(exp: Experiment, name: str, seed: int) -> float | None:
    """The pretraining wall time of the cell file already at ``cell_path`` when it was made with the same
    pretraining (its key's ``pretrain``): a cell that only re-reads a finished run keeps that cost."""
    path = cell_path(exp, name, seed)
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    same = upgraded_key(earlier.get("key", {})).get("pretrain") == cell_key(exp, name)["pretrain"]
    return earlier.get("pretrain_seconds") if same else None


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine's absolute path in a committed table)."""
    try:
        return str(path.resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def cell_path(exp: Experiment, name: str, seed: int) -> Path:
    return Path(exp.out) / "cells" / f"{name}-s{seed}.json"


def done(exp: Experiment, name: str, seed: int) -> bool:
    path = cell_path(exp, name, seed)
    return path.is_file() and upgraded_key(json.loads(path.read_text()).get("key")) == cell_key(exp, name)


def _cell_job(args) -> tuple[str, int, float]:
    exp, name, seed = args
    cell = run_grid_cell(exp, name, seed)
    atomic_write_json(cell_path(exp, name, seed), cell, indent=None)  # compact: every window's predictions
    return name, seed, cell["seconds"]


def cells(exp: Experiment) -> list[tuple[str, int]]:
    """Every cell of the grid, seed by seed."""
    supervised = (SUPERVISED,) if exp.supervised_tasks else ()
    return [(name, seed) for seed in exp.seeds for name in (CONTROLS, *exp.variants, *supervised)]


def run_grid(exp: Experiment, log=print) -> str:
    """Run the cells not done yet, then write and return the table."""
    if len(set(map(str, _groups(exp)))) != 1:
        raise ValueError(f"peers: the tasks {list(exp.data.tasks)} need several pretraining corpora; use tasks of one "
                         "family")
    for name in exp.variants:  # every variant checked before the first cell runs
        exp.cell(name)
    todo = [(exp, m, s) for m, s in cells(exp) if not done(exp, m, s)]
    log(f"peers: {len(cells(exp)) - len(todo)} cells done, {len(todo)} to run in {exp.workers} processes")
    # the workers die with this process (run_jobs); each cell is saved by its worker as soon as it is done
    run_jobs(_cell_job, todo, exp.workers, done=lambda r: log(f"  {r[0]}, seed {r[1]}: {r[2]:.0f} s"))
    return write_table(exp)


def _groups(exp: Experiment):
    from ..data.tasks import embedded_set
    from .runner import corpus_groups

    return corpus_groups(exp.data.tasks, embedded_set())


def load_cells(exp: Experiment) -> list[dict]:
    """The saved cells of ``exp`` with its current settings."""
    return [json.loads(cell_path(exp, m, s).read_text()) for m, s in cells(exp) if done(exp, m, s)]


def _stat(values, scale: float = 1.0, precision: int = 1) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    return format_mean_std(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None,
                           precision=precision)


def accuracy_table(loaded: list[dict], tasks, metric: str, probes=PROBES) -> str:
    """A row per method then per control, columns task x probe: ``metric`` in %, mean +- std over seeds."""
    by_row: dict[str, list[dict]] = {}
    methods_first = sorted(loaded, key=lambda cell: cell["method"] in REFERENCE_CELLS)  # stable: the grid's order
    for cell in methods_first:
        for row, per_task in cell["rows"].items():
            by_row.setdefault(row, []).append(per_task)
    lines = []
    for row, seeds in by_row.items():
        line = {"method": row, "seeds": len(seeds)}
        for task in tasks:
            for probe in probes:
                line[f"{task} {probe}"] = _stat([s[task][probe][metric] for s in seeds if probe in s.get(task, {})])
        lines.append(line)
    return results_table(lines)


FAIR_CONTROLS = {"mamp": "random init (MotionEncoder, mamp's)"}  # else the A-GCN's: "random init (A-GCN)"
COMPARED_PROBES = ("linear (z)", "k-NN")  # the fair probes (standardised features, no training)


def default_pairs(loaded: list[dict]) -> list[tuple[str, str]]:
    """The peer table's comparisons: every method against its fair control (the same encoder at random init)
    and against GE-CLR (the paper's baseline)."""
    rows = {row for cell in loaded for row in cell["rows"]}
    methods = dict.fromkeys(c["method"] for c in loaded if c["method"] not in REFERENCE_CELLS)
    return [(m, other) for m in methods for other in (FAIR_CONTROLS.get(m, "random init (A-GCN)"), "geclr")
            if other != m and other in rows]


def difference_table(loaded: list[dict], tasks, metric: str, pairs=None, probes=COMPARED_PROBES) -> str:
    """Per pair of rows ``(A, B)`` (default :func:`default_pairs`) and task: the paired difference over seeds
    of ``metric`` on the fair ``probes``, with two 95 % intervals (:func:`pair_comparisons`)."""
    rows = seed_rows(loaded)
    with_clips = any("predictions" in c for c in loaded)  # cells written before predictions were kept: t only
    lines = []
    for a, b in default_pairs(loaded) if pairs is None else pairs:
        if a not in rows[0] or b not in rows[0]:
            continue
        line = {"A": a, "B": b}
        for task in tasks:
            for probe in probes:
                over_seeds, over_clips = pair_comparisons(rows, a, b, task, probe, metric)
                line[f"{task} {probe}"] = _interval(over_seeds)
                if with_clips:
                    line[f"{task} {probe} (clips)"] = _interval(over_clips)
        lines.append(line)
    return results_table(lines)


def _interval(c) -> str:
    return "-" if c is None else c.cell()


def seed_rows(loaded: list[dict]) -> tuple[dict, dict, dict]:
    """``(values, kept, windows)`` of loaded cells: row -> seed -> task -> probe -> fold means; row -> seed ->
    task -> probe -> window predictions; seed -> task -> {"labels", "clips"}."""
    values: dict[str, dict[int, dict]] = {}
    kept: dict[str, dict[int, dict]] = {}
    windows: dict[int, dict] = {}
    for cell in loaded:
        for row, per_task in cell["rows"].items():
            values.setdefault(row, {})[cell["seed"]] = per_task
        for row, per_task in cell.get("predictions", {}).items():
            kept.setdefault(row, {})[cell["seed"]] = per_task
        windows.update({cell["seed"]: cell["windows"]} if "windows" in cell else {})
    return values, kept, windows


def pair_comparisons(rows, a: str, b: str, task: str, probe: str, metric: str):
    """``(over seeds, over seeds and clips)``: the paired difference A - B of ``metric`` on the seeds both
    rows have (``rows`` from :func:`seed_rows`), with Student's t interval over the seeds' fold means
    (``cagelib.evaluate.compare``) and the clip-and-seed bootstrap of the kept window predictions
    (``bootstrap_difference``); None where fewer than 2 seeds, or a seed without predictions."""
    values, kept, windows = rows
    seeds = sorted(s for s in set(values.get(a, {})) & set(values.get(b, {}))
                   if probe in values[a][s].get(task, {}) and probe in values[b][s].get(task, {}))
    if len(seeds) < 2:
        return None, None
    over_seeds = compare([values[a][s][task][probe][metric] for s in seeds],
                         [values[b][s][task][probe][metric] for s in seeds], names=(a, b))
    try:
        pa = [kept[a][s][task][probe] for s in seeds]
        pb = [kept[b][s][task][probe] for s in seeds]
        labels, clips = windows[seeds[0]][task]["labels"], windows[seeds[0]][task]["clips"]
    except KeyError:
        return over_seeds, None
    return over_seeds, bootstrap_difference(pa, pb, labels, clips, metric, seed=0, names=(a, b))


def cost_table(loaded: list[dict]) -> str:
    """Per method: pretraining seconds and ms/step (one thread), and the first stream's health before ->
    after pretraining (retrieval of the matching view among fixed windows; k-NN on fold 0's training side;
    MAMP's reconstruction error)."""
    by_method: dict[str, list[dict]] = {}
    for cell in loaded:
        if cell["method"] not in REFERENCE_CELLS:
            by_method.setdefault(cell["method"], []).append(cell)
    lines = []
    for method, seeds in by_method.items():
        stream = seeds[0]["stream"]
        line = {"method": method, "encoder": f"{seeds[0]['encoder']} ({stream})",
                "pretrain s": _stat([s["pretrain_seconds"] for s in seeds], precision=0),
                "ms/step": _stat([1000 * s["pretrain_seconds"] / s["steps"] for s in seeds], precision=0)}
        for key in ("retrieval", "knn", "reconstruction"):
            name = key if key == "reconstruction" else f"{key}_{stream}"
            init = [s["health"]["init"].get(name) for s in seeds if s["health"]["init"]]
            final = [s["health"]["final"].get(name) for s in seeds]
            line[key] = "-" if None in init + final or not final else \
                f"{np.mean(init):.3f} -> {np.mean(final):.3f}"
        lines.append(line)
    return results_table(lines)


def write_table(exp: Experiment) -> str:
    loaded = load_cells(exp)
    missing = [f"{m}-s{s}" for m, s in cells(exp) if not done(exp, m, s)]
    p, tasks = exp.pretrain, exp.data.tasks
    title = "The peers side by side" if exp.name == "peers" else f"The grid `{exp.name}` (cagelib/configs/{exp.name}.toml)"
    text = f"""# {title}

Generated by `{command_line(exp)}` from {len(loaded)} cell files in
`{_shown(Path(exp.out) / 'cells')}/`; torch {loaded[0]['torch'] if loaded else '-'}, CPU, one torch thread per cell.
{"Missing cells: " + ", ".join(missing) + "." if missing else "Every cell of the grid is here."}

Pretraining: {p.epochs} epochs of {exp.data.max_pretrain_windows:,} corpus windows of {exp.data.window} frames (no
clip of the tasks' family). Probes on each method's first stream{" (two-stream methods: also each other stream and all streams concatenated)" if exp.stream == "each" else ""} over {exp.folds} clip-grouped folds per seed; finetune:
{exp.finetune.optimizer.capitalize()} lr {exp.finetune.lr:g}, {exp.finetune.epochs} epochs. Cells: mean +- std over seeds of the seed's fold mean, in %.
The reference rows (hand-crafted features, majority class, and the supervised A-GCN trained from scratch with
its own recipe: {exp.supervised.epochs} epochs of {exp.supervised.optimizer.capitalize()} lr {exp.supervised.lr:g}) do not
depend on the probe: their one result is repeated in every column.

## Balanced accuracy (mean per-class recall over windows)

{accuracy_table(loaded, tasks, "balanced") if loaded else "(no cell yet)"}

## Clip accuracy (one vote per clip: the majority of its windows)

{accuracy_table(loaded, tasks, "clip_top1") if loaded else "(no cell yet)"}

## Paired differences (balanced accuracy, points; 95 % interval over seeds and verdict)

A - B per seed on the same folds, the mean with Student's t interval over the seeds (`cagelib.evaluate.compare`);
where the cells kept their window predictions, the "(clips)" columns add a bootstrap over seeds and test clips
(the clip is the unit of independence, `bootstrap_difference`). "A > B" or "B > A" only where the interval excludes 0. B is the same encoder at random init (the fair control)
or GE-CLR (the paper's baseline); the probes are the fair ones (z-scored features, k-NN). With this many
comparisons at 95 %, a few "separated" cells are expected by chance alone; each was measured on one machine and
one kernel set (the demo's readings are checked on two: README).

{difference_table(loaded, tasks, "balanced") if loaded else "(no cell yet)"}

## Cost and training health (first stream; before -> after pretraining, mean over seeds)

{cost_table(loaded) if loaded else "(no cell yet)"}
"""
    atomic_write_text(Path(exp.out) / "table.md", text)
    return text


def command_line(exp: Experiment) -> str:
    """The command line of ``exp``: its preset and overrides."""
    return " ".join(["python -m cagelib peers", *(["--config " + exp.name] if exp.name != "peers" else []),
                     *exp.overrides])
