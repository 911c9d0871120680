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
                            (``Experiment.supervised``, on ``supervised_tasks``): the ceiling
hand-crafted                62 affective gait features + logistic regression
                            (``cagelib.evaluate.handcrafted``), C chosen on the training side
STEP features               STEP's 175 per-frame affective values, mean and std over the window,
                            the same logistic regression (``cagelib.evaluate.step_features``)
majority class              always the most frequent training class: the floor
==========================  ==================================================================

Each cell is window top-1, balanced accuracy (mean per-class recall) and clip accuracy (majority vote
of a clip's windows), in %, as mean +- std over seeds of each seed's mean over folds. Seeds run through
``runner.run_cell`` in parallel processes of one torch thread each (``jobs.run_jobs``). Each seed's result
also keeps every row's window predictions (``"predictions"``), from which ``differences_table`` draws its
clip-and-seed bootstrap interval beside the interval over seeds.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..evaluate.compare import BOOTSTRAP_METHOD, BOOTSTRAP_METRICS, T_METHOD, bootstrap_difference, seeds_to_separate
from ..evaluate.compare import compare as paired
from ..experiment import Experiment
from ..provenance import provenance
from .jobs import run_jobs
from .runner import HANDCRAFTED, METRICS, STEP_ROW, check_output, output_token, prepare_output, probe_names, run_cell
from .tables import format_mean_std, results_table


def run_seed(exp: Experiment, seed: int, token: str | None = None) -> dict:
    """Everything of one seed (``runner.run_cell``, part "all") in the table's layout: ``{"tasks": {task:
    {"<encoder>, <probe>" or "<reference row>": fold means}}, "predictions": {task: {"labels": [...],
    "clips": [...], "rows": {the same row names: [[class of each task window] per fold repeat]}}},
    "health": ..., "seconds": ...}``."""
    cell = run_cell(exp, seed, "all", token=token)
    probes, tasks, predictions = probe_names(exp), {}, {}
    for row, per_task in cell["rows"].items():
        for task, by_probe in per_task.items():
            predicted = cell["predictions"][row][task]
            windows = predictions.setdefault(task, {**cell["windows"][task], "rows": {}})["rows"]
            if row in ("pretrained", "random init") or row.startswith(("pretrained (", "random init (")):
                tasks.setdefault(task, {}).update({f"{row}, {p}": by_probe[p] for p in probes if p in by_probe})
                windows.update({f"{row}, {p}": predicted[p] for p in probes if p in by_probe})
            else:  # a reference row: one result, whatever the probe
                tasks.setdefault(task, {})[row] = by_probe[probes[0]]
                windows[row] = predicted[probes[0]]
    return {"tasks": tasks, "predictions": predictions, "health": cell["health"],
            "pretrain_seconds": cell["pretrain_seconds"], "seconds": cell["seconds"]}


def _seed_job(args) -> dict:
    """``run_seed`` in a worker; its result is also saved at once (``seed<s>/result.json``), so a failure
    after it (another seed, the table) loses no finished seed. ``args``: ``(exp, seed, token)``."""
    exp, seed, token = args
    result = run_seed(exp, seed, token)
    check_output(exp.out, token)
    atomic_write_json(Path(exp.out) / f"seed{seed}" / "result.json", result, indent=None)  # window predictions
    return result


def compare(exp: Experiment, fresh: bool = True) -> dict:
    """Run every seed of ``exp`` (in ``exp.workers`` processes, ``run_jobs``), aggregate, write ``results.json``
    and ``table.md``. ``fresh``: replace an earlier output folder (``prepare_output``); False when the caller
    prepared it."""
    out = prepare_output(exp.out) if fresh else Path(exp.out)
    started = time.time()
    token = output_token(out)
    per_seed = run_jobs(_seed_job, [(exp, seed, token) for seed in exp.seeds], exp.workers)
    report = {"experiment": exp.to_dict(), "seeds": dict(zip(map(str, exp.seeds), per_seed)),
              "seconds": time.time() - started, "torch": torch.__version__, "provenance": provenance()}
    report["table"] = comparison_table(report)
    t0 = time.time()
    report["differences"] = differences_table(report)
    report["differences_seconds"] = time.time() - t0  # mostly the clip bootstrap
    atomic_write_json(out / "results.json", report, indent=None)  # compact: it holds every window's predictions
    atomic_write_text(out / "table.md", report["table"] + "\n\n" + DIFFERENCES_TITLE + "\n\n"
                      + report["differences"] + "\n")
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
    ("pretrained, linear (z)", HANDCRAFTED),
    ("pretrained, linear (z)", STEP_ROW),
)


