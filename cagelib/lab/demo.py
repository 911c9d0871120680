"""The main job behind ``make demo``: the embedded data, a short CAGE pretraining, a linear evaluation.

    python -m cagelib.lab.demo [--epochs 8] [--method cage] [--out outputs/demo] [--seed 0]

1. Summarise the embedded Bandai set (clips, windows, frames, per-label counts) and draw one skeleton.
2. Pretrain the chosen method (default: full CAGE) on the unlabelled corpus of ``cagelib.data.tasks``
   with CPU-sized settings (small A-GCN, a few epochs; printed at the start). The demo's own values
   (queue 512, momentum 0.99, lr x0.1 at 75 % of the epochs) live in ``DemoConfig``; its
   ``PretrainConfig`` comes from ``cagelib.lab.settings.pretrain_config`` like every other run's.
3. Linear probe (the paper's protocol: 100 epochs, lr 30, frozen features) and a k-NN probe on the
   emotion task, over repeated clip-grouped folds, for the pretrained encoder and for the *same*
   encoder at its random initialisation (the "random init + same probe" baseline).
4. Write ``summary.json``, ``results.json``, ``report.md`` and the figures to ``--out``.

Every number in the report comes from this run; rerun the command to reproduce it.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..data import cut_windows, load_embedded
from ..data.tasks import EmotionTask, TaskConfig, emotion_task
from ..evaluate.metrics import aggregate_seeds, majority_result
from ..evaluate.protocols import EvalConfig, evaluate_folds
from ..methods.registry import available_methods
from ..pretrain.config import PretrainConfig, build_model
from ..pretrain.loop import pretrain
from .figures import save_figure
from .settings import RunSettings, lr_milestones, pretrain_config
from .skeleton_plots import skeleton_figure
from .tables import format_mean_std, results_table


@dataclass
class DemoConfig:
    method: str = "cage"  # a registered method (cagelib.methods.registry.available_methods())
    epochs: int = 8  # pretraining epochs (paper: 300 for CAGE)
    queue_size: int = 512  # memory bank size; below the corpus size (paper: 2,048 with E-Gait)
    momentum: float = 0.99  # key-encoder momentum (docs/decisions.md, "Key momentum 0.99 in the demo")
    seed: int = 0  # model init, shuffling, augmentation and probe seed
    folds: int = 4  # clip-grouped folds per repeat of the emotion task
    repeats: int = 3  # repeats of the fold assignment
    out: str = "outputs/demo"  # where everything is written
    task: TaskConfig = field(default_factory=TaskConfig)  # windows and corpus

    def settings(self) -> RunSettings:
        """The demo's pretraining as ``RunSettings`` (lr x0.1 at 75 % of the epochs, rounded down)."""
        return RunSettings(method=self.method, epochs=self.epochs, milestones=lr_milestones(self.epochs, (0.75,), True),
                           queue_size=self.queue_size, momentum=self.momentum, seed=self.seed,
                           window=self.task.window, max_pretrain_windows=self.task.max_pretrain_windows or 0)

    def pretrain_config(self) -> PretrainConfig:
        return pretrain_config(self.settings(), Path(self.out) / f"pretrain_{self.method}")


