"""Batch runs: execute the notebook sequence with papermill over a parameter grid and collect the results.

    python -m cagelib.lab.reproduce                                   # small grid on the CPU (minutes)
    python -m cagelib.lab.reproduce --grid paper --device cuda        # the paper's settings (GPU hours)
    python -m cagelib.lab.reproduce --grid paper --device cuda --fast # ... with bf16 + compile + CUDA graphs
    python -m cagelib.lab.reproduce --grid speed --device cuda        # the HSMB speed ablation
    python -m cagelib.lab.reproduce --grid small --methods geclr cage --seeds 0 1 2 --list

For every grid point (a method variant and a seed) the run folder ``<out>/<grid>/<variant>-s<seed>/``
gets the executed ``03_pretrain.ipynb`` (pretraining: ``config.json``, ``metrics.jsonl``,
``checkpoint.pt``, ``workbench.json``) and ``04_evaluate.ipynb`` (``evaluation.json``). Once per grid,
``01_data.ipynb`` records the data and ``05_tsne.ipynb`` compares two methods' features. Then
``results.csv`` (one row per run) and ``results.md`` (mean and std over seeds per variant, then every
run) are generated from the runs' ``evaluation.json`` files: nothing is typed by hand.

A point whose evaluation is already there with the same settings is skipped, and an interrupted
pretraining is resumed, so rerunning the command continues a grid. ``--force`` re-executes every
notebook (a finished pretraining stays finished: delete its folder to train it again).
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat
import papermill

from ..device import DeviceError, check_device
from ..errors import ParameterError
from ..methods.registry import available_methods
from .evaluation import EvalSettings, collect_results
from .parameters import check_parameters
from .runs import load_run
from .settings import EVALUATION_FILE, RunSettings, read_json, repo_root, resolve_path
from .tables import summarize_results, write_results

NOTEBOOKS = ("01_data", "03_pretrain", "04_evaluate", "05_tsne")
NOTE = ("Data: the embedded Bandai mocap set (not E-Gait): emotion task of 4 classes x 7 clips, windows grouped "
        "by clip in repeated folds. Style and performer are confounded in this data (each style was recorded "
        "within one take group), and one clip moves a fold's accuracy by many points: read the spread. "
        "'majority class' is the floor set by the class imbalance of the windows; 'linear (random init)' is the "
        "same encoder before pretraining.")


@dataclass
class Grid:
    """A parameter grid: pretraining settings per variant, seeds, evaluation settings, t-SNE pair."""

    name: str  # folder name under --out
    runs: dict  # variant label -> RunSettings (seed and device are set per point)
    seeds: tuple = (0, 1)  # seeds of every variant
    evaluation: EvalSettings = field(default_factory=EvalSettings)  # notebook 04's settings
    tsne: tuple = ("geclr", "cage")  # variants compared by notebook 05 (seed: the first)
    threads: int = 1  # torch CPU threads in the kernels (0: one per core)


def make_grid(name: str) -> Grid:
    """``small``: CPU-sized GE-CLR, HSMB, CAGE x 2 seeds. ``paper``: the eight methods of Tables 1-3 and the
    registered peers (MAMP) with the paper's settings x 3 seeds. ``speed``: the HSMB speed ablation (up 2 / 4 / 8, down 0.1 / 0.3 / 0.5)."""
    if name == "small":
        return Grid("small", {m: RunSettings(method=m) for m in ("geclr", "hsmb", "cage")})
    if name == "paper":
        return Grid("paper", {m: RunSettings.paper(m) for m in available_methods()}, seeds=(0, 1, 2),
                    evaluation=EvalSettings.paper(), threads=0)
    if name == "speed":
        variants = [RunSettings.paper("hsmb", speed_up_rate=r) for r in (2, 4, 8)]
        variants += [RunSettings.paper("hsmb", ambiguity_speed="down", speed_down_rate=r) for r in (0.1, 0.3, 0.5)]
        return Grid("speed", {v.variant: v for v in variants}, seeds=(0, 1, 2), evaluation=EvalSettings.paper(),
                    tsne=("hsmb (up r=2)", "hsmb"), threads=0)
    raise ValueError(f"unknown grid {name!r}; choose small, paper or speed")


