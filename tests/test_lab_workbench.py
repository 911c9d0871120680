"""The notebooks' workbench (cagelib.lab.workbench, .evaluation): every notebook parameter is used after its
parameters cell, and the experiment's evaluation settings reach the protocols (fast: no training)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from cagelib.evaluate.protocols import EvalConfig
from cagelib.experiment import load
from cagelib.lab.evaluation import RANDOM_INIT, evaluation_settings, protocol_runs, run_encoder
from cagelib.lab.workbench import legacy_experiment, run_key
from cagelib.pretrain.checkpoint import write_config
from cagelib.pretrain.config import build_model

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def notebook(name: str) -> tuple[dict, str]:
    """The parameters cell's ``{name: value}`` and the source of every later code cell."""
    cells = [c for c in json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    params = {}
    for line in "".join(cells[first]["source"]).splitlines():
        assign = ast.parse(line).body[0]
        params[assign.targets[0].id] = ast.literal_eval(assign.value)
    return params, "\n".join("".join(c["source"]) for c in cells[first + 1:])


@pytest.mark.parametrize("name", ["01_data", "02_ambiguity_samples", "03_pretrain", "04_evaluate", "05_tsne",
                                  "06_your_gait"])
def test_every_parameter_is_used_after_the_parameters_cell(name):
    params, code = notebook(name)
    names = {n.id for n in ast.walk(ast.parse("\n".join(l for l in code.splitlines() if not l.startswith("%"))))
             if isinstance(n, ast.Name)}
    assert set(params) - names == set()
    if name in ("03_pretrain", "04_evaluate"):  # the experiment notebooks: a preset and its overrides
        assert f'load(preset, overrides, source="{name}")' in code


def test_the_evaluation_settings_reach_the_protocols(tmp_path):
    exp = load("notebook", ['protocols=["knn", "semi-supervised"]', "folds=3", "repeats=2", "linear.epochs=11",
                            "finetune.epochs=5", "label_fractions=[0.25]", 'stream="spherical"', "seeds=[7]",
                            "linear.device=cpu", "finetune.device=cpu"])
    assert protocol_runs(exp) == [("knn", "knn", 1.0), ("semi 25%", "semi-supervised", 0.25),
                                  (RANDOM_INIT, "linear", 1.0)]  # the fair control, always
    linear, finetune = exp.eval_config("linear", 7), exp.eval_config("finetune", 7, "spherical")
    assert isinstance(linear, EvalConfig) and (linear.epochs, finetune.epochs, finetune.input_transform) == (
        11, 5, "spherical")
    assert {c.seed for c in (linear, finetune)} == {7} and {c.device for c in (linear, finetune)} == {"cpu"}
    saved = evaluation_settings(exp)
    assert saved["folds"] == 3 and saved != evaluation_settings(load("notebook"))
    run = load("notebook", ["pretrain.device=cpu"])  # a run folder (untrained): the stream is picked from it
    model = build_model(run.pretrain_config(0, tmp_path))
    write_config(tmp_path, run.pretrain_config(0, tmp_path))
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    assert run_encoder(tmp_path, exp.stream)[1:] == ("spherical", "spherical")


def test_a_workbench_json_of_before_the_tree_reads_as_the_experiment_it_ran():
    """RunSettings of an old notebook run -> the same run (its data and its pretraining's identity)."""
    old = {"method": "hsmb", "epochs": 3, "milestones": [], "batch_size": 16, "lr": 0.05, "queue_size": 64,
           "momentum": 0.99, "encoder": "small", "window": 32, "max_pretrain_windows": 96, "corpus": "other",
           "ambiguity_speed": "up", "speed_up_rate": 2, "speed_down_rate": 0.3, "seed": 4, "device": "cpu",
           "fast": False}  # written before representation and views existed
    exp = legacy_experiment(old)
    p = exp.pretrain_config(4, "run")
    assert (p.contrast.method, p.epochs, p.milestones, p.batch_size, p.lr, p.contrast.queue_size) == (
        "hsmb", 3, (2,), 16, 0.05, 64)  # milestones []: 50 and 80 % of 3 epochs, rounded, as those runs had
    assert (p.representation, p.contrast.views, p.contrast.speed_up_rate, p.fast) == ("first_frame", "paper", 2, None)
    assert (exp.data.window, exp.data.max_pretrain_windows, exp.seeds) == (32, 96, (4,))
    assert run_key(exp, 4) == run_key(legacy_experiment({**old, "representation": "first_frame", "views": "paper"}), 4)
    assert run_key(exp, 4) != run_key(legacy_experiment({**old, "views": "body"}), 4)