def data_summary(out: Path) -> dict:
    """Print and save the embedded set's summary and a skeleton figure; return the summary."""
    gs = load_embedded()
    summary = gs.summary()
    summary["windows_48_stride_24"] = len(cut_windows(gs, 48, 24))
    print(f"Embedded Bandai set: {summary['clips']} clips, {summary['frames']} frames at {summary['fps']:g} fps, "
          f"{summary['windows_48_stride_24']} windows of 48 frames (stride 24)")
    print("  labels:", ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
    try:
        walk = int(np.flatnonzero(gs.meta["content"] == "walk")[0])
        fig = skeleton_figure(gs.positions[walk], title=f"{gs.meta['clip_id'][walk]} (side view)")
        summary["figure"] = str(save_figure(fig, out / "skeleton.png"))
        print(f"  skeleton figure: {summary['figure']}")
    except ImportError as err:  # plotting stack absent (e.g. a bare GPU box): the numbers still count
        print(f"  (no figure: {err})")
    return summary


def evaluate_encoder(encoder: torch.nn.Module, task: EmotionTask, folds, seed: int, stream: str) -> dict:
    """Linear and k-NN probes over ``folds``; returns aggregated and per-fold top-1."""
    config = EvalConfig.paper("linear", seed=seed, device="cpu", input_transform=stream)
    return {protocol: _with_balanced(evaluate_folds(encoder, task, folds, protocol, config))
            for protocol in ("linear", "knn")}


def _with_balanced(results) -> dict:
    """``aggregate_seeds`` over folds plus balanced accuracy (mean per-class recall): the task's windows
    are imbalanced (sad clips are long), so plain top-1 has a majority-class floor far above 25 %."""
    out = aggregate_seeds(results)
    balanced = np.array([np.nanmean(r.per_class) for r in results])
    out["balanced_mean"] = float(balanced.mean())
    out["balanced_std"] = float(balanced.std(ddof=1)) if len(balanced) > 1 else None
    return out


def majority_baseline(task: EmotionTask, folds) -> dict:
    """Always predict the most frequent training class, over the same folds."""
    return {"linear": _with_balanced([majority_result(task.y[tr], task.y[te], task.label_names) for tr, te in folds])}


def _row(encoder: str, stream: str, res: dict) -> dict:
    row = {"encoder": encoder, "stream": stream}
    for protocol, name in (("linear", "linear"), ("knn", "k-NN")):
        if protocol in res:
            r = res[protocol]
            row[f"{name} top-1 %"] = format_mean_std(r["top1_mean"], r["top1_std"])
            row[f"{name} balanced %"] = format_mean_std(r["balanced_mean"], r["balanced_std"])
        else:
            row[f"{name} top-1 %"] = row[f"{name} balanced %"] = ""
    return row


def run(config: DemoConfig) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary = data_summary(out)
    task = emotion_task(config=config.task)
    summary["task"] = task.summary()
    per_class = ", ".join(f"{k} {v['clips']} clips/{v['windows']} windows" for k, v in summary["task"]["per_class"].items())
    print(f"Emotion task: {summary['task']['task_windows']} windows ({per_class}); "
          f"pretraining corpus: {len(task.pretrain_x)} windows of other clips")
    atomic_write_json(out / "summary.json", summary)

    pcfg = config.pretrain_config()
    print(f"Pretraining {config.method} on CPU-sized settings: {pcfg.epochs} epochs, batch {pcfg.batch_size}, "
          f"small A-GCN {pcfg.model.scaled_widths}, windows of {config.task.window} frames, queue {config.queue_size}")
    random_init = build_model(pcfg)  # the same weights the pretraining starts from
    t0 = time.time()
    result = pretrain(pcfg, task.pretrain_x, run_dir=pcfg.run_dir)
    pretrain_seconds = time.time() - t0

    folds = task.folds(config.folds, config.repeats, config.seed)
    rows, results = [], {}
    for stream in pcfg.contrast.streams:
        for name, model in (("pretrained", result.model), ("random init", random_init)):
            encoder = model.encoders()[stream].eval()
            res = evaluate_encoder(encoder, task, folds, config.seed, stream)
            results[f"{name} / {stream}"] = res
            rows.append(_row(name, stream, res))
    results["majority class / -"] = majority_baseline(task, folds)
    rows.append(_row("majority class", "-", results["majority class / -"]))
    table = results_table(rows)
    print(table)

    report = {"config": asdict(config), "pretrain_seconds": pretrain_seconds, "total_seconds": time.time() - started,
              "final_pretrain_metrics": result.history[-1], "folds": len(folds), "results": results,
              "torch": torch.__version__, "device": "cpu"}
    atomic_write_json(out / "results.json", report)
    _write_report(out, config, summary, table, report)
    print(f"\nResults: {out / 'report.md'} (run files in {pcfg.run_dir})")
    return report


def _write_report(out: Path, config: DemoConfig, summary: dict, table: str, report: dict) -> None:
    text = f"""# cagelib demo report

Command: `python -m cagelib.lab.demo --method {config.method} --epochs {config.epochs} --seed {config.seed} --momentum {config.momentum}` (CPU).

Data: the embedded Bandai set, {summary['clips']} clips. Emotion task: 4 classes x 7 clips
({summary['task']['task_windows']} windows of {summary['task']['window_frames']} frames), evaluated over
{report['folds']} clip-grouped folds ({config.folds} folds x {config.repeats} repeats); mean +- std over folds.
Pretraining corpus: {summary['task']['pretrain_windows']} windows of the other clips (no task clip is seen).
Pretraining took {report['pretrain_seconds']:.0f} s; the whole demo {report['total_seconds']:.0f} s.

{table}

Linear: the paper's protocol (frozen encoder, 100 epochs, lr 30, last epoch reported). k-NN: k = 10,
cosine, temperature-weighted. "random init" is the same encoder before pretraining, with the same probes.
"balanced" is the mean per-class accuracy (chance 25 %); windows are imbalanced (sad clips are long),
so plain top-1 has the majority-class floor shown in the last row.

Caveats: style and performer are confounded in the Bandai data (each style was recorded within one take
group), and one clip moves a fold's accuracy by many points: read the spread, not only the mean.
These are CPU demo settings, not the paper's (see README for the full settings).
"""
    atomic_write_text(out / "report.md", text)


def aggregate_demo_runs(paths) -> str:
    """Markdown table over several demo outputs (one per seed): mean +- std over seeds of the fold means."""
    reports = [json.loads((Path(p) / "results.json").read_text()) for p in paths]
    rows = []
    for key in reports[0]["results"]:
        encoder, stream = key.split(" / ")
        row = {"encoder": encoder, "stream": stream, "seeds": len(reports)}
        for protocol, name in (("linear", "linear"), ("knn", "k-NN")):
            for metric, column in (("top1_mean", f"{name} top-1 %"), ("balanced_mean", f"{name} balanced %")):
                if protocol not in reports[0]["results"][key]:
                    row[column] = ""
                    continue
                values = np.array([r["results"][key][protocol][metric] for r in reports])
                row[column] = format_mean_std(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else None)
        rows.append(row)
    return results_table(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default=DemoConfig.method, choices=available_methods())
    p.add_argument("--epochs", type=int, default=DemoConfig.epochs)
    p.add_argument("--seed", type=int, default=DemoConfig.seed)
    p.add_argument("--seeds", type=int, nargs="+", help="several seeds: one run each under OUT/seed<s>, then a table")
    p.add_argument("--momentum", type=float, default=DemoConfig.momentum)
    p.add_argument("--out", default=DemoConfig.out)
    a = p.parse_args(argv)
    if not a.seeds:
        run(DemoConfig(method=a.method, epochs=a.epochs, seed=a.seed, momentum=a.momentum, out=a.out))
        return
    outs = [Path(a.out) / f"seed{s}" for s in a.seeds]
    for seed, out in zip(a.seeds, outs):
        run(DemoConfig(method=a.method, epochs=a.epochs, seed=seed, momentum=a.momentum, out=str(out)))
    table = aggregate_demo_runs(outs)
    text = f"# Demo over seeds {a.seeds}: mean +- std over seeds of each seed's fold mean\n\n{table}\n"
    Path(a.out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(a.out) / "seeds.md", text)
    print(text)


if __name__ == "__main__":
    main()
