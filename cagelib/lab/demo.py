"""The main job behind ``make demo``: the embedded data, a short pretraining per seed, and the pretrained
encoder beside its fair controls on two labelled tasks.

    python -m cagelib.lab.demo                    # ~3 min on a 2-core CPU: GE-CLR, 3 seeds, emotion4 + style15
    python -m cagelib.lab.demo --preset long      # ~30 min: 16 epochs, + walkstyle7, + the supervised reference
    python -m cagelib.lab.demo --method cage --seeds 0 --out outputs/demo_cage
    python -m cagelib.lab.demo --no-fast          # pretrain with the float32 step (default: the fast step)

1. Summarise the embedded Bandai set and draw one skeleton.
2. For each seed (in parallel processes, one torch thread each): pretrain the method on the unlabelled
   corpus (no clip of the tasks' family: ``cagelib.data.tasks``), with the training health of every
   epoch in the run's ``metrics.jsonl``.
3. ``cagelib.lab.comparison``: pretrained vs the same encoder at random init (linear on raw and z-scored
   features, k-NN), hand-crafted gait features, the majority class (and, in the long preset, the
   supervised reference), window / balanced / clip accuracy, mean +- std over seeds.
4. Write ``summary.json``, ``results.json``, ``table.md``, ``report.md``, ``skeleton.png`` to ``--out``.
   A second run with the same ``--out`` replaces the first (and says so).

The demo's own values (the CPU-sized schedule, queue 512, momentum 0.99) live in ``DemoConfig``; its
pretraining configuration comes from ``cagelib.lab.settings.pretrain_config`` like every other run's.
"""
from __future__ import annotations

import argparse
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..data import cut_windows, load_embedded
from ..methods.registry import available_methods
from ..pretrain.config import PretrainConfig
from .comparison import ComparisonConfig, check_seeds, compare, prepare_output
from .figures import save_figure
from .settings import RunSettings, lr_milestones, pretrain_config
from .skeleton_plots import skeleton_figure


@dataclass
class DemoConfig:
    method: str = "geclr"  # a registered method (docs/decisions.md, "The demo's method and schedule")
    epochs: int = 8  # pretraining epochs (paper: 200 for GE-CLR, 300 for CAGE)
    queue_size: int = 512  # memory bank size; below the corpus size (paper: 2,048 with E-Gait)
    momentum: float = 0.99  # key-encoder momentum (docs/decisions.md, "Key momentum 0.99 in the demo")
    seeds: tuple = (0, 1, 2)  # one pretraining and one fold draw per seed
    tasks: tuple = ("emotion4", "style15")  # labelled tasks (cagelib.data.tasks.TASK_NAMES)
    supervised_epochs: int = 0  # the supervised reference's epochs; 0 = skipped (it costs more than the demo)
    supervised_tasks: tuple = ("emotion4", "style15")  # where the supervised reference runs
    folds: int = 4  # clip-grouped folds per repeat
    repeats: int = 1  # repeats of the fold assignment
    window: int = 48  # frames per window (1.6 s at 30 fps)
    max_pretrain_windows: int = 1024  # seeded subset of the corpus
    workers: int = 3  # parallel seed processes, one torch thread each (3 on 2 cores: no core idles on the third seed)
    fast: bool = True  # the fast pretraining step (cagelib.pretrain.fast: on a CPU with native bf16, bf16 autocast,
    #                    channels-last, fused graph conv; no torch.compile for a run this short); False: the float32
    #                    step (docs/decisions.md, "The demo's step": measured, wall time -46 %, table within the spread)
    out: str = "outputs/demo"  # where everything is written (replaced by the next run)

    @classmethod
    def long(cls, **overrides) -> "DemoConfig":
        """The longer CPU preset (about 20-30 minutes on 2 cores): 16 epochs, the three tasks, and the
        supervised reference (20 epochs of its recipe) on emotion4."""
        return replace(cls(epochs=16, tasks=("emotion4", "style15", "walkstyle7"), supervised_epochs=20,
                           supervised_tasks=("emotion4",), out="outputs/long"), **overrides)

    def settings(self) -> RunSettings:
        """The pretraining as ``RunSettings`` (lr x0.1 at 75 % of the epochs, rounded down); representation
        and views are the package defaults."""
        return RunSettings(method=self.method, epochs=self.epochs, milestones=lr_milestones(self.epochs, (0.75,), True),
                           queue_size=self.queue_size, momentum=self.momentum, seed=self.seeds[0],
                           window=self.window, max_pretrain_windows=self.max_pretrain_windows, fast=self.fast)

    def pretrain_config(self) -> PretrainConfig:
        return pretrain_config(self.settings(), Path(self.out) / f"pretrain_{self.method}")

    def comparison(self) -> ComparisonConfig:
        return ComparisonConfig(settings=self.settings(), tasks=tuple(self.tasks), seeds=tuple(self.seeds),
                                folds=self.folds, repeats=self.repeats, supervised_epochs=self.supervised_epochs,
                                supervised_tasks=tuple(self.supervised_tasks),
                                workers=self.workers, out=self.out)


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


