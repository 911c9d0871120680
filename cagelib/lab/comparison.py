"""A pretrained encoder beside its fair controls on the labelled gait tasks: the tables of ``make demo``
and of the long CPU preset.

For every seed, one pretraining per corpus (emotion4 and style15 share theirs: it holds no dataset-1
locomotion clip; walkstyle7 has its own, without dataset-2 walking), then on each task, over the same
clip-grouped folds (drawn with the seed):

==========================  ==================================================================
row                         what it is
==========================  ==================================================================
pretrained, linear          the paper's linear protocol on the frozen encoder (raw features)
pretrained, linear (z)      the same on features z-scored with the training side's statistics
pretrained, k-NN            cosine k-NN (k = 10) on raw features
random init, ...            the SAME encoder before pretraining, the same three probes
supervised                  the same architecture trained from scratch with labels
                            (``cagelib.evaluate.supervised.SupervisedConfig``): the ceiling
hand-crafted                62 affective gait features + logistic regression
                            (``cagelib.evaluate.handcrafted``), C chosen on the training side
majority class              always the most frequent training class: the floor
==========================  ==================================================================

Each cell is window top-1, balanced accuracy (mean per-class recall) and clip accuracy (majority vote
of a clip's windows), in %, as mean +- std over seeds of each seed's mean over folds. Seeds run in
parallel processes with one torch thread each (the brief's rule for a 2-core machine); a seed's result
does not depend on which process ran it. The workers die with the process that started them (also when
it is SIGKILLed: ``run_jobs``), and check the output folder's run token before they write, so a worker of
an earlier run never writes into a later run's folder.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..data.tasks import TaskConfig, embedded_set, gait_task, task_family
from ..evaluate.compare import compare as paired, seeds_to_separate
from ..evaluate.handcrafted import gait_features, handcrafted_probe
from ..evaluate.metrics import majority_result, prediction_result
from ..evaluate.features import StreamEncoder, extract_features
from ..evaluate.protocols import EvalConfig, evaluate_folds
from ..evaluate.supervised import SupervisedConfig, supervised_reference
from ..methods.encoders import AGCN
from ..pretrain.config import build_model
from ..pretrain.loop import pretrain
from .settings import RunSettings, health_labels, pretrain_config
from .jobs import run_jobs
from .tables import format_mean_std, results_table

METRICS = (("top1", "top-1"), ("balanced", "balanced"), ("clip_top1", "clip"))


@dataclass
class ComparisonConfig:
    settings: RunSettings = field(default_factory=RunSettings)  # the pretraining (method, epochs, views, ...)
    tasks: tuple = ("emotion4", "style15")  # labelled tasks (cagelib.data.tasks.TASK_NAMES)
    seeds: tuple = (0, 1, 2)  # one pretraining and one fold draw per seed
    folds: int = 4  # clip-grouped folds per repeat
    repeats: int = 1  # repeats of the fold assignment
    supervised_epochs: int | None = None  # the supervised reference's epochs (None: SupervisedConfig's); 0 = skip
    supervised_tasks: tuple = ("emotion4", "style15")  # where it runs (walkstyle7: hand-crafted features
    #                                                      are at 100 % there, and it would cost more than the rest)
    task_stride: int = 12  # stride between task windows (frames)
    task_strides: dict = field(default_factory=lambda: {"walkstyle7": 48})  # per-task exceptions: walkstyle7
    #   has 645 clips, so non-overlapping windows (1,907) keep its probes as cheap as style15's
    workers: int = 2  # parallel seed processes, one torch thread each
    out: str = "outputs/comparison"  # results.json, table.md and one run folder per seed and corpus

    def task_config(self, task: str) -> TaskConfig:
        s = self.settings
        return TaskConfig(task=task, representation=s.representation, window=s.window,
                          stride=self.task_strides.get(task, self.task_stride),
                          pretrain_stride=s.window, max_pretrain_windows=s.max_pretrain_windows or None)


def _probe_rows(name: str, encoder, task, folds, seed: int) -> dict:
    """Linear (raw and z-scored features) and k-NN of one encoder of Cartesian windows (a ``StreamEncoder``):
    row name -> per-fold EvalResults. Features are extracted once for all folds (eval mode: the same as per
    fold), then the shared fold loop (``evaluate_folds``) runs on them."""
    linear = EvalConfig.paper("linear", seed=seed, device="cpu")
    features = extract_features(encoder, task.x, linear.eval_batch_size, "cpu")  # (n, F)
    on_features = replace(task, x=features)
    return {f"{name}, linear": evaluate_folds(None, on_features, folds, "linear", linear),
            f"{name}, linear (z)": evaluate_folds(None, on_features, folds, "linear",
                                                  replace(linear, standardize_features=True)),
            f"{name}, k-NN": evaluate_folds(None, on_features, folds, "knn", replace(linear, protocol="knn"))}


def _reference_rows(config: ComparisonConfig, task, folds, seed: int, model_config) -> dict:
    """Supervised, hand-crafted and majority rows over ``folds``."""
    rows = {"hand-crafted, logistic regression": [], "majority class": []}
    features = gait_features(task.x_first_frame, task.fps, task.lengths)  # (n, 62), first-frame windows
    for train, test in folds:
        predicted = handcrafted_probe(features[train], task.y[train], features[test], seed=seed,
                                      train_groups=task.groups[train])
        rows["hand-crafted, logistic regression"].append(
            prediction_result("handcrafted", task.y[test], predicted, task.label_names, task.groups[test]))
        rows["majority class"].append(majority_result(task.y[train], task.y[test], task.label_names, task.groups[test]))
    if config.supervised_epochs != 0 and task.name in config.supervised_tasks:
        rows[SUPERVISED_ROW] = supervised_rows(task, folds, seed, model_config, config.supervised_epochs)
    return rows


SUPERVISED_ROW = "supervised (from scratch)"


def supervised_rows(task, folds, seed: int, model_config, epochs: int | None = None) -> list:
    """The supervised reference (``SupervisedConfig``'s recipe; ``epochs`` None: its own) per fold: the same
    A-GCN (``model_config``) trained from scratch on each fold's training windows, on the CPU."""
    recipe = SupervisedConfig(seed=seed, device="cpu")
    recipe = replace(recipe, epochs=epochs) if epochs else recipe
    return [supervised_reference(lambda: AGCN(model_config), task.x[train], task.y[train], task.x[test], task.y[test],
                                 recipe, label_names=task.label_names, test_groups=task.groups[test])
            for train, test in folds]


def _fold_means(results) -> dict:
    """Mean over folds of each metric: ``{"top1": ..., "balanced": ..., "clip_top1": ...}``."""
    return {key: float(np.mean([getattr(r, key) for r in results])) for key, _ in METRICS}


def corpus_groups(tasks, gs) -> list[list[str]]:
    """``tasks`` grouped by their pretraining corpus: the tasks of one family share one corpus (the clips
    outside the family), so one pretraining serves them all (emotion4 and style15: one group)."""
    by_corpus: dict[str, list[str]] = {}
    for task in tasks:
        by_corpus.setdefault(str(sorted(task_family(task, gs).tolist())), []).append(task)
    return list(by_corpus.values())


def run_seed(config: ComparisonConfig, seed: int, token: str | None = None) -> dict:
    """Everything of one seed: ``{"tasks": {task: {row: fold means}}, "health": ..., "seconds": ...}``.
    ``token``: the output folder's run token (``prepare_output``), checked before each pretraining."""
    torch.set_num_threads(1)
    started, out = time.time(), {"tasks": {}, "health": {}, "pretrain_seconds": {}}
    gs = embedded_set()
    settings = replace(config.settings, seed=seed)
    for tasks in corpus_groups(config.tasks, gs):
        built = {t: gait_task(config.task_config(t), gs) for t in tasks}
        first = built[tasks[0]]
        pcfg = pretrain_config(settings, Path(config.out) / f"seed{seed}" / f"pretrain_{'+'.join(tasks)}",
                               progress=False)
        random_init = build_model(pcfg)  # the weights the pretraining starts from
        check_output(config.out, token)
        t0 = time.time()
        result = pretrain(pcfg, first.pretrain_x, pcfg.run_dir, health_labels=health_labels(first))
        out["pretrain_seconds"]["+".join(tasks)] = time.time() - t0
        out["health"]["+".join(tasks)] = {"init": result.health_init, "final": result.history[-1]}
        for name, task in built.items():
            folds = task.folds(config.folds, config.repeats, seed)
            rows = {}
            streams = list(result.model.encoders())
            for stream in streams:
                suffix = f" ({stream})" if len(streams) > 1 else ""
                for label, model in (("pretrained", result.model), ("random init", random_init)):
                    rows.update(_probe_rows(label + suffix, StreamEncoder(model, stream).eval(), task, folds, seed))
            rows.update(_reference_rows(config, task, folds, seed, pcfg.model))
            out["tasks"][name] = {row: _fold_means(results) for row, results in rows.items()}
    out["seconds"] = time.time() - started
    return out


def _seed_job(args) -> dict:
    """``run_seed`` in a worker; its result is also saved at once (``seed<s>/result.json``), so a failure
    after it (another seed, the table) loses no finished seed. ``args``: ``(config, seed, token)``."""
    config, seed, token = args
    result = run_seed(config, seed, token)
    check_output(config.out, token)
    atomic_write_json(Path(config.out) / f"seed{seed}" / "result.json", result)
    return result


MARKER = ".cagelib-output"  # written into every folder this module fills: a later run may replace it


class OutputReplacedError(RuntimeError):
    """The output folder now belongs to a later run: a worker of an earlier one must not write there."""


def prepare_output(path: str | Path) -> Path:
    """An empty output folder at ``path``. A folder left by an earlier run of this module (it holds
    ``MARKER``) is replaced, and that is said in one line; any other non-empty folder is refused.
    ``MARKER`` holds a fresh run token (``output_token``): workers of an earlier run check it before they
    write, so they never write into this run's folder."""
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out} exists and was not written by cagelib.lab: choose another --out")
        print(f"Replacing the previous results in {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, "written by cagelib.lab; the next run with this output folder replaces it\n"
                                    f"run {uuid.uuid4().hex}\n")
    return out


