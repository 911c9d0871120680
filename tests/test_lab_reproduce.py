"""Batch runs: papermill executes the notebooks with non-default parameters into a temporary outputs
folder; the results table is generated from the run files it wrote."""
from __future__ import annotations

import csv
import json

import nbformat
import pytest

from cagelib.lab import reproduce
from cagelib.methods.registry import available_methods
from cagelib.lab.evaluation import EvalSettings
from cagelib.lab.runs import list_runs
from cagelib.lab.settings import RunSettings


def test_grids():
    small = reproduce.make_grid("small")
    assert list(small.runs) == ["geclr", "hsmb", "cage"] and small.seeds == (0, 1)
    assert all(s == RunSettings(method=m) for m, s in small.runs.items())
    paper = reproduce.make_grid("paper")
    assert list(paper.runs) == list(available_methods()) and paper.seeds == (0, 1, 2)
    assert paper.runs["cage"].epochs == 300 and paper.runs["geclr"].epochs == 200
    assert all(s.encoder == "paper" and s.queue_size == 2048 and s.max_pretrain_windows == 0 for s in paper.runs.values())
    assert paper.evaluation.finetune_epochs == 20 and paper.evaluation.label_fractions == (0.05, 0.1, 0.2, 0.5)
    speed = reproduce.make_grid("speed")
    assert list(speed.runs) == ["hsmb (up r=2)", "hsmb", "hsmb (up r=8)", "hsmb (down r=0.1)",
                                "hsmb (down r=0.3)", "hsmb (down r=0.5)"]
    assert reproduce.folder_name("hsmb (down r=0.1)", 2) == "hsmb-down-r0.1-s2"
    with pytest.raises(ValueError, match="grid"):
        reproduce.make_grid("huge")


def test_run_grid_executes_notebooks_with_parameters_and_tables_the_runs(tmp_path):
    settings = RunSettings(method="geclr", epochs=1, batch_size=16, queue_size=32, window=16,
                           max_pretrain_windows=32, seed=5)
    grid = reproduce.Grid("t", {"geclr": settings}, seeds=(5,),
                          evaluation=EvalSettings(protocols=("linear",), folds=2, linear_epochs=5), tsne=())
    lines = []
    csv_path, md_path, failures = reproduce.run_grid(grid, tmp_path, device="cpu", log=lines.append,
                                                     notebooks=("03_pretrain", "04_evaluate"))
    assert failures == []
    run_dir = tmp_path / "t" / "geclr-s5"
    executed = nbformat.read(run_dir / "03_pretrain.ipynb", as_version=4)
    assert executed.metadata.papermill.parameters["window"] == 16  # injected, not the default 32
    assert not any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))
    (run,) = list_runs(tmp_path)
    assert run.path == run_dir and run.complete and run.seed == 5 and len(run.history) == 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["device"] == "cpu" and config["contrast"]["queue_size"] == 32
    assert run.settings["window"] == 16 and run.settings["max_pretrain_windows"] == 32
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["settings"]["folds"] == 2 and evaluation["results"]["linear"]["aggregate"]["n"] == 2
    assert (run_dir / "04_evaluate.ipynb").is_file() and (run_dir / "loss.png").is_file()

    (row,) = list(csv.DictReader(csv_path.open()))
    linear = evaluation["results"]["linear"]["aggregate"]["top1_mean"]
    assert row["method"] == "geclr" and row["seed"] == "5" and float(row["linear"]) == pytest.approx(linear, abs=0.01)
    md = md_path.read_text()
    assert f"| geclr | 1 | 1 | {linear:.2f} |" in md and "confounded" in md

    # A second call finds the point done and executes nothing; the table is rebuilt from the files.
    before = (run_dir / "04_evaluate.ipynb").stat().st_mtime_ns
    lines.clear()
    reproduce.run_grid(grid, tmp_path, device="cpu", log=lines.append, notebooks=("03_pretrain", "04_evaluate"))
    assert (run_dir / "04_evaluate.ipynb").stat().st_mtime_ns == before
    assert not any("03_pretrain:" in line or "04_evaluate:" in line for line in lines)


def test_cli_lists_a_filtered_grid(capsys):
    assert reproduce.main(["--grid", "paper", "--methods", "geclr", "cage", "--seeds", "7", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("geclr: seeds [7]") and "cage: seeds [7]" in out and "hsmb" not in out
    with pytest.raises(SystemExit):
        reproduce.main(["--methods", "nope", "--list"])


def test_bad_parameters_fail_before_anything_is_written(tmp_path, capsys):
    from cagelib.errors import ParameterError

    for g in ("small", "paper", "speed"):  # the shipped grids pass the notebooks' own checks
        reproduce.check_grid(reproduce.make_grid(g), device="cuda", fast=True)
    grid = reproduce.make_grid("small")
    grid.seeds = (0, -1)
    with pytest.raises(ParameterError, match=r"grid 'small', geclr, seed -1: 03_pretrain: parameter 'seed'"):
        reproduce.run_grid(grid, tmp_path / "out", device="cpu", log=lambda line: None)
    bad_eval = reproduce.Grid("t", {"geclr": RunSettings(method="geclr")}, seeds=(0,),
                              evaluation=EvalSettings(linear_epochs=0), tsne=())
    with pytest.raises(ParameterError, match=r"04_evaluate: parameter 'linear_epochs': must be an integer >= 1"):
        reproduce.run_grid(bad_eval, tmp_path / "out", device="cpu", log=lambda line: None)
    assert not (tmp_path / "out").exists()  # nothing written, no notebook executed
    with pytest.raises(SystemExit):
        reproduce.main(["--device", "cdua", "--out", str(tmp_path / "cli")])
    assert "parameter 'device'" in capsys.readouterr().err and not (tmp_path / "cli").exists()
    with pytest.raises(SystemExit):
        reproduce.main(["--threads", "-1", "--out", str(tmp_path / "cli")])
    assert "parameter 'threads'" in capsys.readouterr().err
