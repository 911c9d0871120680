"""The decisions table of "Pretraining that learns": input representation x contrastive views x method,
with the training health and the probes of each cell, beside the same encoder at random init.

    python benchmarks/learning_grid.py                 # the grid of docs/decisions.md (~20 min on 2 cores)
    python benchmarks/learning_grid.py --seeds 0 1     # more seeds per cell
    python benchmarks/learning_grid.py --list          # the cells

Each cell is one ``cagelib.lab.comparison.run_seed`` of the demo's experiment (``load("demo")``, with the cell's
``pretrain.contrast.method``, ``data.representation`` and ``pretrain.contrast.views``: the demo's pretraining and
probes, 8 epochs, 1,024 corpus windows without dataset-1 locomotion, emotion4 and style15 over 4 clip-grouped folds,
no supervised reference), run in parallel processes of one torch thread. A cell's JSON is written when it
finishes (``benchmarks/results/learning_grid/``), so an interrupted grid continues where it stopped;
``learning_grid.md`` is rebuilt from the JSON files. The health columns come from the run's
``health_init.json`` and last ``metrics.jsonl`` record (``cagelib.pretrain.health``).

A cell's JSON also keeps ``run_seed``'s window predictions (``"predictions"``: per task the windows' labels and
clips and, per row, the predicted class of every window per fold repeat; each list on one line), from which the
table gives, per cell, task and fair probe (linear (z), k-NN), the paired difference "pretrained - random init" of
balanced accuracy with the 95 % bootstrap interval over the test clips and the cell's seeds
(``cagelib.evaluate.compare.bootstrap_difference``) and its verdict; "-" for a cell written before the predictions
were kept.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cagelib.evaluate.compare import Comparison  # noqa: E402
from cagelib.experiment import Experiment, load  # noqa: E402
from cagelib.lab.comparison import bootstrap_cell, run_seed  # noqa: E402
from cagelib.atomic import json_text  # noqa: E402
from cagelib.lab.runner import prepare_output  # noqa: E402
from cagelib.lab.tables import format_mean_std, results_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "learning_grid"  # one JSON per cell (committed)
RUNS = Path(__file__).resolve().parents[1] / "outputs" / "learning_grid"  # run folders (not committed)
TASKS, FAIR_PROBES = ("emotion4", "style15"), ("linear (z)", "k-NN")  # the table's tasks and probes
CELLS = ([("geclr", r, v) for r in ("first_frame", "root_relative", "root_velocity") for v in ("paper", "crop", "body")]
         + [("cage", "root_relative", v) for v in ("paper", "body")])


def cell_name(method: str, representation: str, views: str, seed: int) -> str:
    return f"{method}-{representation}-{views}-s{seed}"


def cell_experiment(method: str, representation: str, views: str, seed: int, epochs: int) -> Experiment:
    """The demo's experiment (no supervised reference) as one cell runs it: the cell's method, representation
    (data and pretraining), views, epochs and seed, one process, its run folders under ``RUNS``."""
    return load("demo", {"pretrain.contrast.method": method, "pretrain.epochs": epochs, "seeds": [seed],
                         "supervised_tasks": [], "workers": 1, "data.representation": representation,
                         "pretrain.contrast.views": views,
                         "out": str(RUNS / cell_name(method, representation, views, seed))}, source="learning_grid")


def run_cell(args) -> str:
    method, representation, views, seed, epochs = args
    name = cell_name(method, representation, views, seed)
    exp = cell_experiment(method, representation, views, seed, epochs)
    prepare_output(exp.out)
    result = run_seed(exp, seed)  # with its window predictions, for the paired differences of the table
    metrics = next(Path(exp.out).glob("seed*/pretrain_*/metrics.jsonl"))
    result["history"] = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    result["cell"] = {"method": method, "representation": representation, "views": views, "seed": seed,
                      "epochs": epochs}
    (RESULTS / f"{name}.json").write_text(json_text(result, indent=1, default=float) + "\n")
    return name


def paired_difference(results: list[dict], task: str, a: str, b: str) -> Comparison | None:
    """Rows ``a`` - ``b`` of balanced accuracy on ``task`` over the seeds ``results`` of one cell: the clip-and-seed
    bootstrap of the kept window predictions (``comparison.bootstrap_cell``; with one seed, over the test clips
    only); None when a seed kept no predictions of both rows (a cell written before they were kept)."""
    return bootstrap_cell({"seeds": dict(enumerate(results))}, task, a, b, "balanced", min_seeds=1)


def _cell_row(results: list[dict]) -> dict:
    cell = results[0]["cell"]
    corpus = next(iter(results[0]["health"]))
    row = {"method": cell["method"], "representation": cell["representation"], "views": cell["views"],
           "seeds": len(results)}

    def stat(values, precision=3):
        values = np.array(values, dtype=float)
        return format_mean_std(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None,
                               precision)

    for key, label in (("retrieval_cartesian", "retrieval"), ("spread_cartesian", "spread"),
                       ("knn_cartesian", "k-NN monitor")):
        init = [r["health"][corpus]["init"][key] for r in results]
        final = [r["health"][corpus]["final"][key] for r in results]
        row[f"{label} init -> final"] = f"{stat(init)} -> {stat(final)}"
    row["loss epoch 1 -> last"] = (f"{stat([r['history'][0]['loss'] for r in results], 2)} -> "
                                  f"{stat([r['history'][-1]['loss'] for r in results], 2)}")
    for task in TASKS:
        for encoder in ("pretrained", "random init"):
            suffix = " (cartesian)" if f"{encoder} (cartesian), linear (z)" in results[0]["tasks"][task] else ""
            for probe in FAIR_PROBES:
                values = [r["tasks"][task][f"{encoder}{suffix}, {probe}"]["balanced"] for r in results]
                row[f"{task} {encoder} {probe} bal. %"] = stat(values, 1)
    for task in TASKS:
        suffix = " (cartesian)" if "pretrained (cartesian), linear (z)" in results[0]["tasks"][task] else ""
        for probe in FAIR_PROBES:
            c = paired_difference(results, task, f"pretrained{suffix}, {probe}", f"random init{suffix}, {probe}")
            row[f"{task} {probe} pretrained - random init bal. points [95 % interval] verdict"] = (
                "-" if c is None else c.cell())
    return row


def write_table() -> str:
    groups: dict[tuple, list[dict]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        cell = result["cell"]
        groups.setdefault((cell["method"], cell["representation"], cell["views"]), []).append(result)
    order = {cell: i for i, cell in enumerate(CELLS)}
    rows = [_cell_row(groups[key]) for key in sorted(groups, key=lambda k: order.get(k, len(order)))]
    table = results_table(rows)
    text = ("# Learning grid: representation x views x method (generated by benchmarks/learning_grid.py)\n\n"
            "Health: eval-mode retrieval@256 of the matching view (chance 0.004), feature spread (1 = spread over "
            "the sphere, 0 = collapsed) and the k-NN monitor on emotion4 training windows, before -> after "
            "pretraining. Probes: balanced accuracy in % on clip-grouped folds, mean (+- std over seeds).\n\n"
            "Paired differences (the last columns): pretrained - random init (the same encoder before pretraining, "
            "the same probe) of balanced accuracy over all the task's windows pooled over the folds, in points, "
            "with a 95 % interval from a bootstrap that resamples the test clips (a clip's windows together: the "
            "clip is the unit of independence, not the window) and the cell's seeds; with one seed the interval is "
            "over the test clips only. Verdict \"A > B\": pretrained > random init, \"B > A\": the reverse, "
            "\"not separable\": the interval contains 0. \"-\": the cell was written before its window "
            "predictions were kept (rerun it to fill them in).\n\n"
            + table + "\n")
    (RESULTS.parent / "learning_grid.md").write_text(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=load("demo").pretrain.epochs)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--list", action="store_true")
    p.add_argument("--table", action="store_true", help="only rebuild learning_grid.md from the JSON files")
    a = p.parse_args(argv)
    jobs = [(m, r, v, s, a.epochs) for s in a.seeds for (m, r, v) in CELLS]
    if a.list:
        print("\n".join(cell_name(*job[:4]) for job in jobs))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    todo = [job for job in jobs if not (RESULTS / f"{cell_name(*job[:4])}.json").is_file()]
    if todo and not a.table:
        print(f"{len(jobs) - len(todo)} cells done, {len(todo)} to run", flush=True)
        with ProcessPoolExecutor(a.workers, mp_context=get_context("spawn")) as pool:
            for name in pool.map(run_cell, todo):
                print("done", name, flush=True)
    print(write_table())


if __name__ == "__main__":
    main()
