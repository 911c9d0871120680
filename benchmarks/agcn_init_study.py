"""One change, measured: the A-GCN's embedding init of 2s-AGCN's code (``AGCNConfig.embedding_init="2s-agcn"``:
theta, phi and the residual ``down`` convolutions Kaiming normal, fan_out, zero bias) against PyTorch's default
(the project's so far), in the demo's setting, paired by seed against the demo's own run on the same kernel set.

    python benchmarks/agcn_init_study.py --out outputs/agcn_init/default                        # default kernels, fast step
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/agcn_init_study.py --no-fast \\
        --out outputs/agcn_init/avx2
    python benchmarks/agcn_init_study.py --report A.json:B.json ...   # the paired table (B = the demo's results.json)

The run is the demo's experiment (``load("demo")``; ``--no-fast``: ``pretrain.fast=none``) with the small A-GCN's
``embedding_init`` set to ``"2s-agcn"`` in the experiment itself (recorded in its ``results.json``); its seeds run
one after another in this process (``workers=1``, one torch thread), as the committed runs did.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cagelib.evaluate.compare import compare  # noqa: E402
from cagelib.experiment import Experiment, load  # noqa: E402
from cagelib.lab.comparison import PAIRED, compare as run_comparison  # noqa: E402


def experiment(out: str, fast: bool) -> Experiment:
    """The demo's experiment in ``out``, one process, with 2s-AGCN's embedding init of its (small) A-GCN."""
    exp = load("demo", {"workers": 1, "out": out, **({} if fast else {"pretrain.fast": "none"})},
               source="agcn_init_study")
    model = replace(exp.pretrain.model, embedding_init="2s-agcn")
    return replace(exp, pretrain=replace(exp.pretrain, model=model))


def tasks_of(results: dict) -> list:
    """The tasks of a ``results.json``: ``experiment.data.tasks`` (``python -m cagelib demo``), or ``config.tasks``
    (written before the experiment tree, e.g. the committed runs)."""
    return list(results["experiment"]["data"]["tasks"] if "experiment" in results else results["config"]["tasks"])


def run(out: str, fast: bool) -> None:
    torch.set_num_threads(1)
    run_comparison(experiment(out, fast))
    print((Path(out) / "table.md").read_text())


def report(pairs: list[str]) -> str:
    lines = ["| run (kernel set) | task | A (2s-agcn init) | B (pytorch init) | A - B balanced, points [95 %] | verdict |",
             "|---|---|---|---|---|---|"]
    for pair in pairs:
        a_path, b_path = pair.split(":")
        a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
        seeds = sorted(set(a["seeds"]) & set(b["seeds"]), key=int)
        for task in tasks_of(a):
            for row, _ in PAIRED[:3]:
                x = [a["seeds"][s]["tasks"][task][row]["balanced"] for s in seeds]
                y = [b["seeds"][s]["tasks"][task][row]["balanced"] for s in seeds]
                c = compare(x, y)
                lines.append(f"| {Path(a_path).stem} | {task} | {row} {c.mean_a:.1f} | {c.mean_b:.1f} | "
                             f"{c.difference:+.1f} [{c.low:+.1f}, {c.high:+.1f}] | {c.verdict} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/agcn_init_study.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/agcn_init/default", help="output folder of the run")
    parser.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                        help="the fast pretraining step, as the demo (--no-fast: the float32 step)")
    parser.add_argument("--report", nargs="+", metavar="A.json:B.json",
                        help="instead of running: the paired table of runs A (2s-agcn init) against B (the demo's)")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.report))
    else:
        run(args.out, args.fast)


if __name__ == "__main__":
    main()
