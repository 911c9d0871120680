"""A grid cell continues the pretraining run it finds (cagelib.lab.runner): a finished run with the same
settings is read again (only the probes run), an interrupted one continues, another one is replaced."""
from __future__ import annotations

import json

from cagelib.experiment import Experiment, load
from cagelib.lab import peers

TINY = ["seeds=[0]", 'data.tasks=["emotion4"]', "supervised_tasks=[]", "pretrain.epochs=2",
        "data.max_pretrain_windows=64", "folds=2", 'protocols=["knn"]', "workers=1"]


def grid(tmp_path, *extra) -> Experiment:
    exp = load("peers", [*TINY, f"out={tmp_path / 'results'}", f"runs={tmp_path / 'runs'}", *extra])
    return Experiment.from_dict({**exp.to_dict(), "variants": {"c3l": {"pretrain": {"contrast": {"method": "c3l"}}}}})


def test_a_finished_run_is_read_again_and_a_changed_one_replaced(tmp_path):
    first = peers.run_grid_cell(grid(tmp_path), "c3l", 0)
    run = tmp_path / "runs" / "c3l-s0"
    weights = (run / "checkpoint.pt").read_bytes()
    again = peers.run_grid_cell(grid(tmp_path, "stream=each"), "c3l", 0)  # more probes, the same pretraining
    assert (run / "checkpoint.pt").read_bytes() == weights  # nothing trained
    assert again["rows"]["c3l"] == first["rows"]["c3l"]  # the same encoder, the same probe
    assert set(again["rows"]) == {"c3l", "c3l (spherical)", "c3l (both)"}
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert abs(again["pretrain_seconds"] - sum(h["seconds"] for h in history)) < 1e-6  # the run's own time
    changed = peers.run_grid_cell(grid(tmp_path, "pretrain.contrast.temperature=0.2"), "c3l", 0)
    assert (run / "checkpoint.pt").read_bytes() != weights  # other settings: trained again
    assert json.loads((run / "config.json").read_text())["contrast"]["temperature"] == 0.2
    assert changed["steps"] == first["steps"]


def test_an_interrupted_run_continues_to_the_same_encoder(tmp_path):
    whole = peers.run_grid_cell(grid(tmp_path), "c3l", 0)
    short = tmp_path / "short"
    peers.run_grid_cell(grid(short, "pretrain.epochs=1"), "c3l", 0)  # as if stopped after epoch 1
    resumed = peers.run_grid_cell(grid(short), "c3l", 0)
    assert resumed["rows"]["c3l"] == whole["rows"]["c3l"]


def test_a_cell_that_rereads_a_finished_run_keeps_its_measured_cost(tmp_path):
    exp = grid(tmp_path)
    peers.run_grid(exp, log=lambda *_: None)
    before = json.loads(peers.cell_path(exp, "c3l", 0).read_text())
    peers.run_grid(grid(tmp_path, "stream=each"), log=lambda *_: None)
    after = json.loads(peers.cell_path(exp, "c3l", 0).read_text())
    assert "c3l (both)" in after["rows"] and after["pretrain_seconds"] == before["pretrain_seconds"]
