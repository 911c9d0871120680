"""The one command line: ``python -m cagelib <command> [--config PRESET] [options] [key=value ...]``.

    python -m cagelib demo                                  # the main job (preset demo; --config long)
    python -m cagelib demo pretrain.contrast.method=cage seeds=[0]
    python -m cagelib pretrain --config notebook pretrain.epochs=4
    torchrun --nproc_per_node=4 -m cagelib pretrain --config paper --data features.npy --device cuda
    python -m cagelib evaluate --run-dir outputs/runs/cage-s0-...
    python -m cagelib peers --list
    python -m cagelib reproduce --config reproduce/paper --device cuda
    python -m cagelib your-gait RUN_DIR walk.bvh
    python -m cagelib bench --device cpu --tiny
    python -m cagelib demo --help                           # every setting, its default and its meaning

Every ``key=value`` is a dotted override of the preset's experiment (``cagelib.experiment``): the tree is
checked before anything runs, and a bad key or value is named with the closest valid one.
"""
from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import threading
from pathlib import Path

from .device import DeviceError, check_device
from .errors import CagelibError
from .experiment import Experiment, load, preset_names, settings_help

COMMANDS = {  # command -> (default preset or None, one sentence)
    "demo": ("demo", "Pretrain on the embedded corpus once per seed and compare the encoder with its fair controls."),
    "pretrain": ("notebook", "Pretrain one run per seed (under torchrun: one DDP run) and save it in a run folder."),
    "evaluate": ("notebook", "Run the experiment's protocols on a run folder and write its evaluation.json."),
    "peers": ("peers", "Every variant x seed on the same split and probes, with the controls (resumable)."),
    "reproduce": ("reproduce/small", "Execute the notebooks over the experiment's variants and seeds (papermill)."),
    "your-gait": (None, "Emotion probabilities of one recording (.bvh or .npy) from a pretrained run."),
    "bench": (None, "The pretraining throughput benchmark (benchmarks/pretrain_throughput.py; its own options)."),
    "data": (None, "Rebuild the embedded data set data/bandai.npz from the Bandai BVH release."),
    "strip": (None, "Strip the outputs of notebooks (the committed notebooks hold none)."),
}
DEVICE_KEYS = ("pretrain.device", "linear.device", "finetune.device", "supervised.device")


