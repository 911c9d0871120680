"""One way to declare an experiment (cagelib.experiment): the tree, its presets and overrides, one default per
setting, every setting reaching the object that uses it, and the registry as the only extension point."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cagelib import cli
from cagelib.data.tasks import DataConfig, gait_task
from cagelib.errors import ParameterError
from cagelib.evaluate.protocols import EvalConfig
from cagelib.experiment import Experiment, load, preset_names, read_preset, settings_help
from cagelib.methods.encoders import AGCN, AGCNConfig
from cagelib.methods.registry import available_methods, method, register, unregister
from cagelib.pretrain.config import PretrainConfig, build_model
from cagelib.pretrain.fast import FastConfig
from cagelib.pretrain.health import HealthConfig
from cagelib.pretrain.loop import make_optimization

PACKAGE = Path(__file__).resolve().parents[1] / "cagelib"
TREE = {Experiment, DataConfig, PretrainConfig, FastConfig, HealthConfig, EvalConfig}


# --- the tree and its presets -------------------------------------------------------------------------------

def test_from_an_empty_dict_are_the_defaults_and_a_tree_round_trips():
    assert Experiment.from_dict({}) == Experiment()
    for name in preset_names():
        exp = load(name)
        assert Experiment.from_dict(json.loads(json.dumps(exp.to_dict()))) == exp, name


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_file_loads_validates_and_its_variants_build(name):
    exp = load(name)
    assert exp.name == name and exp.pretrain.contrast.method in available_methods()
    for variant in exp.variants:
        cell = exp.cell(variant)
        cell.pretrain_config(exp.seeds[0], "run")  # the configuration a run of it trains
        assert cell.variants == {}


def test_the_presets_are_the_jobs_of_before():
    """The values of the former DemoConfig / long / PeerGridConfig / RunSettings / EvalSettings / Grid, read from
    the preset files (the resolved configurations were compared field by field when the tree replaced them)."""
    demo = load("demo")
    p = demo.pretrain_config(0, "run")
    assert (p.contrast.method, p.epochs, p.milestones, p.contrast.queue_size, p.contrast.momentum) == (
        "geclr", 8, (6,), 512, 0.99)
    assert (demo.data.tasks, demo.data.max_pretrain_windows, demo.seeds, demo.workers, demo.folds) == (
        ("emotion4", "style15"), 1024, (0, 1, 2, 3, 4), 3, 4)  # 5 seeds since the evidence issue (was 3)
    assert load("peers").seeds == (0, 1, 2)  # its cells: 3 seeds, 5 owed
    assert p.fast == FastConfig() and p.model == AGCNConfig.small() and demo.supervised_tasks == ()
    long = load("long")
    assert (long.pretrain.epochs, long.pretrain.milestones, long.supervised.epochs, long.supervised_tasks) == (
        16, (12,), 20, ("emotion4",))
    assert long.data.task_stride("walkstyle7") == 48 and long.data.task_stride("emotion4") == 12
    # a section's keys change its field's default recipe, not EvalConfig's class defaults (the linear probe's)
    assert long.eval_config("supervised", 1) == EvalConfig.paper("supervised", epochs=20, seed=1, device="cpu")
    assert demo.eval_config("knn", 2) == EvalConfig.paper("knn", seed=2, device="cpu")
    peers = load("peers")
    assert list(peers.variants) == ["geclr", "cage", "aimclr", "crossclr", "isc", "mamp", "cage_mamp"]
    assert peers.pretrain.fast is None and peers.eval_config("finetune", 0) == EvalConfig.paper(
        "finetune", optimizer="adam", lr=1e-3, epochs=5, milestones=(), device="cpu")
    mamp = peers.cell("mamp").pretrain_config(0, "run")
    assert (mamp.optimizer, mamp.lr, mamp.weight_decay) == ("adamw", pytest.approx(1e-3), 0.05)  # Method.adapt
    notebook = load("notebook")
    assert (notebook.pretrain.epochs, notebook.pretrain.milestones, notebook.data.window) == (2, (1,), 32)
    assert (notebook.finetune.optimizer, notebook.finetune.lr, notebook.finetune.batch_size) == ("adam", 3e-3, 16)
    assert notebook.linear.milestones == (50, 70) and notebook.protocols == ("linear", "finetune", "semi-supervised")
    paper = load("reproduce/paper")
    assert set(paper.variants) == set(available_methods())
    assert paper.cell("cage").pretrain == PretrainConfig.paper("cage")


def test_a_preset_extends_another_and_a_section_is_given_by_name(tmp_path):
    file = tmp_path / "mine.toml"
    file.write_text('extends = "demo"\nseeds = [4]\n[pretrain]\nmodel = "paper"\n[pretrain.contrast]\nqueue_size = 64\n')
    exp = load(str(file))
    assert exp.seeds == (4,) and exp.pretrain.model == AGCNConfig.paper()
    assert (exp.pretrain.contrast.queue_size, exp.pretrain.contrast.momentum, exp.pretrain.epochs) == (64, 0.99, 8)
    assert read_preset("long")["name"] == "long"
    assert load("demo", ["pretrain=paper:mamp"]).pretrain == PretrainConfig.paper("mamp")
    assert load("demo", ["pretrain.fast=none"]).pretrain.fast is None
    assert load("demo", ["finetune=paper:finetune"]).finetune == EvalConfig.paper("finetune")


# --- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("pretrain.epoch=3", r"override 'pretrain.epoch=3': 'pretrain.epoch': is not a setting of PretrainConfig; "
                         r"did you mean 'pretrain.epochs'\?"),
    ("pretrain.epochs=x", r"override 'pretrain.epochs=x': 'pretrain.epochs': expected an integer, got 'x'"),
    ("pretrain.epochs=2.5", r"'pretrain.epochs': expected an integer, got 2.5"),
    ("pretrain.contrast.momentum=2", r"override 'pretrain.contrast.momentum=2': 'pretrain.contrast.*momentum"),
    ("pretrain.model=big", r"'big' is not a preset of AGCNConfig; .* default, paper, small"),
    ("pretrain.contrast.method=cagee", r"unknown method 'cagee'"),
    ('data.tasks=["emotion7"]', r"'data.tasks': DataConfig: tasks must be one or more of"),
    ("seeds=[0, 0]", r"seeds must be distinct integers >= 0"),
    ("seeds=[-1]", r"seeds must be distinct integers >= 0"),
    ("pretrain.seed=3", r"'pretrain.seed': is set from seeds, not on its own"),
    ("pretrain.representation=first_frame", r"is set from data.representation"),
    ("folds", r"expected key=value"),
    ("pretrain.options.depth=2", r"method 'geclr' has no options"),
])
def test_a_bad_override_names_itself_the_key_and_the_problem(override, message):
    with pytest.raises(ParameterError, match=message):
        load("demo", [override])


def test_a_misspelt_preset_gets_the_closest_name():
    with pytest.raises(ParameterError, match=r"preset: 'demoo': no such preset; did you mean 'demo'\?"):
        load("demoo")


def test_a_cage_preset_with_another_structure_is_refused():
    with pytest.raises(ParameterError, match="name what it is: 'geclr'"):
        load("demo", ["pretrain.contrast.method=cage", "pretrain.contrast.bank_mode=none",
                      'pretrain.contrast.streams=["cartesian"]', "pretrain.contrast.cross_coordinate=none"])


# --- at most six configuration classes, the registry as the only extension point ----------------------------

def test_at_most_six_configuration_classes_outside_the_methods():
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if "methods" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and re.search(r"(Config|Settings|Grid|Experiment)$", node.name):
                found.add(node.name)
    assert found == {c.__name__ for c in TREE}, found
    reachable, todo = set(), [Experiment]
    while todo:  # the dataclasses of the tree outside cagelib.methods
        cls = todo.pop()
        reachable.add(cls)
        for f in fields(cls):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if is_dataclass(default) and type(default) not in reachable and "methods" not in type(default).__module__:
                todo.append(type(default))
    assert TREE - {FastConfig} <= reachable <= TREE  # FastConfig: pretrain.fast, off (None) by default


def test_pretrain_knows_no_method_by_name():
    names = set(available_methods()) - {"custom"}
    for path in (PACKAGE / "pretrain").glob("*.py"):
        tree = ast.parse(path.read_text())
        schema_1 = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "upgrade_config"]
        old = {id(n) for f in schema_1 for n in ast.walk(f)}  # schema 1's field names (its peers' own fields)
        literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                    and id(n) not in old}
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not literals & names, (path.name, literals & names)
        assert not {m for m in imported if m.startswith("methods.")} - {
            "methods.registry", "methods.cage", "methods.encoders", "methods.split_batch_norm"}, path.name


# --- one default for each setting ---------------------------------------------------------------------------

# Function parameters that share a setting's name and its default on purpose: a primitive's own argument.
PRIMITIVES = {"seed", "device", "name", "batch_size", "eval_batch_size", "in_channels", "num_joints", "stream",
              "stride", "threads", "method", "temperature"}


def test_every_setting_has_one_default_in_one_place():
    """A setting of the tree (``settings_help``) takes its default from its class's field only: no function of
    the package repeats the same literal default under the same name (a copy that drifts); the CLI help shows
    that one default and one sentence for every setting."""
    rows = settings_help(Experiment)
    assert len({k for k, _, _ in rows}) == len(rows)
    assert [k for k, _, comment in rows if not comment] == []  # a help sentence for every setting
    defaults: dict[str, set] = {}
    for key, default, _ in rows:
        defaults.setdefault(key.split(".")[-1], set()).add(default)
    copies = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            pairs = list(zip(a.args[len(a.args) - len(a.defaults):], a.defaults)) + [
                (x, d) for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, d in pairs:
                if arg.arg in defaults and arg.arg not in PRIMITIVES and isinstance(d, ast.Constant) \
                        and d.value is not None and json.dumps(d.value) in defaults[arg.arg]:
                    copies.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}({arg.arg}={d.value!r})")
    assert copies == []


# --- every setting reaches the object that uses it (the mutant test) ----------------------------------------

# a distinctive valid value per setting whose generic change (below) would be refused or meaningless
VALUES = {
    "name": "other", "data.tasks": ["style15"], "data.representation": "root_velocity", "data.corpus": "dataset-2",
    "data.task_strides": {"style15": 20}, "pretrain.optimizer": "adamw", "pretrain.device": "cpu",
    "pretrain.milestones": [3, 5], "pretrain.model.embedding_init": "2s-agcn", "pretrain.model.num_subsets": None,
    "pretrain.model.temporal_kernel": 5, "pretrain.model.widths": [8, 8, 16, 16], "pretrain.model.strides": [1, 2, 1, 2],
    "pretrain.model.in_channels": None, "pretrain.model.num_joints": None,
    "pretrain.contrast.method": "hsmb", "pretrain.contrast.streams": None, "pretrain.contrast.bank_mode": None,
    "pretrain.contrast.cross_coordinate": None, "pretrain.contrast.ambiguity_speed": "down",
    "pretrain.contrast.ambiguity_enqueue": 3, "pretrain.contrast.phi_mode": "wrapped",
    "pretrain.contrast.ambiguity_own": "masked",
    "pretrain.contrast.views": "crop", "pretrain.contrast.projection_hidden_dim": 12, "pretrain.options": None,
    "pretrain.fast": None, "pretrain.health": None, "pretrain.fast.compile_mode": "reduce-overhead",
    "pretrain.fast.cuda_graphs": False,
    "linear.optimizer": "adam", "linear.device": "cpu", "linear.phi_mode": "wrapped", "finetune.optimizer": "sgd",
    "finetune.device": "cpu", "finetune.phi_mode": "wrapped", "supervised.optimizer": "sgd",
    "supervised.device": "cpu", "supervised.phi_mode": "wrapped", "protocols": ["knn"],
    "supervised_tasks": ["emotion4"], "label_fractions": [0.25], "stream": "spherical", "seeds": [5, 6],
    "out": "elsewhere", "runs": "runs-elsewhere", "variants": {"x": {"folds": 3}}, "overrides": None,
    "linear.milestones": [0.25], "finetune.milestones": [0.5], "supervised.milestones": [0.25],
    "linear.val_fraction": 0.2, "finetune.val_fraction": 0.2, "supervised.val_fraction": 0.2,
}


def changed(key: str, default):
    if key in VALUES:
        return VALUES[key]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + (2 if key.endswith(("kernel", "heads")) else 1) if default else 3
    if isinstance(default, float):
        return default * 0.5 if default else 0.25
    if default is None:
        return None
    raise AssertionError(f"{key}: give a distinctive value in VALUES")


def arrived(exp: Experiment, key: str):
    """The object that uses ``key``: what a run of ``exp`` builds from it."""
    section = key.split(".")[0]
    if section == "pretrain":
        return exp.pretrain_config(exp.seeds[0], "run").to_dict()
    if section in ("linear", "finetune", "supervised"):
        return asdict(exp.eval_config(section, exp.seeds[0]))
    if section == "data":
        return asdict(exp.data), exp.data.task_stride(exp.data.tasks[0]), exp.data.corpus_stride()
    return exp.to_dict()[section]


def test_every_setting_reaches_the_object_that_uses_it():
    base = load("notebook")
    untested = []
    for key, default, _ in settings_help(Experiment):
        value = changed(key, json.loads(default))
        if value is None:
            untested.append(key)
            continue
        other = load("notebook", {key: value})
        assert arrived(other, key) != arrived(base, key), key
    # the section-valued or structural settings above are covered elsewhere: the method's structure by
    # ContrastConfig's own tests, options by the toy method below, fast/health by their modules' tests
    assert set(untested) <= {k for k, v in VALUES.items() if v is None}


def test_what_arrives_is_what_trains():
    """The pretraining settings as the built model, optimiser, schedule and data see them (no training)."""
    exp = load("notebook", ["pretrain.contrast.method=hsmb", "pretrain.epochs=7", "pretrain.milestones=[3, 5]",
                            "pretrain.batch_size=17", "pretrain.lr=0.037", "pretrain.contrast.queue_size=123",
                            "pretrain.contrast.momentum=0.9", "pretrain.contrast.ambiguity_speed=down",
                            "pretrain.contrast.speed_down_rate=0.1", "seeds=[5]", "pretrain.device=cpu",
                            "data.representation=root_velocity", "pretrain.contrast.views=crop",
                            "data.window=40", "data.max_pretrain_windows=77", "data.corpus=dataset-2"])
    config = exp.pretrain_config(5, "run")
    model = build_model(config)
    optimizer, scheduler, generator, _, _ = make_optimization(config, model, torch.device("cpu"))
    assert (model.config.method, config.epochs, list(scheduler.milestones), config.batch_size) == ("hsmb", 7, [3, 5], 17)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.037) and generator.initial_seed() == 5
    assert (model.memory_banks["cartesian"].size, model.config.momentum) == (123, 0.9)
    assert (model.ambiguity.speed, model.ambiguity.speed_down_rate) == ("down", 0.1)
    assert model.representation == "root_velocity" and [type(t).__name__ for t in model.augment.transforms] == ["Crop"]
    data = gait_task(exp.data)
    assert data.pretrain_x.shape[:2] == (77, 40) and data.representation == "root_velocity"
    other = gait_task(load("notebook", ["data.window=40", "data.max_pretrain_windows=77"]).data)
    assert not np.array_equal(data.pretrain_x[:, :, 1:], other.pretrain_x[:, :, 1:])  # dataset-2 walking only


# --- a new method: one module (here: this file) and one register line ---------------------------------------

@dataclass
class ToyOptions:
    noise: float = 0.05  # std of the jitter between the two views


class Toy(nn.Module):
    """Two jittered views of a batch, their A-GCN features pulled together (no negatives: it may collapse)."""

    def __init__(self, options: ToyOptions, model: AGCNConfig):
        super().__init__()
        self.options, self.encoder = options, AGCN(model)

    def forward(self, batch, generator, sample_ids=None) -> dict:
        views = [batch + self.options.noise * torch.randn(batch.shape, generator=generator) for _ in range(2)]
        a, b = (nn.functional.normalize(self.encoder(v), dim=1) for v in views)  # (N, F)
        loss = (2 - 2 * (a * b).sum(dim=1)).mean()
        return {"loss": loss, "acc": (a @ b.T).argmax(dim=1).eq(torch.arange(len(a))).float().mean().detach()}

    def encoders(self) -> dict:
        return {"cartesian": self.encoder}


@pytest.fixture
def toy():
    register("toy", lambda config: Toy(config.options, config.model), ToyOptions,
             paper=dict(epochs=50, milestones=(40,)))
    yield
    unregister("toy")


def test_a_method_registered_from_a_test_file_runs_through_the_demos_path(toy, tmp_path, capsys):
    assert "toy" in available_methods() and method("toy").options is ToyOptions
    assert PretrainConfig.paper("toy").epochs == 50 and PretrainConfig.paper("toy").options == ToyOptions()
    out = tmp_path / "demo"
    code = cli.main(["demo", "pretrain.contrast.method=toy", "pretrain.options.noise=0.1", "pretrain.epochs=1",
                     "seeds=[0]", "workers=1", "folds=2", 'data.tasks=["emotion4"]', "data.max_pretrain_windows=64",
                     "linear.epochs=5", f"out={out}"])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    rows = report["seeds"]["0"]["tasks"]["emotion4"]
    assert {"pretrained, linear", "random init, k-NN", "hand-crafted, logistic regression"} <= set(rows)
    config = json.loads((out / "seed0" / "pretrain_emotion4" / "config.json").read_text())
    assert config["contrast"]["method"] == "toy" and config["options"] == {"noise": 0.1}
    assert report["experiment"]["pretrain"]["options"] == {"noise": 0.1}
    assert "python -m cagelib demo pretrain.contrast.method=toy" in (out / "report.md").read_text()


def test_the_command_line_lists_every_setting_and_refuses_a_bad_one(capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    shown = capsys.readouterr().out
    for key, _, _ in settings_help(Experiment):
        assert key in shown
    with pytest.raises(SystemExit) as err:
        cli.main(["demo", "pretrain.epoch=3", f"out={tmp_path / 'x'}"])
    assert err.value.code == 2
    assert "did you mean 'pretrain.epochs'?" in capsys.readouterr().err and not (tmp_path / "x").exists()
