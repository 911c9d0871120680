"""The demo's table on two kernel sets, and which of its readings hold on both.

Floating-point order differs between CPUs (and kernel sets), and 256 contrastive steps end in different
encoders, so a reading of the demo's table is worth stating only if it holds across seeds *and* across
kernel sets. This script takes the ``results.json`` of two ``make demo`` runs made with the same seeds,

    python -m cagelib demo out=outputs/demo                                               # the default kernels
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m cagelib demo pretrain.fast=none out=outputs/demo-avx2

and writes (``--out``, default ``benchmarks/results/demo_kernel_sets.md``): both tables, the largest cell
change between them, and for each comparison (pretrained vs its fair control, vs the paper's raw-feature
control, vs hand-crafted features) the paired difference over seeds with its 95 % interval and verdict on
each set (``cagelib.evaluate.compare``), and the reading: a verdict only where both sets give it.

    python benchmarks/demo_kernel_sets.py A/results.json B/results.json --labels "Xeon AMX, fast" "AVX2, float32"
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cagelib.evaluate.compare import compare  # noqa: E402

METRICS = (("balanced", "balanced %"), ("clip_top1", "clip %"))
# (A, B, what B is): the first is the fair control (the same encoder at random init, z-scored features)
COMPARISONS = (
    ("pretrained, linear (z)", "random init, linear (z)", "fair control: the same encoder at random init, z-scored"),
    ("pretrained, k-NN", "random init, k-NN", "the same encoder at random init, k-NN"),
    ("pretrained, linear", "random init, linear", "the paper's raw-feature protocol; random-init features are nearly collinear"),
    ("pretrained, linear", "hand-crafted, logistic regression", "62 hand-crafted gait features"),
    ("pretrained, linear (z)", "hand-crafted, logistic regression", "62 hand-crafted gait features"),
    ("pretrained, linear (z)", "STEP features, logistic regression", "STEP's 175 per-frame affective values"),
)


def tasks_of(results: dict) -> list:
    """The tasks of a ``results.json``: ``experiment.data.tasks`` (``python -m cagelib demo``), or ``config.tasks``
    (written before the experiment tree, e.g. the committed runs)."""
    return list(results["experiment"]["data"]["tasks"] if "experiment" in results else results["config"]["tasks"])


def per_seed(results: dict, task: str, row: str, metric: str) -> list[float]:
    """One value per seed (each seed's mean over folds), in seed order."""
    seeds = sorted(results["seeds"], key=int)
    return [results["seeds"][s]["tasks"][task][row][metric] for s in seeds]


def cell_changes(a: dict, b: dict) -> list[tuple[float, str, str, str]]:
    """``(|mean_b - mean_a|, task, row, metric)`` for every cell, largest first (points)."""
    out = []
    for task in tasks_of(a):
        for row in a["seeds"][next(iter(a["seeds"]))]["tasks"][task]:
            for metric in ("top1", "balanced", "clip_top1"):
                change = abs(np.mean(per_seed(b, task, row, metric)) - np.mean(per_seed(a, task, row, metric)))
                out.append((float(change), task, row, metric))
    return sorted(out, reverse=True)


def readings(a: dict, b: dict, labels: tuple[str, str]) -> list[dict]:
    """Every comparison on both sets: ``{task, metric, a, b, control, verdicts: [set A, set B], holds}``."""
    if sorted(a["seeds"]) != sorted(b["seeds"]):
        raise SystemExit(f"the two runs have other seeds: {sorted(a['seeds'])} vs {sorted(b['seeds'])}")
    out = []
    for task in tasks_of(a):
        for metric, _ in METRICS:
            for row_a, row_b, what in COMPARISONS:
                found = [compare(per_seed(r, task, row_a, metric), per_seed(r, task, row_b, metric), (row_a, row_b))
                         for r in (a, b)]
                verdicts = [c.verdict for c in found]
                holds = verdicts[0] if verdicts[0] == verdicts[1] else "differs between kernel sets"
                out.append(dict(task=task, metric=metric, a=row_a, b=row_b, control=what, found=found, holds=holds))
    return out


def _words(verdict: str, a: str, b: str) -> str:
    return {"A > B": f"{a} > {b}", "B > A": f"{b} > {a}"}.get(verdict, verdict)


def reading_lines(found: list[dict]) -> list[str]:
    """One README line per (comparison, task), generated from the verdicts: a direction is written only
    where every metric on both kernel sets separates the two rows in that direction."""
    lines = []
    for row_a, row_b, what in COMPARISONS:
        for task in dict.fromkeys(r["task"] for r in found):
            mine = [r for r in found if r["task"] == task and r["a"] == row_a and r["b"] == row_b]
            held = {r["holds"] for r in mine}
            reading = _words(held.pop(), row_a, row_b) if len(held) == 1 else "not separable (separated on some metrics only)"
            if reading == "differs between kernel sets":
                reading = "not separable (separated on one kernel set only)"
            parts = ", ".join(f"{dict(METRICS)[r['metric']].replace(' %', '')} "
                              + " / ".join(c.cell(verdict=False) for c in r["found"])
                              for r in mine)
            lines.append(f"- **{task}**, {row_a} vs {row_b} ({what}): {parts} points: **{reading}**")
    return lines


def render(a: dict, b: dict, labels: tuple[str, str], command: str) -> str:
    changes = cell_changes(a, b)
    big, task, row, metric = changes[0]
    lines = [f"# The demo on two kernel sets\n\nGenerated by `{command}`.\n",
             f"## {labels[0]}\n\n{a['table'].strip()}\n", f"## {labels[1]}\n\n{b['table'].strip()}\n",
             f"**Largest cell change between the two sets: {big:.1f} points** ({task}, {row}, {metric}); "
             f"{sum(c[0] > 1.0 for c in changes)} of {len(changes)} cells move by more than 1 point, "
             f"{sum(c[0] == 0.0 for c in changes)} not at all.\n",
             "## Paired differences over seeds (95 % interval), per kernel set\n",
             "Each seed pairs the two rows on the same folds; the interval is Student's t over seeds "
             "(`cagelib.evaluate.compare`). The reading is a verdict only where both kernel sets give it.\n",
             f"| task | metric | A | B | {labels[0]}: A - B | {labels[1]}: A - B | reading |",
             "|---|---|---|---|---|---|---|"]
    found = readings(a, b, labels)
    for r in found:
        cells = [c.cell() for c in r["found"]]
        name = dict(METRICS)[r["metric"]]
        lines.append(f"| {r['task']} | {name} | {r['a']} | {r['b']} | {cells[0]} | {cells[1]} | **{r['holds']}** |")
    lines += ["", "## Readings (the README's, generated from the verdicts above)", "",
              f"Each: the paired difference A - B in points with its 95 % interval, {labels[0]} / {labels[1]}.", "",
              *reading_lines(found)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/demo_kernel_sets.py",
                                     description="Compare two make-demo runs made on two kernel sets: both tables, "
                                                 "the largest cell change, and which readings hold on both.")
    parser.add_argument("a", type=Path, help="results.json of the first run (the default kernels)")
    parser.add_argument("b", type=Path, help="results.json of the second run (the second kernel set)")
    parser.add_argument("--labels", nargs=2, default=("default kernels", "second kernel set"),
                        help="names of the two runs in the report (the CPU and the kernel set of each)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_kernel_sets.md"),
                        help="where the markdown report is written")
    args = parser.parse_args(argv)
    a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
    command = "python benchmarks/demo_kernel_sets.py " + " ".join(
        [str(args.a), str(args.b), "--labels", *[f'"{x}"' for x in args.labels]])
    text = render(a, b, tuple(args.labels), command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