def settings_epilog() -> str:
    rows = settings_help(Experiment)
    width = max(len(k) for k, _, _ in rows)
    lines = [f"  {key:<{width}}  {comment} (default: {default})" for key, default, comment in rows]
    return ("settings (key=value overrides; values in TOML: 4, 0.1, true, [0, 1], \"text\", none):\n"
            + "\n".join(lines) + f"\n\npresets (--config): {', '.join(preset_names())}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cagelib", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="commands:\n" + "\n".join(f"  {c:<10} {d}" for c, (_, d) in COMMANDS.items()))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (preset, sentence) in COMMANDS.items():
        if preset is None:
            continue
        q = sub.add_parser(name, help=sentence, description=sentence, epilog=settings_epilog(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        q.add_argument("--config", default=preset, metavar="PRESET",
                       help=f"A preset of cagelib/configs/ or a .toml file (default: {preset}).")
        q.add_argument("--device", help="Set every device of the experiment (" + ", ".join(DEVICE_KEYS) +
                       "): auto, cpu, cuda, cuda:1, ...")
        q.add_argument("overrides", nargs="*", metavar="key=value", help="Dotted overrides of the experiment.")
        if name in ("peers", "reproduce"):
            q.add_argument("--only", nargs="+", metavar="VARIANT", help="Run only these variants of the grid.")
            q.add_argument("--list", action="store_true", help="Check the experiment, list its cells, and exit.")
        if name == "reproduce":
            q.add_argument("--force", action="store_true",
                           help="Re-execute the notebooks of points already done (a finished pretraining is kept).")
            q.add_argument("--no-tsne", action="store_true", help="Skip the t-SNE notebook 05_tsne.")
        if name == "pretrain":
            q.add_argument("--run-dir", help="The run folder (one seed only); default: outputs/runs/<method>-s<seed>-<time>.")
            q.add_argument("--data", help="Sequences to pretrain on instead of the experiment's corpus (the DDP path's "
                                          "input): a .npy of (N, T, 16, 3), 'embedded' or 'synthetic:N,T'.")
            q.add_argument("--bn", default="sync", choices=("sync", "torch_sync", "local"),
                           help="Batch norm across DDP processes (cagelib.pretrain.distributed; default sync).")
        if name == "evaluate":
            q.add_argument("--run-dir", help="The run folder to evaluate; default: the newest complete run of the "
                                             "experiment's method under outputs/.")
    for name in ("your-gait", "bench", "data", "strip"):
        sub.add_parser(name, help=COMMANDS[name][1], add_help=False)
    return p


def experiment_of(args, parser) -> Experiment:
    only = [v for v in getattr(args, "only", None) or () if "=" not in v]
    overrides = [v for v in getattr(args, "only", None) or () if "=" in v] + list(args.overrides)  # after --only
    args.only = only
    if args.device:
        try:
            check_device(args.device, "--device")  # a device this machine lacks: refused before anything runs
        except DeviceError as err:
            parser.error(str(err))
        overrides += [f"{key}={args.device}" for key in DEVICE_KEYS]
    try:
        exp = load(args.config, overrides)
    except CagelibError as err:
        parser.error(str(err))
    if Path(exp.out).is_file():
        parser.error(f"out: {exp.out} is a file, not a folder (it holds the results)")
    if args.only:
        unknown = sorted(set(args.only) - set(exp.variants))
        if unknown:
            parser.error(f"--only: {unknown} are not variants of {exp.name!r} ({', '.join(exp.variants)})")
        exp = Experiment.from_dict({**exp.to_dict(), "variants": {k: exp.variants[k] for k in args.only}})
    return exp


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: worker processes are terminated (lab.jobs.run_jobs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] in ("your-gait", "bench", "data", "strip"):  # commands with their own options
        return _delegate(argv[0], argv[1:])
    args = parser.parse_args(argv)
    parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    exp = experiment_of(args, parser)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.command == "demo":
        from .lab.demo import run

        run(_rooted(exp))
    elif args.command == "pretrain":
        return _pretrain(exp, args, parser)
    elif args.command == "evaluate":
        from .lab.evaluation import evaluate_run
        from .lab.runs import find_run

        run_dir = args.run_dir or find_run(exp.pretrain.contrast.method, device=exp.pretrain.device)
        evaluation = evaluate_run(run_dir, exp)
        print(f"{run_dir}: {', '.join(evaluation['results'])} -> {Path(run_dir) / 'evaluation.json'}")
    elif args.command == "peers":
        from .lab.peers import cells, done, run_grid

        exp = _rooted(exp)
        if args.list:
            for name, seed in cells(exp):
                print(f"{name}, seed {seed}: {'done' if done(exp, name, seed) else 'to run'}")
            return 0
        print(run_grid(exp))
    elif args.command == "reproduce":
        from .lab.reproduce import NOTEBOOKS, check_grid, notebooks_dir, points, run_grid

        notebooks = tuple(n for n in NOTEBOOKS if not (args.no_tsne and n == "05_tsne"))
        try:
            check_grid(exp, notebooks)
            notebooks_dir()  # an installation without the notebooks says how to get them
        except (CagelibError, FileNotFoundError) as err:
            parser.error(str(err))
        if args.list:
            for variant, seed, overrides in points(exp):
                print(f"{variant}, seed {seed}: --config {exp.name} {' '.join(overrides)}")
            return 0
        csv_path, md_path, failures = run_grid(exp, args.force, notebooks)
        print(f"\n{md_path.read_text()}\nresults: {csv_path}, {md_path}")
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        return 1 if failures else 0
    return 0


def _rooted(exp: Experiment) -> Experiment:
    """``exp`` with its relative ``out`` and ``runs`` resolved against the repository (not the working folder)."""
    from .lab.workbench import resolve_path

    return Experiment.from_dict({**exp.to_dict(), "out": str(resolve_path(exp.out)),
                                 "runs": str(resolve_path(exp.runs)) if exp.runs else ""})


def _pretrain(exp: Experiment, args, parser) -> int:
    if args.run_dir and len(exp.seeds) > 1:
        parser.error(f"--run-dir: one folder for {len(exp.seeds)} seeds {list(exp.seeds)}; give seeds=[N]")
    if args.data or int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the DDP path (or one process on a .npy)
        from .pretrain.distributed import pretrain_distributed

        if not args.data:
            parser.error("--data: a DDP run needs its sequences: a .npy of (N, T, 16, 3), embedded or synthetic:N,T")
        from .data.synthetic import load_sequences

        try:
            x = load_sequences(args.data, exp.seeds[0])
        except (ValueError, OSError) as err:
            parser.error(f"--data: {err}")
        for seed in exp.seeds:
            run_dir = args.run_dir or exp.run_folder(f"{exp.pretrain.contrast.method}-s{seed}")
            result = pretrain_distributed(exp.pretrain_config(seed, run_dir, progress=True), x, bn=args.bn,
                                          resume=True)
            print(f"done: {result.run_dir}")
        return 0
    from .lab.workbench import pretrain_run

    for seed in exp.seeds:
        result = pretrain_run(exp, seed, run_dir=args.run_dir or "")
        print(f"saved run: {result.run_dir} ({len(result.history)} epochs)")
    return 0


def _delegate(command: str, argv: list[str]) -> int:
    """The commands that keep their own options: your-gait, bench (a script of benchmarks/), data, strip."""
    if command == "your-gait":
        from .lab.your_gait import main as your_gait

        your_gait(argv)
    elif command == "data":
        from .data.build import main as build

        build(argv)
    elif command == "strip":
        from .lab.notebook import main as strip

        strip(["strip", *argv])
    else:
        from .lab.workbench import repo_root

        script = repo_root() / "benchmarks" / "pretrain_throughput.py"
        if not script.is_file():
            raise SystemExit(f"python -m cagelib bench: {script} not found; the benchmarks live in a checkout")
        sys.argv = [str(script), *argv]
        runpy.run_path(str(script), run_name="__main__")
    return 0