DIFFERENCES_TITLE = (f"Paired differences A - B, balanced accuracy in points (95 % interval and verdict, "
                     f"{T_METHOD} and {BOOTSTRAP_METHOD}):")


def bootstrap_cell(report: dict, task: str, a: str, b: str, metric: str = "balanced", resamples: int = 2000,
                   min_seeds: int = 2):
    """The clip-and-seed bootstrap ``Comparison`` of rows ``a`` and ``b`` on ``task`` from the seeds' window
    predictions (``bootstrap_difference``, seeded 0), or None: fewer than ``min_seeds`` seeds (with one, the
    interval is over the test clips only), a seed without predictions of both rows (a results.json written
    before they were kept), or a metric the bootstrap has no form of."""
    per_seed = list(report["seeds"].values())
    kept = [s.get("predictions", {}).get(task) for s in per_seed]
    if len(per_seed) < min_seeds or metric not in BOOTSTRAP_METRICS or any(
            k is None or a not in k["rows"] or b not in k["rows"] for k in kept):
        return None
    labels, clips = kept[0]["labels"], kept[0]["clips"]
    if any(k["labels"] != labels or k["clips"] != clips for k in kept):
        raise ValueError(f"differences_table: the seeds' windows of {task!r} differ (labels or clips): the "
                         "bootstrap pairs the same windows across seeds")
    return bootstrap_difference([k["rows"][a] for k in kept], [k["rows"][b] for k in kept], labels, clips,
                                metric, resamples, seed=0, names=(a, b))


def differences_table(report: dict, metric: str = "balanced") -> str:
    """Markdown: per (A, B) of ``PAIRED`` and task, the paired difference A - B of ``metric`` with two 95 %
    intervals and verdicts (``cagelib.evaluate.compare``): "over seeds (t)", the Student-t interval over the
    seeds' fold means (where not separable, how many seeds would separate a true difference of the observed
    size at the observed spread, ``seeds_to_separate``), and "clips and seeds (bootstrap)", the bootstrap over
    seeds and clips of the seeds' window predictions (``bootstrap_cell``; its difference is of the metric over
    all windows, pooled over folds). "-" with fewer than 2 seeds, a missing row, or (bootstrap) no predictions
    in the report."""
    per_seed = list(report["seeds"].values())
    tasks = list(per_seed[0]["tasks"])
    rows = []
    for a, b in PAIRED:
        line = {"A": a, "B": b}
        for task in tasks:
            t_column, boot_column = f"{task} A - B {T_METHOD}", f"{task} A - B {BOOTSTRAP_METHOD}"
            have = all(a in s["tasks"][task] and b in s["tasks"][task] for s in per_seed)
            if len(per_seed) < 2 or not have:
                line[t_column] = line[boot_column] = "-"
                continue
            x, y = ([s["tasks"][task][row][metric] for s in per_seed] for row in (a, b))
            c = paired(x, y)
            line[t_column] = c.cell()
            if c.verdict == "not separable":  # how many seeds a true difference of this size would need
                needed = seeds_to_separate(c.difference, float(np.std(np.subtract(x, y), ddof=1)))
                line[t_column] += f" (~{needed} seeds would separate it)" if needed else ""
            boot = bootstrap_cell(report, task, a, b, metric)
            line[boot_column] = "-" if boot is None else boot.cell()
        rows.append(line)
    return results_table(rows)


def load_report(path: str | Path) -> dict:
    """A ``results.json`` written by ``compare``."""
    return json.loads(Path(path).read_text())
