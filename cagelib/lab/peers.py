"""The peers side by side: every pretraining method on the same data, split, encoder budget and probes.

    python -m cagelib.lab.peers                        # the methods below x 3 seeds, emotion4 + style15
    python -m cagelib.lab.peers --methods geclr mamp --seeds 0
    python -m cagelib.lab.peers --list                 # the cells, and which are done
    make peers                                         # the same as the first line

One cell is one (method, seed): the demo's CPU pretraining (``cagelib.lab.demo.DemoConfig``: 8 epochs of
1,024 corpus windows of 48 frames, queue 512, key momentum 0.99, the method's own optimiser) on the clips
outside the tasks' family, then on each task, over the same clip-grouped folds (drawn with the seed), four
probes of the method's first stream (``StreamEncoder``: the stream's encoder on its own input, e.g. bone
vectors):

==============  ========================================================================================
probe           what it is
==============  ========================================================================================
linear          the paper's linear protocol on the frozen encoder (SGD lr 30, 100 epochs, raw features)
linear (z)      the same on features z-scored with the training side's statistics
k-NN            cosine k-NN (k = 10) on raw features
finetune        the encoder plus a linear layer, all trained with labels: Adam lr 1e-3 for
                ``finetune_epochs`` (CPU budget; the paper: 20 epochs, lr 0.001)
==============  ========================================================================================

A "controls" cell per seed holds the rows every method is read against: the A-GCN at random init (its
"finetune" column is the same encoder trained from scratch with the same recipe: the supervised model at
the same budget), the 62 hand-crafted gait features with a logistic regression, and the majority class.
Methods whose first encoder is not an A-GCN (MAMP's transformer, ...) add a "random init" row of their own
encoder (linear, linear (z), k-NN). A "supervised" cell per seed trains the same A-GCN from scratch with
labels on each fold with its own recipe (``SupervisedConfig``: Adam lr 1e-3, weight decay 1e-4, 60 epochs,
last epoch; ``--supervised-epochs`` overrides, 0 leaves the row out): the supervised reference row.

Each cell's JSON is written when it finishes (``--results``, committed), so an interrupted grid continues
where it stopped; a cell whose settings changed is run again. Cells run seed by seed (every method of seed
0 first), in ``--workers`` processes of one torch thread. ``table.md`` is rebuilt from the cells present:
balanced accuracy (mean per-class recall over windows), clip accuracy (majority vote of a clip's windows),
and per method the pretraining cost and training health, mean +- std over seeds of each seed's fold mean.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..data.tasks import embedded_set, gait_task
from ..evaluate.compare import compare
from ..evaluate.features import StreamEncoder, extract_features
from ..evaluate.protocols import EvalConfig, evaluate_folds
from ..evaluate.supervised import SupervisedConfig
from ..methods.encoders import AGCN
from ..methods.registry import available_methods
from ..pretrain.config import PretrainConfig, build_model
from ..pretrain.loop import pretrain
from .comparison import (
    SUPERVISED_ROW,
    ComparisonConfig,
    _fold_means,
    _reference_rows,
    corpus_groups,
    supervised_rows,
)
from .demo import DemoConfig
from .jobs import run_jobs
from .settings import RunSettings, health_labels, pretrain_config, repo_root
from .tables import format_mean_std, results_table

# The CAGE family's two ends (GE-CLR: the best on this data; CAGE: the paper's full method) and every peer.
DEFAULT_METHODS = ("geclr", "cage", "aimclr", "crossclr", "isc", "mamp", "cage_mamp")
PROBES = ("linear", "linear (z)", "k-NN", "finetune")
CONTROLS = "controls"  # the cell name of a seed's reference rows
SUPERVISED = "supervised"  # the cell name of a seed's supervised reference (SupervisedConfig's recipe)
REFERENCE_CELLS = (CONTROLS, SUPERVISED)  # cells without a pretraining of their own (the A-GCN, the demo's windows)


def registered(methods) -> tuple:
    """Those of ``methods`` that are registered (``cagelib.methods.registry``), in their order."""
    return tuple(m for m in methods if m in available_methods())


@dataclass
class PeerGridConfig:
    methods: tuple = field(default_factory=lambda: registered(DEFAULT_METHODS))  # registered methods
    seeds: tuple = (0, 1, 2)  # one pretraining and one fold draw per seed
    tasks: tuple = ("emotion4", "style15")  # labelled tasks of one family (one pretraining corpus)
    epochs: int = DemoConfig.epochs  # pretraining epochs (the demo's)
    pretrain_windows: int = DemoConfig.max_pretrain_windows  # seeded subset of the corpus (the demo's)
    folds: int = 4  # clip-grouped folds
    finetune_epochs: int = 5  # finetune epochs (Adam lr 1e-3; paper: 20 epochs at lr 0.001)
    supervised_epochs: int | None = None  # the supervised reference row: None = its own recipe's epochs
    #                                       (cagelib.evaluate.supervised.SupervisedConfig); 0 = no such row
    fast: bool = False  # pretrain with the fast step (cagelib.pretrain.fast); False: the float32 step on every
    #                     machine, so that a cell does not depend on the CPU's bf16 support
    workers: int = 2  # parallel cell processes, one torch thread each
    results: str = "benchmarks/results/peers"  # one JSON per cell and table.md (committed)
    runs: str = "outputs/peers"  # the pretraining run folders (not committed)

    def __post_init__(self) -> None:
        self.methods, self.seeds, self.tasks = tuple(self.methods), tuple(self.seeds), tuple(self.tasks)
        unknown = set(self.methods) - set(available_methods())
        if unknown:
            raise ValueError(f"PeerGridConfig: unknown methods {sorted(unknown)}; registered: {available_methods()}")
        if self.epochs < 1 or self.finetune_epochs < 1 or not 2 <= self.folds <= 7 or self.workers < 1:
            raise ValueError("PeerGridConfig: need epochs >= 1, finetune_epochs >= 1, folds in 2..7, workers >= 1")
        if self.supervised_epochs is not None and self.supervised_epochs < 0:
            raise ValueError(f"PeerGridConfig: supervised_epochs must be None or >= 0, got {self.supervised_epochs}")
        if not self.methods or not self.seeds or not self.tasks:
            raise ValueError("PeerGridConfig: need at least one method, one seed and one task")
        negative = [s for s in self.seeds if s < 0]
        if negative:
            raise ValueError(f"PeerGridConfig: seeds must be >= 0 (they seed numpy's fold draws), got {negative}")
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"PeerGridConfig: a seed or method is given twice (seeds {self.seeds}, "
                             f"methods {self.methods})")
        if self.pretrain_windows < 0:
            raise ValueError("PeerGridConfig: need pretrain_windows >= 0")
        for name in ("results", "runs"):
            folder = Path(getattr(self, name))
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"PeerGridConfig: {name}: {folder} is a file, not a folder (it holds "
                                 f"{'cells/ and table.md' if name == 'results' else 'the run folders'})")

    def demo(self, method: str) -> DemoConfig:
        """The demo's pretraining and task windows for ``method``."""
        return DemoConfig(method=method, epochs=self.epochs, tasks=self.tasks, folds=self.folds,
                          max_pretrain_windows=self.pretrain_windows)

    def settings(self, method: str) -> RunSettings:
        """The pretraining settings of ``method``'s cells: the demo's, with ``fast`` (a reference cell: GE-CLR's,
        for its A-GCN and windows)."""
        return replace(self.demo("geclr" if method in REFERENCE_CELLS else method).settings(), fast=self.fast)

    def cell_key(self, method: str) -> dict:
        """What a cell's result depends on: a saved cell with another key is run again."""
        key = {"tasks": list(self.tasks), "folds": self.folds, "finetune_epochs": self.finetune_epochs,
               "pretrain": json.loads(json.dumps(pretrain_config(self.settings(method), "").to_dict()))}
        if method == SUPERVISED:
            key["supervised"] = asdict(self.supervised_recipe())
        return key

    def supervised_recipe(self) -> SupervisedConfig:
        """The supervised reference's recipe (its seed is each cell's)."""
        recipe = SupervisedConfig(device="cpu")
        return replace(recipe, epochs=self.supervised_epochs) if self.supervised_epochs else recipe


