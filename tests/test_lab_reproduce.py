"""Batch runs (`python -m cagelib reproduce`): papermill executes the notebooks with a preset and a point's
overrides into a temporary outputs folder; the results table is generated from the run files it wrote."""
from __future__ import annotations

import csv
import json
import signal

import nbformat
import pytest

from cagelib import cli
from cagelib.errors import ParameterError
from cagelib.experiment import Experiment, load
from cagelib.lab import reproduce
from cagelib.lab.runs import list_runs
from cagelib.methods.encoders import AGCNConfig
from cagelib.methods.registry import available_methods

# the old tiny point (RunSettings(epochs=1, batch_size=16, queue_size=32, window=16, max_pretrain_windows=32,
# seed=5), EvalSettings(protocols=("linear",), folds=2, linear_epochs=5), device "cpu") as overrides
TINY = ["pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.contrast.queue_size=32", "data.window=16",
        "data.max_pretrain_windows=32", "seeds=[5]", 'protocols=["linear"]', "folds=2", "linear.epochs=5",
        *(f"{key}=cpu" for key in cli.DEVICE_KEYS)]
CUDA = [*(f"{key}=cuda" for key in cli.DEVICE_KEYS), "pretrain.fast={}"]


@pytest.fixture(autouse=True)
def _sigterm_restored():
    """``cli.main`` installs its SIGTERM handler in the main thread: give pytest its own back."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_grids():
    small = load("reproduce/small")
    assert list(small.variants) == ["geclr", "hsmb", "cage"] and small.seeds == (0, 1)
    for method in small.variants:  # the notebooks' settings, the variant's method
        cell = small.cell(method)
        notebook = load("notebook", [f"pretrain.contrast.method={method}"])
        assert (cell.pretrain, cell.data, cell.linear, cell.finetune) == (
            notebook.pretrain, notebook.data, notebook.linear, notebook.finetune)
    paper = load("reproduce/paper")
    assert list(paper.variants) == list(available_methods()) and paper.seeds == (0, 1, 2)
    assert paper.cell("cage").pretrain.epochs == 300 and paper.cell("geclr").pretrain.epochs == 200
    for method in paper.variants:
        cell = paper.cell(method)
        assert cell.pretrain.contrast.method == method and cell.pretrain.model == AGCNConfig()
        assert cell.pretrain.contrast.queue_size == 2048 and cell.data.max_pretrain_windows == 0
    assert paper.finetune.epochs == 20 and paper.label_fractions == (0.05, 0.1, 0.2, 0.5)
    speed = load("reproduce/speed")
    assert list(speed.variants) == ["hsmb (up r=2)", "hsmb", "hsmb (up r=8)", "hsmb (down r=0.1)",
                                    "hsmb (down r=0.3)", "hsmb (down r=0.5)"]
    assert [speed.cell(v).pretrain.contrast.speed_up_rate for v in list(speed.variants)[:3]] == [2, 4, 8]
    assert reproduce.folder_name("hsmb (down r=0.1)", 2) == "hsmb-down-r0.1-s2"
    assert [(v, s) for v, s, _ in reproduce.points(small)] == [("geclr", 0), ("geclr", 1), ("hsmb", 0),
                                                                ("hsmb", 1), ("cage", 0), ("cage", 1)]
    with pytest.raises(ParameterError, match="no such preset"):
        load("reproduce/huge")


def test_run_grid_executes_notebooks_with_parameters_and_tables_the_runs(tmp_path):
    # one variant, named unlike its method as a grid's variants are ("hsmb (up r=8)"): the table names it
    variant = "geclr (tiny)"
    exp = load("reproduce/small", [*TINY, f"out={tmp_path}"])
    exp = Experiment.from_dict({**exp.to_dict(), "variants": {variant: exp.variants["geclr"]}})
    lines = []
    csv_path, md_path, failures = reproduce.run_grid(exp, log=lines.append, notebooks=("03_pretrain", "04_evaluate"))
    assert failures == []
    run_dir = tmp_path / "geclr-tiny-s5"
    executed = nbformat.read(run_dir / "03_pretrain.ipynb", as_version=4)
    injected = executed.metadata.papermill.parameters
    assert injected["preset"] == "reproduce/small" and "data.window=16" in injected["overrides"]  # not the default 32
    assert not any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))
    (run,) = list_runs(tmp_path)
    assert run.path == run_dir and run.complete and run.seed == 5 and len(run.history) == 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["device"] == "cpu" and config["contrast"]["queue_size"] == 32
    assert config["contrast"]["method"] == "geclr"
    assert run.experiment.data.window == 16 and run.experiment.data.max_pretrain_windows == 32
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["settings"]["folds"] == 2 and evaluation["results"]["linear"]["aggregate"]["n"] == 2
    assert (run_dir / "04_evaluate.ipynb").is_file() and (run_dir / "loss.png").is_file()

    (row,) = list(csv.DictReader(csv_path.open()))
    linear = evaluation["results"]["linear"]["aggregate"]["top1_mean"]
    assert row["seed"] == "5" and float(row["linear"]) == pytest.approx(linear, abs=0.01)
    md = md_path.read_text()
    assert "confounded" in md and "--config reproduce/small" in md

    # A second call finds the point done and executes nothing; the table is rebuilt from the files.
    before = (run_dir / "04_evaluate.ipynb").stat().st_mtime_ns
    lines.clear()
    reproduce.run_grid(exp, log=lines.append, notebooks=("03_pretrain", "04_evaluate"))
    assert (run_dir / "04_evaluate.ipynb").stat().st_mtime_ns == before
    assert not any("03_pretrain:" in line or "04_evaluate:" in line for line in lines)

    # the table's rows are the grid's variants (the speed grid's six hsmb variants must not merge into one)
    assert row["method"] == variant and f"| {variant} | 1 | 1 | {linear:.2f} |" in md
    assert run.variant == variant


def test_cli_lists_a_filtered_grid(capsys):
    argv = ["reproduce", "--config", "reproduce/paper", "seeds=[7]", "--only", "geclr", "cage", "--list"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("geclr, seed 7: --config reproduce/paper ") and "hsmb" not in out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["geclr, seed 7", "cage, seed 7"]
    for line, method in zip(lines, ("geclr", "cage")):  # each line's overrides give that point's experiment
        point = load("reproduce/paper", line.split(" --config reproduce/paper ", 1)[1].split())
        assert point.pretrain.contrast.method == method and point.seeds == (7,)
        assert point.pretrain.epochs == {"geclr": 200, "cage": 300}[method]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "--only", "nope", "--list"])
    assert exit_.value.code == 2 and "--only: ['nope'] are not variants" in capsys.readouterr().err


@pytest.mark.parametrize("grid", ["reproduce/small", "reproduce/paper", "reproduce/speed"])
def test_the_shipped_grids_pass_every_check_with_the_gpu_settings(grid):
    """What `python -m cagelib reproduce --config <grid> --device cuda pretrain.fast={}` checks before it runs:
    every point's experiment loads and the notebooks' parameters pass."""
    exp = load(grid, CUDA)
    reproduce.check_grid(exp)
    for variant, _, overrides in reproduce.points(exp):
        point = load(grid, overrides)
        assert point.pretrain.device == "cuda" and point.pretrain.fast is not None
        assert point.pretrain == exp.cell(variant).pretrain  # the notebooks train the grid's variant


def test_bad_parameters_fail_before_anything_is_written(tmp_path, capsys):
    # a point whose experiment does not load is named, before anything is written or executed
    exp = load("reproduce/small", [f"out={tmp_path / 'out'}"])
    bad = Experiment.from_dict({**exp.to_dict(), "variants": {**exp.variants, "bad": {"pretrain": {"epochs": 2.5}}}})
    with pytest.raises(ParameterError, match=r"grid 'reproduce/small', bad, seed 0: .*'pretrain.epochs': "
                                             r"expected an integer, got 2.5"):
        reproduce.run_grid(bad, log=lambda line: None)
    # the command line refuses a bad seed, a bad evaluation value, bad threads (exit 2, stderr says why),
    # and a device that is no torch device, naming the setting
    for override, problem in (("seeds=[0, -1]", ("seeds must be distinct integers >= 0", "-1")),
                              ("linear.epochs=-1", ("override 'linear.epochs=-1'", ">= 0")),
                              ("threads=-1", ("threads", ">= 0", "-1")),
                              ("--device=cdua", ("device", "'cdua'"))):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["reproduce", override, f"out={tmp_path / 'out'}"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "python -m cagelib reproduce" in err
        assert all(part in err for part in problem), err
    assert not (tmp_path / "out").exists()  # nothing written, no notebook executed