def run(config: DemoConfig) -> dict:
    """The demo (module docstring); the seeds are checked before anything is written (``check_seeds``)."""
    started = time.time()
    check_seeds(config.seeds, "seeds")
    out = prepare_output(config.out)
    summary = data_summary(out)
    atomic_write_json(out / "summary.json", summary)
    settings = config.settings()
    print(f"Pretraining {config.method} (views {settings.views}, representation {settings.representation}) for "
          f"{config.epochs} epochs on {config.max_pretrain_windows} corpus windows, seeds {list(config.seeds)}, "
          f"{config.workers} processes; then probes on {', '.join(config.tasks)} ...", flush=True)
    report = compare(config.comparison(), fresh=False)
    report["total_seconds"] = time.time() - started
    report["demo"] = asdict(config)
    atomic_write_json(out / "results.json", report)
    health = health_summary(report)
    print(report["table"])
    print("\nPaired differences, balanced accuracy in points (95 % interval over seeds, verdict):\n"
          + report["differences"])
    print("Training health (eval mode, fixed windows; before -> after pretraining, mean over seeds):\n" + health)
    _write_report(out, config, report, health)
    print(f"\nResults: {out / 'report.md'} ({report['total_seconds']:.0f} s)")
    return report


def command(config: DemoConfig) -> str:
    """The command line that reproduces ``config`` (the defaults are left out)."""
    preset = DemoConfig.long() if config.epochs == DemoConfig.long().epochs else DemoConfig()
    args = ["python -m cagelib.lab.demo"] + (["--preset long"] if preset.out == "outputs/long" else [])
    for name in ("method", "epochs", "out"):
        if getattr(config, name) != getattr(preset, name):
            args.append(f"--{name} {getattr(config, name)}")
    if tuple(config.seeds) != tuple(preset.seeds):
        args.append("--seeds " + " ".join(map(str, config.seeds)))
    if config.fast != preset.fast:
        args.append("--fast" if config.fast else "--no-fast")
    return " ".join(args)


def _write_report(out: Path, config: DemoConfig, report: dict, health: str) -> None:
    seconds = [s["seconds"] for s in report["seeds"].values()]
    text = f"""# cagelib demo report

Command: `{command(config)}` (CPU, {config.workers} processes of one torch thread).
Whole run {report['total_seconds']:.0f} s; a seed took {min(seconds):.0f}-{max(seconds):.0f} s.

Pretraining: {config.method}, {config.epochs} epochs, {config.max_pretrain_windows} corpus windows of
{config.window} frames (no clip of the tasks' family), queue {config.queue_size}, key momentum {config.momentum},
{"the fast step (cagelib.pretrain.fast)" if config.fast else "the float32 step"}.
Evaluation: {config.folds} clip-grouped folds x {config.repeats} repeat(s) per seed, seeds {list(config.seeds)};
each cell is the mean +- std over seeds of the seed's mean over folds, in %.

{report['table']}

Paired differences A - B, balanced accuracy in points: per seed on the same folds, the mean with its 95 %
interval over seeds (Student's t, `cagelib.evaluate.compare`); "A > B" or "B > A" only where the interval
excludes 0, else "not separable":

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


DESCRIPTION = ("The main job behind `make demo`: summarise the embedded Bandai set, pretrain a method on its "
               "unlabelled corpus once per seed (in parallel processes), and compare the pretrained encoder "
               "with the same encoder at random init, hand-crafted features and the majority class on labelled "
               "gait tasks; the tables and report go to --out.")
EXAMPLES = """examples:
  python -m cagelib.lab.demo                    # ~3 min on a 2-core CPU: GE-CLR, 3 seeds, emotion4 + style15
  python -m cagelib.lab.demo --preset long      # ~30 min: 16 epochs, + walkstyle7, + the supervised reference
  python -m cagelib.lab.demo --method cage --seeds 0 --out outputs/demo_cage"""


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m cagelib.lab.demo``."""
    p = argparse.ArgumentParser(prog="python -m cagelib.lab.demo", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("demo", "long"), default="demo",
                   help="The size of the job: demo (~3 min on 2 cores) or long (~30 min: 16 epochs, walkstyle7 "
                        "and the supervised reference); default demo.")
    p.add_argument("--method", choices=available_methods(), metavar="METHOD",
                   help=f"The method to pretrain, one of {', '.join(available_methods())} (default: geclr).")
    p.add_argument("--epochs", type=int, help="The pretraining epochs per seed, an integer >= 1 (default: the preset's).")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="The seeds, distinct integers >= 0: one pretraining and one fold draw each (default: 0 1 2).")
    p.add_argument("--workers", type=int,
                   help="The parallel seed processes of one torch thread each, an integer >= 1 (default: 3).")
    p.add_argument("--out", help="The output folder, replaced by the next run with the same --out "
                                 "(default: outputs/demo, or outputs/long for the long preset).")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                   help="Pretrain with the fast step (the default); --no-fast: the float32 step.")
    return p


def _check_arguments(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Refuse a bad command line before anything runs, naming the option and the problem."""
    if a.seeds is not None:
        try:
            check_seeds(a.seeds, "--seeds")
        except ValueError as err:
            p.error(str(err))
    for name in ("epochs", "workers"):
        value = getattr(a, name)
        if value is not None and value < 1:
            p.error(f"--{name}: {value} is below 1; give an integer >= 1")


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: the seed workers are terminated (run_jobs)


def main(argv=None) -> None:
    p = parser()
    a = p.parse_args(argv)
    _check_arguments(p, a)
    config = DemoConfig.long() if a.preset == "long" else DemoConfig()
    given = {k: (tuple(v) if k == "seeds" else v) for k, v in vars(a).items() if k != "preset" and v is not None}
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    run(replace(config, **given))


if __name__ == "__main__":
    main()
