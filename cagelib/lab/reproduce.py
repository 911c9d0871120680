"""Batch runs: execute the notebook sequence with papermill over an experiment's variants and seeds.

    python -m cagelib reproduce                                        # reproduce/small: the CPU grid (minutes)
    python -m cagelib reproduce --config reproduce/paper --device cuda # the paper's settings (GPU hours)
    python -m cagelib reproduce --config reproduce/speed --device cuda # the HSMB speed ablation
    python -m cagelib reproduce --only geclr cage seeds=[0,1,2] --list

For every point (a variant of the experiment and a seed) the run folder ``<out>/<variant>-s<seed>/`` gets
the executed ``03_pretrain.ipynb`` (pretraining: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``,
``experiment.json``) and ``04_evaluate.ipynb`` (``evaluation.json``), each given the preset and the point's
overrides. Once per grid, ``01_data.ipynb`` records the data and ``05_tsne.ipynb`` compares the first and
the last variant's features. Then ``results.csv`` (one row per run) and ``results.md`` (mean and std over
seeds per variant, then every run) are generated from the runs' ``evaluation.json`` files.

A point whose evaluation is already there with the same settings is skipped, and an interrupted
pretraining is resumed, so rerunning the command continues a grid. ``--force`` re-executes every
notebook (a finished pretraining stays finished: delete its folder to train it again).
"""
from __future__ import annotations

import time
from pathlib import Path

import papermill

from ..device import check_device
from ..errors import ParameterError
from ..experiment import Experiment, as_dotted, load
from .evaluation import collect_results, evaluation_settings
from .parameters import check_parameters
from .runs import load_run
from .tables import summarize_results, write_results
from .workbench import EVALUATION_FILE, read_json, repo_root, resolve_path

NOTEBOOKS = ("01_data", "03_pretrain", "04_evaluate", "05_tsne")
NOTE = ("Data: the embedded Bandai mocap set (not E-Gait): emotion task of 4 classes x 7 clips, windows grouped "
        "by clip in repeated folds. Style and performer are confounded in this data (each style was recorded "
        "within one take group), and one clip moves a fold's accuracy by many points: read the spread. "
        "'majority class' is the floor set by the class imbalance of the windows; 'linear (random init)' is the "
        "same encoder before pretraining.")


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


def points(exp: Experiment) -> list[tuple[str, int, list[str]]]:
    """``(variant, seed, overrides)`` of every point: the variant's overrides, the experiment's, the seed."""
    variants = exp.variants or {exp.pretrain.contrast.method: {}}
    given = [o for o in exp.overrides if not o.startswith("seeds=")]  # each point has its one seed
    return [(name, seed, [*as_dotted(overrides), *given, f"seeds=[{seed}]"])
            for name, overrides in variants.items() for seed in exp.seeds]


def _evaluated(run_dir: Path, exp: Experiment) -> bool:
    path = run_dir / EVALUATION_FILE
    return path.is_file() and read_json(path).get("settings") == evaluation_settings(exp)


def _notebook_parameters(notebook: str, exp: Experiment, overrides: list, run_dir: Path, variant: str) -> dict:
    named = {"variant": variant} if notebook == "03_pretrain" else {}  # the name its run is listed under
    return {"preset": exp.name, "overrides": list(overrides), **named, "run_dir": str(run_dir),
            "threads": exp.threads, "outputs": ""}


def check_grid(exp: Experiment, notebooks: tuple = NOTEBOOKS) -> None:
    """Check every point of ``exp`` before anything is written or run: its experiment loads (``load``: every
    key, type and value) and the notebooks' parameters pass their check (``check_parameters``). Raises
    ``ParameterError`` naming the point."""
    for variant, seed, overrides in points(exp):
        where = f"grid {exp.name!r}, {variant}, seed {seed!r}"
        load(exp.name, overrides, source=where)
        try:
            for notebook in ("03_pretrain", "04_evaluate"):
                if notebook in notebooks:
                    check_parameters(notebook, _notebook_parameters(notebook, exp, overrides, Path("<out>"), variant))
        except ParameterError as err:
            raise err.located(where) from None


def run_grid(exp: Experiment, force: bool = False, notebooks: tuple = NOTEBOOKS,
             log=print) -> tuple[Path, Path, list[str]]:
    """Execute every point of ``exp``; returns ``(results.csv, results.md, failures)``. Every point is checked
    first (``check_grid``), and so are the device (``check_device``) and the notebooks' folder."""
    notebooks_dir()
    check_grid(exp, notebooks)
    check_device(exp.pretrain.device, "pretrain.device")
    root = resolve_path(exp.out)
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
    for variant, seed, overrides in points(exp):
        run_dir = root / folder_name(variant, seed)
        run_dirs[variant, seed] = run_dir
        log(f"{variant}, seed {seed}: {run_dir}")
        pretrained = (run_dir / "checkpoint.pt").is_file() and load_run(run_dir).complete
        if "03_pretrain" in notebooks and (force or not pretrained):
            params = _notebook_parameters("03_pretrain", exp, overrides, run_dir, variant)
            if not step("03_pretrain", run_dir / "03_pretrain.ipynb", params):
                continue
        cell = load(exp.name, overrides)
        if "04_evaluate" in notebooks and (force or not _evaluated(run_dir, cell)):
            step("04_evaluate", run_dir / "04_evaluate.ipynb",
                 _notebook_parameters("04_evaluate", exp, overrides, run_dir, variant))
    names = list(dict.fromkeys(v for v, _ in run_dirs))
    pair = [run_dirs[names[0], exp.seeds[0]], run_dirs[names[-1], exp.seeds[0]]] if len(names) > 1 else []
    tsne_done = (root / "05_tsne.ipynb").is_file() and not force
    if "05_tsne" in notebooks and pair and not tsne_done and all((p / "checkpoint.pt").is_file() for p in pair):
        step("05_tsne", root / "05_tsne.ipynb", {"run_dirs": [str(p) for p in pair], "threads": exp.threads,
                                                 "figure_path": str(root / "tsne.png")})
    rows = collect_results(root)
    shown = " ".join(["python -m cagelib reproduce", f"--config {exp.name}", *exp.overrides])
    note = (f"Generated by `{shown}` from the `evaluation.json` of {len(rows)} runs under `{_shown(root)}`. "
            f"Evaluation: {exp.folds} clip-grouped folds x {exp.repeats} repeat(s), finetune {exp.finetune.epochs} "
            f"epochs, linear {exp.linear.epochs} epochs. {NOTE}")
    csv_path, md_path = write_results(root, rows, summarize_results(rows, tuple(names)), note)
    return csv_path, md_path, failures


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)