def folder_name(variant: str, seed: int) -> str:
    """``"hsmb (down r=0.1)", 0`` -> ``"hsmb-down-r0.1-s0"``."""
    clean = variant.replace(" (", "-").replace(")", "").replace("=", "").replace(" ", "-")
    return f"{clean}-s{seed}"


PACKAGED_NOTEBOOKS = Path(__file__).resolve().parents[1] / "_notebooks"  # where a regular install has them (setup.py)


def notebooks_dir() -> Path:
    """The folder of the notebooks: ``notebooks/`` of the repository (a checkout or an editable install),
    else the copy that a regular install (``pip install .``, a wheel) carries in ``cagelib/_notebooks/``.
    Neither: a ``FileNotFoundError`` naming both places and how to get the notebooks."""
    checkout = repo_root() / "notebooks"
    for folder in (checkout, PACKAGED_NOTEBOOKS):
        if all((folder / f"{name}.ipynb").is_file() for name in NOTEBOOKS):
            return folder
    raise FileNotFoundError(
        f"the notebooks ({', '.join(n + '.ipynb' for n in NOTEBOOKS)}) are in neither {checkout} nor "
        f"{PACKAGED_NOTEBOOKS}: this installation carries no notebooks. Run from a checkout of the repository "
        "(cd into it, or pip install -e it), or reinstall from a checkout with `pip install .`, which copies "
        "notebooks/ into the package")


def execute(notebook: str, output: Path, parameters: dict) -> float:
    """Run ``<notebooks_dir()>/<notebook>.ipynb`` with papermill into ``output`` (from the notebooks folder)."""
    folder = notebooks_dir()
    started = time.time()
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(folder / f"{notebook}.ipynb"), str(output), parameters=parameters,
                               cwd=str(folder), kernel_name="python3", progress_bar=False)
    return time.time() - started


def _evaluated(run_dir: Path, settings: EvalSettings) -> bool:
    path = run_dir / EVALUATION_FILE
    return path.is_file() and replace(EvalSettings.from_dict(read_json(path)["settings"]),
                                      device=settings.device) == settings


