"""Does the fast step change what is learned? The same short pretraining in float32 and in the fast mode.

    python benchmarks/fast_equivalence.py                              # the demo's GE-CLR, 8 epochs, seeds 0 1 2
    python benchmarks/fast_equivalence.py --method cage --epochs 4 --seeds 0 1   # CAGE: every fast feature

For every seed, the demo's pretraining (the ``demo`` preset, ``load("demo")``: 1,024 corpus windows of 48 frames,
small A-GCN, batch 32, queue 512, key momentum 0.99, lr x0.1 at 75 % of the epochs) runs three times, one
torch thread, from the same initial weights, data order and augmentation draws: ``fp32`` (``PretrainConfig.fast
= None``: ``train_step``), ``fast`` (``FastConfig()`` resolved for this machine and this run: on a CPU with
native bf16, bf16 autocast + channels-last + fused graph convolution, no compile) and the control
``fp32_reordered`` (``FastConfig(amp=False)``: float32, only the summation order differs from ``fp32``; it
shows how far two runs drift apart from rounding alone). Compared:

- the training health after the last epoch (``cagelib.pretrain.health``, always measured in float32 on fixed
  windows and views): retrieval, alignment, uniformity, spread and k-NN of every stream, and the loss;
- a linear probe on emotion4 (the demo's linear protocol on the frozen encoder, raw and z-scored features,
  and a cosine k-NN; 4 clip-grouped folds drawn with the seed): window top-1 and balanced accuracy.

Verdict per metric: the fast-vs-fp32 difference of the same seed (paired: only the arithmetic differs) against
the seed spread (max - min over the fp32 runs of the seeds) and beside the control's paired difference. Writes
``<out>/fast_equivalence_<method>.json`` and ``.md`` (default ``benchmarks/results/``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cagelib.atomic import atomic_write_text
from cagelib.data.tasks import embedded_set, gait_task
from cagelib.evaluate.features import StreamEncoder, extract_features
from cagelib.evaluate.protocols import evaluate_folds
from cagelib.experiment import Experiment, load as load_experiment
from cagelib.lab.runner import health_labels
from cagelib.pretrain.fast import FastConfig
from cagelib.pretrain.loop import pretrain

HEALTH = ("retrieval", "alignment", "uniformity", "spread", "knn")
MODES = ("fp32", "fast", "fp32_reordered")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="geclr", help="a registered method (default: the demo's, geclr)")
    p.add_argument("--epochs", type=int, default=8, help="pretraining epochs (default: the demo's 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--task", default="emotion4", help="the labelled task of the linear probe")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", default="outputs/fast_equivalence", help="where the runs are written")
    p.add_argument("--out", default="benchmarks/results", help="where the JSON and markdown reports go")
    return p.parse_args(argv)


def machine() -> str:
    name = "unknown CPU"
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def experiment(args) -> Experiment:
    """The demo's experiment (``load("demo")``) with this benchmark's method, epochs, seeds and probe task."""
    return load_experiment("demo", {"pretrain.contrast.method": args.method, "pretrain.epochs": args.epochs,
                                    "seeds": list(args.seeds), "data.tasks": [args.task]}, source="fast_equivalence")


def probe(model, task, exp: Experiment, seed: int) -> dict:
    """Linear (raw, z-scored) and k-NN on the frozen encoders, fold means of top-1 and balanced accuracy."""
    folds = task.folds(exp.folds, exp.repeats, seed)
    linear = replace(exp.eval_config("linear", seed), device="cpu")
    rows = {}
    for stream in model.encoders():
        features = extract_features(StreamEncoder(model, stream).eval(), task.x, linear.eval_batch_size, "cpu")
        on_features = replace(task, x=features)
        for name, protocol, config in (("linear", "linear", linear),
                                       ("linear (z)", "linear", replace(linear, standardize_features=True)),
                                       ("k-NN", "knn", replace(exp.eval_config("knn", seed), device="cpu"))):
            results = evaluate_folds(None, on_features, folds, protocol, config)
            for metric in ("top1", "balanced"):
                rows[f"{name} {metric} ({stream})"] = float(np.mean([getattr(r, metric) for r in results]))
    return rows


def mode_fast(mode: str) -> FastConfig | None:
    """The ``fast`` setting of a mode: fp32 None (``train_step``), fast ``FastConfig()`` (the demo's), the control
    ``FastConfig(amp=False)``."""
    return {"fp32": None, "fast": FastConfig(), "fp32_reordered": FastConfig(amp=False)}[mode]


def run_one(args, exp: Experiment, mode: str, seed: int, task) -> dict:
    """Pretrain ``mode`` with ``seed`` on the task's corpus (``task.pretrain_x``), then its health and probe."""
    run_dir = Path(args.runs) / f"{args.method}-e{args.epochs}-s{seed}-{mode}"
    config = replace(exp.pretrain_config(seed, run_dir), device="cpu", fast=mode_fast(mode))
    sidecar = run_dir / "equivalence_run.json"  # when and under which load the run trained (kept on re-runs)
    began, load = time.perf_counter(), os.getloadavg()
    result = pretrain(config, task.pretrain_x, run_dir, resume=True, health_labels=health_labels(task))
    seconds = time.perf_counter() - began
    if not sidecar.is_file():
        atomic_write_text(sidecar, json.dumps({"wall_seconds": seconds, "load_average_before": list(load),
                                               "load_average_after": list(os.getloadavg())}))
    trained = json.loads(sidecar.read_text())
    final = result.history[-1]
    health = {k: v for k, v in final.items() if k.split("_")[0] in HEALTH or k == "loss"}
    row = {"mode": mode, "seed": seed, "fast": config.fast.to_dict() if config.fast else None,
           "pretrain_seconds": sum(h["seconds"] for h in result.history),  # the epochs' training steps only
           "wall_seconds": trained["wall_seconds"], "load_average_before": trained["load_average_before"],
           "load_average_after": trained["load_average_after"],
           "health": health, "probe": probe(result.model, task, exp, seed),
           "losses": [h["loss"] for h in result.history]}
    print(f"  {args.method} seed {seed} {mode}: {row['pretrain_seconds']:.0f} s of training steps (load "
          f"{row['load_average_before'][0]:.2f}), final loss {final['loss']:.4f}, "
          f"retrieval_cartesian {health.get('retrieval_cartesian', float('nan')):.3f}", flush=True)
    return row


def compare(runs: list[dict], seeds: list[int]) -> dict:
    """Per metric: values per mode and seed, paired |fast - fp32| and |control - fp32| per seed, the fp32 seed
    spread and the verdict (every paired fast difference within the seed spread)."""
    table = {}
    by = {(r["mode"], r["seed"]): r for r in runs}
    metrics = [("health", k) for k in runs[0]["health"]] + [("probe", k) for k in runs[0]["probe"]]
    for kind, key in metrics:
        values = {mode: [by[(mode, s)][kind][key] for s in seeds] for mode in MODES}
        paired = {mode: [abs(v - e) for v, e in zip(values[mode], values["fp32"])] for mode in MODES[1:]}
        spread = (max(values["fp32"]) - min(values["fp32"])) if len(seeds) > 1 else None
        table[key] = {"kind": kind, **values, **{f"{mode}_mean": float(np.mean(values[mode])) for mode in MODES},
                      "fast_paired_abs_diff": paired["fast"], "control_paired_abs_diff": paired["fp32_reordered"],
                      "fp32_seed_spread": spread,
                      "fast_minus_fp32_mean": float(np.mean(values["fast"]) - np.mean(values["fp32"])),
                      "fp32_seed_std": float(np.std(values["fp32"], ddof=1)) if len(seeds) > 1 else None,
                      "within_seed_spread": None if spread is None else bool(max(paired["fast"]) <= spread),
                      "control_within_seed_spread": None if spread is None else bool(
                          max(paired["fp32_reordered"]) <= spread)}
    return table


def markdown(report: dict) -> str:
    seeds = report["seeds"]
    lines = [f"# fast vs fp32: {report['method']}, demo settings, {report['epochs']} epochs, seeds "
             f"{', '.join(map(str, seeds))}", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {report['machine']}; torch {report['torch']}; {report['threads']} torch thread(s).  ",
             f"Fast mode (resolved here): {report['fast_active']}.  ",
             "Training seconds (the epochs' steps, per run; other jobs shared the machine, 1-minute load average "
             "when the run started): " + ", ".join(
                 f"{r['mode']} s{r['seed']} {r['pretrain_seconds']:.0f} (load {r['load_average_before'][0]:.1f})"
                 for r in report["runs"]) + ".", "",
             "Columns: each mode's value per seed; *paired diff*: |fast - fp32| of the same seed (same initial "
             "weights, data order and augmentation draws: only the arithmetic differs); *control*: |fp32_reordered - "
             "fp32| of the same seed (float32, only the summation order differs); *seed spread*: max - min over the "
             "fp32 runs of the seeds; *within*: every paired diff <= the seed spread (fast; control); *mean diff*: "
             "mean over seeds of fast - mean of fp32. Health metrics are measured in float32 in every mode; probe "
             "values in %.", "",
             "| metric | fp32 | fast | fp32_reordered | paired diff (fast) | control | seed spread | within (fast; control) "
             "| mean diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{v:.3g}"  # noqa: E731
    join = lambda vs: " / ".join(map(fmt, vs))  # noqa: E731
    for key, row in report["comparison"].items():
        word = lambda v: "-" if v is None else ("yes" if v else "**no**")  # noqa: E731
        within = f"{word(row['within_seed_spread'])}; {word(row['control_within_seed_spread'])}"
        spread = "-" if row["fp32_seed_spread"] is None else fmt(row["fp32_seed_spread"])
        lines.append(f"| {key} | {join(row['fp32'])} | {join(row['fast'])} | {join(row['fp32_reordered'])} | "
                     f"{join(row['fast_paired_abs_diff'])} | {join(row['control_paired_abs_diff'])} | {spread} | {within} | "
                     f"{row['fast_minus_fp32_mean']:+.3g} |")
    rows = report["comparison"].values()
    verdicts = [r["within_seed_spread"] for r in rows if r["within_seed_spread"] is not None]
    controls = [r["control_within_seed_spread"] for r in rows if r["control_within_seed_spread"] is not None]
    fast_mean = float(np.mean([np.mean(r["fast_paired_abs_diff"]) / (r["fp32_seed_spread"] or np.nan) for r in rows]))
    control_mean = float(np.mean([np.mean(r["control_paired_abs_diff"]) / (r["fp32_seed_spread"] or np.nan) for r in rows]))
    lines += ["", f"Every paired difference within the seed spread: fast {sum(verdicts)} of {len(verdicts)} metrics, "
              f"control (float32, other summation order) {sum(controls)} of {len(controls)}. Mean over metrics of "
              f"(mean paired diff / seed spread): fast {fast_mean:.2f}, control {control_mean:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    exp = experiment(args)
    task = gait_task(exp.data, embedded_set(), args.task)
    print(f"fast vs fp32: {args.method}, {args.epochs} epochs, seeds {args.seeds}, {args.threads} thread(s); "
          f"probe on {args.task} ({len(task.x)} windows)", flush=True)
    runs = []
    for seed in args.seeds:  # interleaved: fp32 then fast for each seed
        for mode in MODES:
            runs.append(run_one(args, exp, mode, seed, task))
    fast_config = mode_fast("fast")
    active = fast_config.resolve("cpu", planned_steps=args.epochs * (len(task.pretrain_x) // exp.pretrain.batch_size))
    report = {"benchmark": "fast_equivalence", "command": "python " + " ".join(sys.argv), "method": args.method,
              "epochs": args.epochs, "seeds": args.seeds, "threads": args.threads, "task": args.task,
              "torch": torch.__version__, "machine": machine(), "fast_active": {k: v for k, v in active.items() if v},
              "runs": runs, "comparison": compare(runs, args.seeds)}
    out = Path(args.out)
    atomic_write_text(out / f"fast_equivalence_{args.method}.json", json.dumps(report, indent=2))
    atomic_write_text(out / f"fast_equivalence_{args.method}.md", markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
