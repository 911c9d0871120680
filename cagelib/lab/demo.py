"""The main job behind ``make demo``: the embedded data, a short pretraining per seed, and the pretrained
encoder beside its fair controls on two labelled tasks (the presets ``demo`` and ``long``).

    python -m cagelib demo                                   # ~2 min on a 2-core CPU: GE-CLR, 3 seeds
    python -m cagelib demo --config long                     # ~25 min: 16 epochs, + walkstyle7, + supervised
    python -m cagelib demo pretrain.contrast.method=cage seeds=[0] out=outputs/demo_cage
    python -m cagelib demo pretrain.fast=none                # the float32 step (default: the fast step)

1. Summarise the embedded Bandai set and draw one skeleton.
2. For each seed (in parallel processes, one torch thread each): pretrain the method on the unlabelled
   corpus (no clip of the tasks' family: ``cagelib.data.tasks``), with the training health of every
   epoch in the run's ``metrics.jsonl``.
3. ``cagelib.lab.comparison``: pretrained vs the same encoder at random init (linear on raw and z-scored
   features, k-NN), hand-crafted gait features, the majority class (and, in the long preset, the
   supervised reference), window / balanced / clip accuracy, mean +- std over seeds.
4. Write ``summary.json``, ``experiment.json``, ``results.json``, ``table.md``, ``report.md``, ``skeleton.png``
   to ``out``. A second run with the same ``out`` replaces the first (and says so).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..data import cut_windows, load_embedded
from ..experiment import Experiment
from .comparison import DIFFERENCES_TITLE, compare
from .figures import save_figure
from .runner import prepare_output
from .skeleton_plots import skeleton_figure


def data_summary(out: Path) -> dict:
    """Print and save the embedded set's summary and a skeleton figure; return the summary."""
    gs = load_embedded()
    summary = gs.summary()
    summary["windows_48_stride_24"] = len(cut_windows(gs, 48, 24))
    print(f"Embedded Bandai set: {summary['clips']} clips, {summary['frames']} frames at {summary['fps']:g} fps, "
          f"{summary['windows_48_stride_24']} windows of 48 frames (stride 24)")
    try:
        walk = int(np.flatnonzero(gs.meta["content"] == "walk")[0])
        fig = skeleton_figure(gs.positions[walk], title=f"{gs.meta['clip_id'][walk]} (side view)")
        summary["figure"] = str(save_figure(fig, out / "skeleton.png"))
    except ImportError as err:  # plotting stack absent (e.g. a bare GPU box): the numbers still count
        print(f"  (no figure: {err})")
    return summary


def health_summary(report: dict) -> str:
    """One line per corpus: retrieval, spread and k-NN before -> after pretraining, mean over seeds."""
    lines = []
    per_seed = list(report["seeds"].values())
    for corpus in per_seed[0]["health"]:
        parts = []
        for key in ("retrieval_cartesian", "spread_cartesian", "knn_cartesian"):
            init = [s["health"][corpus]["init"].get(key) for s in per_seed]
            final = [s["health"][corpus]["final"].get(key) for s in per_seed]
            if None not in init + final:
                parts.append(f"{key.split('_')[0]} {np.mean(init):.3f} -> {np.mean(final):.3f}")
        chance = per_seed[0]["health"][corpus]["init"].get("chance")
        lines.append(f"- corpus of {corpus}: " + ", ".join(parts) + (f" (retrieval chance {chance:.4f})" if chance else ""))
    return "\n".join(lines)


def run(exp: Experiment) -> dict:
    """The demo (module docstring) of the experiment ``exp`` (the ``demo`` or ``long`` preset, with overrides)."""
    started = time.time()
    out = prepare_output(exp.out)
    summary = data_summary(out)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "experiment.json", exp.to_dict())
    p = exp.pretrain
    print(f"Pretraining {p.contrast.method} (views {p.contrast.views}, representation {exp.data.representation}) for "
          f"{p.epochs} epochs on {exp.data.max_pretrain_windows} corpus windows, seeds {list(exp.seeds)}, "
          f"{exp.workers} processes; then probes on {', '.join(exp.data.tasks)} ...", flush=True)
    report = compare(exp, fresh=False)
    report["total_seconds"] = time.time() - started
    atomic_write_json(out / "results.json", report, indent=None)  # compact: it holds every window's predictions
    health = health_summary(report)
    print(report["table"])
    print("\n" + DIFFERENCES_TITLE + "\n" + report["differences"])
    print("Training health (eval mode, fixed windows; before -> after pretraining, mean over seeds):\n" + health)
    _write_report(out, exp, report, health)
    print(f"\nResults: {out / 'report.md'} ({report['total_seconds']:.0f} s)")
    return report


def command(exp: Experiment) -> str:
    """The command line that reproduces ``exp``: its preset and overrides."""
    return " ".join(["python -m cagelib demo", *(["--config " + exp.name] if exp.name != "demo" else []),
                     *exp.overrides])


def _write_report(out: Path, exp: Experiment, report: dict, health: str) -> None:
    seconds = [s["seconds"] for s in report["seeds"].values()]
    p, contrast = exp.pretrain, exp.pretrain.contrast
    text = f"""# cagelib demo report

Command: `{command(exp)}` (CPU, {exp.workers} processes of one torch thread); the resolved experiment is in
`experiment.json`, the machine in `results.json` ("provenance").
Whole run {report['total_seconds']:.0f} s; a seed took {min(seconds):.0f}-{max(seconds):.0f} s.

Pretraining: {contrast.method}, {p.epochs} epochs, {exp.data.max_pretrain_windows} corpus windows of
{exp.data.window} frames (no clip of the tasks' family), queue {contrast.queue_size}, key momentum {contrast.momentum},
{"the fast step (cagelib.pretrain.fast)" if p.fast is not None else "the float32 step"}.
Evaluation: {exp.folds} clip-grouped folds x {exp.repeats} repeat(s) per seed, seeds {list(exp.seeds)};
each cell is the mean +- std over seeds of the seed's mean over folds, in %.

{report['table']}

Paired differences A - B, balanced accuracy in points, on the same folds, with two 95 % intervals
(`cagelib.evaluate.compare`): "over seeds (t)" is Student's t over the seeds' fold means; "clips and seeds
(bootstrap)" resamples the seeds and, stratified by class, the clips (a clip's windows are near-duplicates, so the
clip is the unit of independence), scoring A and B on the same resample of their window predictions (its
difference is over all windows, pooled over folds). "A > B" or "B > A" only where the interval excludes 0, else
"not separable":

{report['differences']}

Training health (eval mode, fixed windows, before -> after pretraining, mean over seeds):
{health}

Rows: "linear" is the paper's protocol (frozen encoder, 100 epochs, lr 30, last epoch) on raw features,
"linear (z)" the same on features z-scored with the training side's mean and std, "k-NN" k = 10 cosine.
"random init" is the same encoder before pretraining. "balanced" is the mean per-class recall; "clip"
is one vote per clip (majority of its windows). Caveats: style and performer are confounded in the
Bandai data, and one clip moves a fold by many points: read the spread, not only the mean.
"""
    atomic_write_text(out / "report.md", text)