def _finetune_config(config: PeerGridConfig, seed: int) -> EvalConfig:
    return EvalConfig.paper("finetune", optimizer="adam", lr=1e-3, epochs=config.finetune_epochs, milestones=(),
                            seed=seed, device="cpu")


def _probes(encoder, task, folds, seed: int, finetune: EvalConfig | None) -> dict:
    """Probe name -> fold means of one encoder of Cartesian windows; ``finetune`` None: no finetune probe."""
    linear = EvalConfig.paper("linear", seed=seed, device="cpu")
    features = extract_features(encoder.eval(), task.x, linear.eval_batch_size, "cpu")  # (n, F)
    on_features = replace(task, x=features)
    out = {"linear": evaluate_folds(None, on_features, folds, "linear", linear),
           "linear (z)": evaluate_folds(None, on_features, folds, "linear", replace(linear, standardize_features=True)),
           "k-NN": evaluate_folds(None, on_features, folds, "knn", replace(linear, protocol="knn"))}
    if finetune is not None:
        out["finetune"] = evaluate_folds(encoder, task, folds, "finetune", finetune)
    return {probe: _fold_means(results) for probe, results in out.items()}


def run_cell(config: PeerGridConfig, method: str, seed: int) -> dict:
    """One cell: ``{"rows": {row: {task: {probe: {top1, balanced, clip_top1}}}}, ...}`` (module docstring)."""
    torch.set_num_threads(1)
    started = time.time()
    gs = embedded_set()
    groups = corpus_groups(config.tasks, gs)
    if len(groups) != 1:
        raise ValueError(f"peers: the tasks {config.tasks} need {len(groups)} pretraining corpora; use tasks of one family")
    settings = config.settings(method)
    built = {t: gait_task(ComparisonConfig(settings=settings).task_config(t), gs) for t in config.tasks}
    folds = {t: task.folds(config.folds, 1, seed) for t, task in built.items()}
    pcfg = pretrain_config(replace(settings, seed=seed), Path(config.runs) / f"{method}-s{seed}", progress=False)
    finetune = _finetune_config(config, seed)
    cell = {"method": method, "seed": seed, "key": config.cell_key(method), "rows": {}, "torch": torch.__version__}
    if method == SUPERVISED:  # the A-GCN from scratch with labels, its own recipe: one result for every column
        for name, task in built.items():
            results = supervised_rows(task, folds[name], seed, pcfg.model, config.supervised_recipe().epochs)
            cell["rows"].setdefault(SUPERVISED_ROW, {})[name] = {probe: _fold_means(results) for probe in PROBES}
        cell["seconds"] = time.time() - started
        return cell
    if method == CONTROLS:
        encoder = StreamEncoder(build_model(pcfg))  # the A-GCN at the seed's initialisation
        for name, task in built.items():
            rows = {"random init (A-GCN)": _probes(encoder, task, folds[name], seed, finetune)}
            for row, results in _reference_rows(replace(ComparisonConfig(), supervised_epochs=0), task, folds[name],
                                                seed, pcfg.model).items():
                rows[row] = {probe: _fold_means(results) for probe in PROBES}  # one result for every column
            for row, probes in rows.items():
                cell["rows"].setdefault(row, {})[name] = probes
        cell["seconds"] = time.time() - started
        return cell
    random_init = build_model(pcfg)
    first = built[config.tasks[0]]
    shutil.rmtree(pcfg.run_dir, ignore_errors=True)  # an interrupted cell starts again
    t0 = time.time()
    result = pretrain(pcfg, first.pretrain_x, pcfg.run_dir, health_labels=health_labels(first))
    cell["pretrain_seconds"] = time.time() - t0
    cell["steps"] = pcfg.epochs * (len(first.pretrain_x) // pcfg.batch_size)
    cell["health"] = {"init": result.health_init, "final": result.history[-1]}
    pretrained, initial = StreamEncoder(result.model), StreamEncoder(random_init)
    cell["stream"], cell["encoder"] = pretrained.stream, type(pretrained.encoder).__name__
    for name, task in built.items():
        cell["rows"].setdefault(method, {})[name] = _probes(pretrained, task, folds[name], seed, finetune)
        if not isinstance(initial.encoder, AGCN):  # the A-GCN's random init is the controls' row
            row = f"random init ({cell['encoder']}, {method}'s)"
            cell["rows"].setdefault(row, {})[name] = _probes(initial, task, folds[name], seed, None)
    cell["seconds"] = time.time() - started
    return cell


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine's absolute path in a committed table)."""
    try:
        return str(path.resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def cell_path(config: PeerGridConfig, method: str, seed: int) -> Path:
    return Path(config.results) / "cells" / f"{method}-s{seed}.json"


def _done(config: PeerGridConfig, method: str, seed: int) -> bool:
    path = cell_path(config, method, seed)
    return path.is_file() and upgraded_key(json.loads(path.read_text()).get("key")) == config.cell_key(method)


def upgraded_key(key):
    """A saved cell key with its pretraining configuration in the current schema (``PretrainConfig.load``)."""
    if isinstance(key, dict) and isinstance(key.get("pretrain"), dict):
        key = {**key, "pretrain": json.loads(json.dumps(PretrainConfig.load(key["pretrain"]).to_dict()))}
    return key


def _cell_job(args) -> tuple[str, int, float]:
    config, method, seed = args
    cell = run_cell(config, method, seed)
    atomic_write_json(cell_path(config, method, seed), cell)
    return method, seed, cell["seconds"]


def cells(config: PeerGridConfig) -> list[tuple[str, int]]:
    """Every cell of the grid, seed by seed."""
    supervised = (SUPERVISED,) if config.supervised_epochs != 0 else ()
    return [(method, seed) for seed in config.seeds for method in (CONTROLS, *config.methods, *supervised)]


def run_grid(config: PeerGridConfig, log=print) -> str:
    """Run the cells not done yet, then write and return the table."""
    todo = [(config, m, s) for m, s in cells(config) if not _done(config, m, s)]
    log(f"peers: {len(cells(config)) - len(todo)} cells done, {len(todo)} to run in {config.workers} processes")
    # the workers die with this process (run_jobs); each cell is saved by its worker as soon as it is done
    run_jobs(_cell_job, todo, config.workers, done=lambda r: log(f"  {r[0]}, seed {r[1]}: {r[2]:.0f} s"))
    return write_table(config)


def load_cells(config: PeerGridConfig) -> list[dict]:
    """The saved cells of ``config`` with its current settings."""
    return [json.loads(cell_path(config, m, s).read_text()) for m, s in cells(config) if _done(config, m, s)]


def _stat(values, scale: float = 1.0, precision: int = 1) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    return format_mean_std(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None,
                           precision=precision)


def accuracy_table(loaded: list[dict], tasks, metric: str) -> str:
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
            for probe in PROBES:
                line[f"{task} {probe}"] = _stat([s[task][probe][metric] for s in seeds if probe in s.get(task, {})])
        lines.append(line)
    return results_table(lines)


FAIR_CONTROLS = {"mamp": "random init (MotionEncoder, mamp's)"}  # else the A-GCN's: "random init (A-GCN)"
COMPARED_PROBES = ("linear (z)", "k-NN")  # the fair probes (standardised features, no training)


def difference_table(loaded: list[dict], tasks, metric: str) -> str:
    """Per method and task: the paired difference over seeds (``cagelib.evaluate.compare``, 95 % interval,
    verdict) of ``metric`` against the same encoder at random init (its fair control) and against GE-CLR
    (the paper's baseline), on the fair probes. Seeds are paired by their number (same folds)."""
    values: dict[str, dict[int, dict]] = {}  # row -> seed -> per-task probe results
    for cell in loaded:
        for row, per_task in cell["rows"].items():
            values.setdefault(row, {})[cell["seed"]] = per_task
    methods = [c["method"] for c in loaded if c["method"] not in REFERENCE_CELLS]
    lines = []
    for method in dict.fromkeys(methods):
        for other in (FAIR_CONTROLS.get(method, "random init (A-GCN)"), "geclr"):
            if other == method or other not in values:
                continue
            line = {"A": method, "B": other}
            for task in tasks:
                for probe in COMPARED_PROBES:
                    seeds = sorted(set(values[method]) & set(values[other]))
                    pairs = [(values[method][s][task][probe][metric], values[other][s][task][probe][metric])
                             for s in seeds if probe in values[method][s].get(task, {})]
                    if len(pairs) < 2:
                        line[f"{task} {probe}"] = "-"
                        continue
                    c = compare([a for a, _ in pairs], [b for _, b in pairs])
                    verdict = {"A > B": "A > B", "B > A": "B > A"}.get(c.verdict, "not separable")
                    line[f"{task} {probe}"] = f"{c.difference:+.1f} [{c.low:+.1f}, {c.high:+.1f}] {verdict}"
            lines.append(line)
    return results_table(lines)


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


def write_table(config: PeerGridConfig) -> str:
    loaded = load_cells(config)
    missing = [f"{m}-s{s}" for m, s in cells(config) if not _done(config, m, s)]
    text = f"""# The peers side by side

Generated by `python -m cagelib.lab.peers` ({command_line(config)}) from {len(loaded)} cell files in
`{_shown(Path(config.results) / 'cells')}/`; torch {loaded[0]['torch'] if loaded else '-'}, CPU, one torch thread per cell.
{"Missing cells: " + ", ".join(missing) + "." if missing else "Every cell of the grid is here."}

Pretraining: the demo's ({config.epochs} epochs, {config.pretrain_windows:,} corpus windows of 48 frames, no clip of the
tasks' family). Probes on each method's first stream over {config.folds} clip-grouped folds per seed; finetune:
Adam lr 1e-3, {config.finetune_epochs} epochs. Cells: mean +- std over seeds of the seed's fold mean, in %.
The reference rows (hand-crafted features, majority class, and the supervised A-GCN trained from scratch with
its own recipe: {config.supervised_recipe().epochs} epochs of Adam lr {config.supervised_recipe().lr:g}) do not
depend on the probe: their one result is repeated in every column.

## Balanced accuracy (mean per-class recall over windows)

{accuracy_table(loaded, config.tasks, "balanced") if loaded else "(no cell yet)"}

## Clip accuracy (one vote per clip: the majority of its windows)

{accuracy_table(loaded, config.tasks, "clip_top1") if loaded else "(no cell yet)"}

## Paired differences (balanced accuracy, points; 95 % interval over seeds and verdict)

A - B per seed on the same folds, the mean with Student's t interval over the seeds (`cagelib.evaluate.compare`):
"A > B" or "B > A" only where the interval excludes 0. B is the same encoder at random init (the fair control)
or GE-CLR (the paper's baseline); the probes are the fair ones (z-scored features, k-NN). With this many
comparisons at 95 %, a few "separated" cells are expected by chance alone; each was measured on one machine and
one kernel set (the demo's readings are checked on two: README).

{difference_table(loaded, config.tasks, "balanced") if loaded else "(no cell yet)"}

## Cost and training health (first stream; before -> after pretraining, mean over seeds)

{cost_table(loaded) if loaded else "(no cell yet)"}
"""
    atomic_write_text(Path(config.results) / "table.md", text)
    return text


def command_line(config: PeerGridConfig) -> str:
    default, args = PeerGridConfig(), []
    for name in ("methods", "seeds", "epochs", "pretrain_windows", "folds", "finetune_epochs", "supervised_epochs"):
        value = getattr(config, name)
        if value != getattr(default, name):
            shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
            args.append(f"--{name.replace('_', '-')} {shown}")
    if config.fast:
        args.append("--fast")
    return " ".join(args) or "defaults"


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(a).items() if k != "list" and v is not None}
    root = repo_root()
    given.setdefault("results", str(root / PeerGridConfig.results))
    given.setdefault("runs", str(root / PeerGridConfig.runs))
    try:
        config = PeerGridConfig(**given)
    except ValueError as err:
        p.error(str(err))
    if a.list:
        for method, seed in cells(config):
            print(f"{method}, seed {seed}: {'done' if _done(config, method, seed) else 'to run'}")
        return 0
    started = time.time()
    print(run_grid(config))
    print(f"({time.time() - started:.0f} s; table: {Path(config.results) / 'table.md'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line's options, each with its help sentence (defaults: ``PeerGridConfig``)."""
    d = PeerGridConfig
    p = argparse.ArgumentParser(prog="python -m cagelib.lab.peers", description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", help=f"registered methods (default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--seeds", type=int, nargs="+",
                   help=f"seeds >= 0, one pretraining and one fold draw each (default: {' '.join(map(str, d.seeds))})")
    p.add_argument("--epochs", type=int, help=f"pretraining epochs of every method (default: {d.epochs}, the demo's)")
    p.add_argument("--pretrain-windows", type=int, dest="pretrain_windows",
                   help=f"seeded subset of corpus windows to pretrain on, 0 = all (default: {d.pretrain_windows})")
    p.add_argument("--folds", type=int, help=f"clip-grouped folds per task, 2 to 7 (default: {d.folds})")
    p.add_argument("--finetune-epochs", type=int, dest="finetune_epochs",
                   help=f"epochs of the finetune probe, Adam lr 1e-3 (default: {d.finetune_epochs})")
    p.add_argument("--supervised-epochs", type=int, dest="supervised_epochs",
                   help="epochs of the supervised reference (default: its recipe's, 60; 0: no supervised row)")
    p.add_argument("--fast", action="store_true", default=None,
                   help="pretrain with the fast step (cagelib.pretrain.fast; default: the float32 step)")
    p.add_argument("--workers", type=int, help=f"parallel cell processes of one torch thread each (default: {d.workers})")
    p.add_argument("--results", help="folder of the cell JSON files and table.md (default: benchmarks/results/peers)")
    p.add_argument("--runs", help="folder of the pretraining run folders (default: outputs/peers)")
    p.add_argument("--list", action="store_true",
                   help="check the options, print the cells and which are done, then exit")
    return p


if __name__ == "__main__":
    sys.exit(main())