def output_token(out: str | Path) -> str | None:
    """The run token in ``out``'s ``MARKER`` (None: no marker, or one written before tokens)."""
    try:
        lines = (Path(out) / MARKER).read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return next((line.split(" ", 1)[1] for line in lines if line.startswith("run ")), None)


def check_output(out: str | Path, token: str | None) -> None:
    """Raise ``OutputReplacedError`` when ``out`` no longer holds the run token ``token`` (None: no check)."""
    if token is not None and output_token(out) != token:
        raise OutputReplacedError(f"{out}: the output folder was removed or replaced by another run while this "
                                  f"worker (pid {os.getpid()}) of an earlier run was working; it stops without "
                                  "writing there")


def check_seeds(seeds, source: str = "seeds") -> None:
    """Seeds are distinct integers >= 0 (one pretraining folder per seed): a ``ValueError`` naming ``source``."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError(f"{source}: no seed given")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{source}: {seed!r} is not an integer >= 0")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ValueError(f"{source}: {twice[0]} is given twice; each seed is one pretraining, give it once")


def compare(config: ComparisonConfig, fresh: bool = True) -> dict:
    """Run every seed (in ``config.workers`` processes, ``run_jobs``), aggregate, write ``results.json`` and
    ``table.md``. ``fresh``: replace an earlier output folder (``prepare_output``); False when the caller
    prepared it. The seeds are checked first (``check_seeds``: distinct integers >= 0)."""
    check_seeds(config.seeds, "seeds")
    out = prepare_output(config.out) if fresh else Path(config.out)
    started = time.time()
    token = output_token(out)
    jobs = [(config, seed, token) for seed in config.seeds]
    per_seed = run_jobs(_seed_job, jobs, config.workers)
    report = {"config": asdict(config), "seeds": dict(zip(map(str, config.seeds), per_seed)),
              "seconds": time.time() - started, "torch": torch.__version__}
    report["table"] = comparison_table(report)
    report["differences"] = differences_table(report)
    atomic_write_json(out / "results.json", report)
    atomic_write_text(out / "table.md", report["table"] + "\n\nPaired differences, balanced accuracy in points "
                      "(95 % interval over seeds, verdict):\n\n" + report["differences"] + "\n")
    return report


def comparison_table(report: dict) -> str:
    """Markdown: a row per (encoder, probe), columns task x (top-1, balanced, clip); mean +- std over seeds."""
    per_seed = list(report["seeds"].values())
    tasks = list(per_seed[0]["tasks"])
    names = list(dict.fromkeys(row for task in tasks for row in per_seed[0]["tasks"][task]))  # first-seen order
    rows = []
    for row in names:
        line = {"encoder, probe": row}
        for task in tasks:
            for key, label in METRICS:
                if row not in per_seed[0]["tasks"][task]:  # e.g. no supervised reference on this task
                    line[f"{task} {label} %"] = "-"
                    continue
                values = np.array([seed["tasks"][task][row][key] for seed in per_seed])
                std = float(values.std(ddof=1)) if len(values) > 1 else None
                line[f"{task} {label} %"] = format_mean_std(float(values.mean()), std, precision=1)
        rows.append(line)
    return results_table(rows)


PAIRED = (  # (A, B): pretrained against its controls, the fair one first
    ("pretrained, linear (z)", "random init, linear (z)"),
    ("pretrained, k-NN", "random init, k-NN"),
    ("pretrained, linear", "random init, linear"),
    ("pretrained, linear (z)", "hand-crafted, logistic regression"),
)


def differences_table(report: dict, metric: str = "balanced") -> str:
    """Markdown: per (A, B) of ``PAIRED`` and task, the paired difference A - B of ``metric`` over seeds with its
    95 % interval and verdict (``cagelib.evaluate.compare``); where not separable, how many seeds would separate
    a true difference of the observed size at the observed spread (``seeds_to_separate``); "-" with fewer than
    2 seeds or a missing row."""
    per_seed = list(report["seeds"].values())
    tasks = list(per_seed[0]["tasks"])
    rows = []
    for a, b in PAIRED:
        line = {"A": a, "B": b}
        for task in tasks:
            have = all(a in s["tasks"][task] and b in s["tasks"][task] for s in per_seed)
            if len(per_seed) < 2 or not have:
                line[f"{task} A - B"] = "-"
                continue
            x, y = ([s["tasks"][task][row][metric] for s in per_seed] for row in (a, b))
            c = paired(x, y)
            line[f"{task} A - B"] = f"{c.difference:+.1f} [{c.low:+.1f}, {c.high:+.1f}] {c.verdict}"
            if c.verdict == "not separable":  # how many seeds a true difference of this size would need
                needed = seeds_to_separate(c.difference, float(np.std(np.subtract(x, y), ddof=1)))
                line[f"{task} A - B"] += f" (~{needed} seeds would separate it)" if needed else ""
        rows.append(line)
    return results_table(rows)


def load_report(path: str | Path) -> dict:
    """A ``results.json`` written by ``compare``."""
    return json.loads(Path(path).read_text())