def notebook_defaults(notebook: str) -> dict:
    """The values of ``notebooks/<notebook>.ipynb``'s parameters cell (one literal per line)."""
    nb = nbformat.read(notebooks_dir() / f"{notebook}.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body}


def _pretrain_parameters(settings: RunSettings, common: dict, run_dir: Path) -> dict:
    return {**asdict(settings), **common, "milestones": list(settings.milestones), "run_dir": str(run_dir)}


def _evaluate_parameters(evaluation: EvalSettings, common: dict, run_dir: Path) -> dict:
    return {**asdict(evaluation), **common, "protocols": list(evaluation.protocols),
            "label_fractions": list(evaluation.label_fractions), "run_dir": str(run_dir)}


def _tsne_parameters(common: dict, pair: list[Path], root: Path) -> dict:
    return {**common, "run_dirs": [str(p) for p in pair], "figure_path": str(root / "tsne.png")}


def check_grid(grid: Grid, device: str = "auto", notebooks: tuple = NOTEBOOKS, fast: bool = False) -> None:
    """Check every notebook's parameters at every point of ``grid`` (``cagelib.lab.parameters``, the
    notebooks' own check) before anything is written or run: a bad seed, device or thread count fails here,
    naming the point, not hours later in one of the executed notebooks. Raises ``ParameterError``."""
    root = Path("<out>") / grid.name
    common = {"device": device, "threads": grid.threads}
    evaluation = replace(grid.evaluation, device=device)
    defaults = {n: notebook_defaults(n) for n in notebooks}

    def check(point: str, notebook: str, parameters: dict) -> None:
        if notebook in notebooks:
            try:
                check_parameters(notebook, {**defaults[notebook], **parameters})
            except ParameterError as err:
                raise err.located(f"grid {grid.name!r}, {point}") from None

    if not grid.runs or not grid.seeds:
        raise ParameterError(f"grid {grid.name!r}", "runs" if not grid.runs else "seeds", "is empty")
    check("data", "01_data", {})
    for variant, base in grid.runs.items():
        for seed in grid.seeds:
            run_dir = root / folder_name(variant, seed)
            point = f"{variant}, seed {seed!r}"
            check(point, "03_pretrain", _pretrain_parameters(replace(base, seed=seed, device=device, fast=fast),
                                                             common, run_dir))
            check(point, "04_evaluate", _evaluate_parameters(evaluation, common, run_dir))
    check("t-SNE", "05_tsne", _tsne_parameters(common, [], root))


def run_grid(grid: Grid, out: str | Path = "outputs/reproduce", device: str = "auto", force: bool = False,
             notebooks: tuple = NOTEBOOKS, log=print, fast: bool = False) -> tuple[Path, Path, list[str]]:
    """Execute ``grid`` on ``device`` (``fast``: cagelib.pretrain.fast's CUDA step); returns
    ``(results.csv, results.md, failures)``. Every point's parameters are checked first (``check_grid``):
    a bad one raises ``ParameterError`` before anything is written; so is the device (``check_device``: a
    ``DeviceError`` for ``cuda`` on a machine without it) and the notebooks' folder (``notebooks_dir``)."""
    notebooks_dir()
    check_grid(grid, device, notebooks, fast)
    check_device(device, "device")
    root = resolve_path(out) / grid.name
    evaluation = replace(grid.evaluation, device=device)
    common = {"device": device, "threads": grid.threads}
    failures = []

    def step(notebook: str, output: Path, parameters: dict) -> bool:
        try:
            seconds = execute(notebook, output, parameters)
        except Exception as err:  # papermill's execution error: the failing notebook is saved for reading
            lines = str(err).strip().splitlines()
            failures.append(f"{output}: {type(err).__name__}: {lines[-1] if lines else ''}")
            log(f"  {notebook}: FAILED, see {output}")
            return False
        log(f"  {notebook}: {seconds:.0f} s -> {output}")
        return True

    if "01_data" in notebooks and (force or not (root / "01_data.ipynb").is_file()):
        step("01_data", root / "01_data.ipynb", {})
    run_dirs = {}
    for variant, base in grid.runs.items():
        for seed in grid.seeds:
            settings = replace(base, seed=seed, device=device, fast=fast)
            run_dir = root / folder_name(variant, seed)
            run_dirs[variant, seed] = run_dir
            log(f"{variant}, seed {seed}: {run_dir}")
            pretrained = (run_dir / "checkpoint.pt").is_file() and load_run(run_dir).complete
            if "03_pretrain" in notebooks and (force or not pretrained):
                params = _pretrain_parameters(settings, common, run_dir)
                if not step("03_pretrain", run_dir / "03_pretrain.ipynb", params):
                    continue
            if "04_evaluate" in notebooks and (force or not _evaluated(run_dir, evaluation)):
                step("04_evaluate", run_dir / "04_evaluate.ipynb", _evaluate_parameters(evaluation, common, run_dir))
    shown = grid.tsne if all(v in grid.runs for v in grid.tsne) else tuple(grid.runs)[:2]
    pair = [run_dirs[v, grid.seeds[0]] for v in shown] if len(shown) == 2 else []
    tsne_done = (root / "05_tsne.ipynb").is_file() and not force
    if "05_tsne" in notebooks and pair and not tsne_done and all((p / "checkpoint.pt").is_file() for p in pair):
        step("05_tsne", root / "05_tsne.ipynb", _tsne_parameters(common, pair, root))
    rows = collect_results(root)
    note = (f"Generated by `python -m cagelib.lab.reproduce --grid {grid.name} --device {device}` from the "
            f"`evaluation.json` of {len(rows)} runs under `{root}`. Evaluation: "
            f"{evaluation.folds} clip-grouped folds x {evaluation.repeats} repeat(s), finetune {evaluation.finetune_epochs} "
            f"epochs, linear {evaluation.linear_epochs} epochs. {NOTE}")
    csv_path, md_path = write_results(root, rows, summarize_results(rows, tuple(grid.runs)), note)
    return csv_path, md_path, failures


DESCRIPTION = ("Run the notebook sequence (01_data, 03_pretrain, 04_evaluate, 05_tsne) with papermill over a "
               "parameter grid of method variants and seeds, then write results.csv and results.md from the runs' "
               "evaluation.json files. Rerunning the same command continues an interrupted grid.")
EXAMPLES = """examples:
  python -m cagelib.lab.reproduce                                   # small grid on the CPU (minutes)
  python -m cagelib.lab.reproduce --grid paper --device cuda        # the paper's settings (GPU hours)
  python -m cagelib.lab.reproduce --grid small --methods geclr cage --seeds 0 1 2 --list"""


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m cagelib.lab.reproduce``."""
    p = argparse.ArgumentParser(prog="python -m cagelib.lab.reproduce", description=DESCRIPTION, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default="small", choices=("small", "paper", "speed"),
                   help="The grid to run: small (CPU minutes), paper (the paper's settings, GPU hours) or speed "
                        "(the HSMB speed ablation); default small.")
    p.add_argument("--device", default="auto",
                   help="The torch device of every notebook: auto (CUDA if available), cpu, cuda, cuda:1, ...; "
                        "checked before anything runs.")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="The seeds of every variant, distinct integers >= 0 (default: the grid's).")
    p.add_argument("--methods", nargs="+", metavar="VARIANT",
                   help=f"Run only these variants of the grid (methods: {', '.join(available_methods())}).")
    p.add_argument("--out", default="outputs/reproduce",
                   help="The results folder: everything goes to <out>/<grid>/ (default outputs/reproduce).")
    p.add_argument("--threads", type=int,
                   help="The torch CPU threads per notebook kernel (default: the grid's; 0: one per core).")
    p.add_argument("--fast", action="store_true",
                   help="Pretrain with the fast CUDA step: bf16 autocast, torch.compile and CUDA graphs "
                        "(cagelib.pretrain.fast).")
    p.add_argument("--force", action="store_true",
                   help="Re-execute the notebooks of points already done (a finished pretraining is kept).")
    p.add_argument("--no-tsne", action="store_true", help="Skip the t-SNE notebook 05_tsne.")
    p.add_argument("--list", action="store_true", help="Print the grid's points and settings, then exit.")
    return p


def main(argv: list[str] | None = None) -> int:
    parser_ = parser()
    args = parser_.parse_args(argv)
    if args.seeds:
        negative = [s for s in args.seeds if s < 0]
        if negative:
            parser_.error(f"--seeds: {negative[0]} is negative; seeds are integers >= 0")
        twice = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
        if twice:
            parser_.error(f"--seeds: {twice[0]} is given twice; each seed is one run, give it once")

    grid = make_grid(args.grid)
    if args.methods:
        unknown = set(args.methods) - set(grid.runs)
        if unknown:
            parser_.error(f"--methods: {sorted(unknown)} not in the {grid.name} grid ({', '.join(grid.runs)})")
        grid.runs = {k: v for k, v in grid.runs.items() if k in args.methods}
    grid.seeds = tuple(args.seeds) if args.seeds else grid.seeds
    grid.threads = grid.threads if args.threads is None else args.threads
    if args.list:
        for variant, settings in grid.runs.items():
            print(f"{variant}: seeds {list(grid.seeds)}; {settings}")
        print(f"evaluation: {grid.evaluation}")
        return 0
    notebooks = tuple(n for n in NOTEBOOKS if not (args.no_tsne and n == "05_tsne"))
    try:
        notebooks_dir()
        check_grid(grid, args.device, notebooks, args.fast)  # a misspelt device is the notebooks' ParameterError
        check_device(args.device, "--device")  # a valid name of a device this machine lacks: refused here
    except (ParameterError, DeviceError, FileNotFoundError) as err:
        parser_.error(str(err))
    started = time.time()
    csv_path, md_path, failures = run_grid(grid, args.out, args.device, args.force, notebooks,
                                                fast=args.fast)
    print(f"\n{md_path.read_text()}\nresults: {csv_path}, {md_path} ({time.time() - started:.0f} s)")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
