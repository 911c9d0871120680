"""One configuration path: every parameter of the notebooks reaches the object that uses it (fast: no
training). Each parameter gets a distinctive value; a mapping dropped anywhere between the notebook and
the model (notebook -> RunSettings -> pretrain_config -> PretrainConfig -> build_model) leaves the
object at its default, and the check of that parameter fails."""
from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from cagelib.evaluate.protocols import EvalConfig
from cagelib.lab.demo import DemoConfig
from cagelib.lab.evaluation import EvalSettings, protocol_runs, run_encoder
from cagelib.lab.settings import RunSettings, pretrain_config, run_data
from cagelib.methods.encoders import AGCNConfig
from cagelib.pretrain.checkpoint import write_config
from cagelib.pretrain.config import build_model
from cagelib.pretrain.loop import make_optimization

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


@pytest.mark.parametrize("name", ["01_data", "02_ambiguity_samples", "03_pretrain", "04_evaluate", "05_tsne"])
def test_every_parameter_is_used_after_the_parameters_cell(name):
    params, code = notebook(name)
    names = {n.id for n in ast.walk(ast.parse("\n".join(l for l in code.splitlines() if not l.startswith("%"))))
             if isinstance(n, ast.Name)}
    settings_fields = {"03_pretrain": RunSettings, "04_evaluate": EvalSettings}.get(name)
    read_by_settings = {f.name for f in fields(settings_fields)} if settings_fields else set()
    assert set(params) - names - read_by_settings == set()
    if settings_fields:  # the settings take every parameter that names one of their fields
        assert f"{settings_fields.__name__}.from_dict(globals())" in code


# a distinctive, valid value for every RunSettings field, and where it must arrive
PRETRAIN = dict(method="hsmb", epochs=7, milestones=[3, 5], batch_size=17, lr=0.037, queue_size=123, momentum=0.9,
                encoder="paper", window=40, max_pretrain_windows=77, corpus="dataset-2", ambiguity_speed="down",
                speed_up_rate=2, speed_down_rate=0.1, seed=5, device="cpu", fast=True, representation="root_velocity",
                views="crop")


def test_every_pretraining_parameter_reaches_the_model_optimizer_or_data():
    params, code = notebook("03_pretrain")
    assert set(PRETRAIN) == {f.name for f in fields(RunSettings)} <= set(params)
    assert "pretrain_run(settings, run_dir=run_dir, outputs=outputs" in code and "set_threads(threads)" in code
    assert (params["representation"], params["views"]) == (RunSettings().representation, RunSettings().views)
    settings = RunSettings.from_dict({**params, **PRETRAIN})
    config = pretrain_config(settings, "runs/x")
    model = build_model(config)
    optimizer, scheduler, generator, _, _ = make_optimization(config, model, torch.device("cpu"))
    arrived = {
        "method": model.config.method, "epochs": config.epochs, "milestones": list(scheduler.milestones),
        "batch_size": config.batch_size, "lr": optimizer.param_groups[0]["lr"],
        "queue_size": model.memory_banks["cartesian"].size, "momentum": model.config.momentum,
        "encoder": "paper" if config.model == AGCNConfig() else "small",
        "ambiguity_speed": model.ambiguity.speed, "speed_up_rate": model.ambiguity.speed_up_rate,
        "speed_down_rate": model.ambiguity.speed_down_rate, "seed": config.seed, "device": config.device,
        "fast": config.fast is not None, "representation": model.representation,
        "views": "crop" if [type(t).__name__ for t in model.augment.transforms] == ["Crop"] else model.config.views,
    }
    data_settings = {"window", "max_pretrain_windows", "corpus"}
    assert arrived == {k: v for k, v in PRETRAIN.items() if k not in data_settings}
    assert generator.initial_seed() == PRETRAIN["seed"]
    data, other = run_data(settings), run_data(RunSettings.from_dict({**PRETRAIN, "corpus": "other"}))
    assert data.pretrain_x.shape[:2] == (PRETRAIN["max_pretrain_windows"], PRETRAIN["window"])
    assert not np.array_equal(data.pretrain_x, other.pretrain_x)  # dataset-2 walking, not every other clip
    assert data.representation == PRETRAIN["representation"] == settings.task_config().representation
    velocity = RunSettings.from_dict({**PRETRAIN, "representation": "root_relative"})
    assert np.array_equal(data.pretrain_x[:, :, 1:], run_data(velocity).pretrain_x[:, :, 1:])  # only the root differs
    assert not np.array_equal(data.pretrain_x[:, :, 0], run_data(velocity).pretrain_x[:, :, 0])


def test_the_demo_builds_its_configuration_on_the_same_path():
    config = DemoConfig(method="hsmb", epochs=9, queue_size=99, momentum=0.95, seeds=(4,)).pretrain_config()
    model = build_model(config)
    assert (config.epochs, config.milestones, config.seed) == (9, (6,), 4)
    assert (model.memory_banks["cartesian"].size, model.config.momentum) == (99, 0.95)


EVALUATE = dict(protocols=["knn", "semi-supervised"], folds=3, repeats=2, linear_epochs=11, finetune_epochs=5,
                label_fractions=[0.25], baseline=False, stream="spherical", seed=7, device="cpu")


def test_every_evaluation_parameter_reaches_the_protocols(tmp_path):
    params, code = notebook("04_evaluate")
    assert set(EVALUATE) == {f.name for f in fields(EvalSettings)} <= set(params)
    assert "evaluate_run(run_dir, settings)" in code and "find_run(method, outputs, device" in code
    settings = EvalSettings.from_dict({**params, **EVALUATE})
    assert protocol_runs(settings) == [("knn", "knn", 1.0), ("semi 25%", "semi-supervised", 0.25)]  # no baseline
    linear, finetune = settings.eval_config("linear", "cartesian"), settings.eval_config("finetune", "spherical")
    assert (linear.epochs, finetune.epochs, finetune.input_transform) == (11, 5, "spherical")
    assert {c.seed for c in (linear, finetune)} == {7} and {c.device for c in (linear, finetune)} == {"cpu"}
    assert isinstance(linear, EvalConfig)

    class Task:  # 4 labels x 7 clips of 2 windows
        groups, y = np.repeat(np.arange(28), 2), np.repeat(np.arange(28) % 4, 2)
        folds = staticmethod(lambda n, r, seed: [(n, r, seed)] * (n * r))
    assert settings.task_folds(Task()) == [(3, 2, 7)] * 6
    run = RunSettings(method="cage", device="cpu")  # a run folder (untrained): the stream is picked from it
    model = build_model(pretrain_config(run, tmp_path))
    write_config(tmp_path, pretrain_config(run, tmp_path))
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint.pt")
    assert run_encoder(tmp_path, settings.stream)[1:] == ("spherical", "spherical")
