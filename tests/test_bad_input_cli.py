"""Bad input from the hostile review, second part: run files (``experiment.json``, a legacy ``workbench.json``,
``config.json``), checkpoints of another run, k-NN, empty test sets, ``your_gait``, ``python -m cagelib peers`` and
the commands' ``--help``.

Each case gives cagelib's error naming the file (or argument), the item and the problem, raised before anything
is written; or a documented result (k above the training set's size is clamped).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pretrain_loop import gaits, tiny_config
from test_your_gait import bandai_bvh

from cagelib import cli
from cagelib.errors import CagelibError, CheckpointError, DataFileError, ParameterError
from cagelib.evaluate.features import knn_predict
from cagelib.evaluate.protocols import EvalConfig, evaluate_folds, knn_eval, linear_eval
from cagelib.experiment import load
from cagelib.lab import your_gait as yg
from cagelib.lab.runs import list_runs, load_run
from cagelib.lab.workbench import EXPERIMENT_FILE, LEGACY_FILE, pretrain_run, run_experiment
from cagelib.pretrain.checkpoint import load_pretrained
from cagelib.pretrain.config import PretrainConfig, check_same_run
from cagelib.pretrain.loop import pretrain

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two tiny one-epoch runs with other seeds (``a``, ``b``) and one of another method (``geclr``)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    for name, method, seed in (("a", "cage", 0), ("b", "cage", 1), ("geclr", "geclr", 0)):
        pretrain(tiny_config(root, method, epochs=1, seed=seed), gaits(), root / name)
    return root


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- experiment.json, workbench.json, config.json


def notebook_experiment(*overrides):
    """The notebook preset's experiment, one epoch on 64 corpus windows (seconds on a CPU)."""
    return load("notebook", ["pretrain.epochs=1", "data.max_pretrain_windows=64", *overrides])


def test_experiment_json_without_its_tree_is_named_not_a_key_error(tiny_runs, tmp_path):
    run = copy_run(tiny_runs / "a", tmp_path / "run")
    (run / EXPERIMENT_FILE).write_text(json.dumps({"task": {}, "data": {}}))
    missing = (r"experiment\.json: experiment: missing: a run's experiment\.json holds its tree under 'experiment'; "
               r"restore the file, or delete it")
    with pytest.raises(DataFileError, match=missing):
        load_run(run)
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(DataFileError, match=missing):
        pretrain_run(notebook_experiment(), run_dir=run, progress=False)
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written
    assert json.loads((run / EXPERIMENT_FILE).read_text()) == {"task": {}, "data": {}}
    (run / EXPERIMENT_FILE).write_text(json.dumps({"experiment": {"pretrain": {"epochs": "2"}}, "seed": 0}))
    with pytest.raises(ParameterError, match=r"experiment\.json: 'pretrain\.epochs': expected an integer, got '2'"):
        load_run(run)
    (run / EXPERIMENT_FILE).write_text(json.dumps({"experiment": {"pretrain": {"epoch": 2}}}))
    with pytest.raises(ParameterError, match=r"experiment\.json: 'pretrain\.epoch': is not a setting of "
                       r"PretrainConfig; did you mean 'pretrain\.epochs'\?"):
        load_run(run)
    (run / EXPERIMENT_FILE).write_text("[1, 2]")
    with pytest.raises(DataFileError, match=missing):
        load_run(run)
    (run / EXPERIMENT_FILE).write_text('{"experiment": {')
    with pytest.raises(ValueError, match=r"experiment\.json: not valid JSON"):
        load_run(run)
    assert run not in [r.path for r in list_runs(tmp_path)]  # a broken record: skipped when listing


def test_a_legacy_workbench_json_still_loads_and_a_broken_one_is_named(tiny_runs, tmp_path):
    run = copy_run(tiny_runs / "a", tmp_path / "run")
    settings = {"method": "geclr", "epochs": 3, "seed": 2, "window": 40, "max_pretrain_windows": 64,
                "queue_size": 128, "encoder": "small"}  # RunSettings fields, as the workbench wrote them then
    (run / LEGACY_FILE).write_text(json.dumps({"settings": settings, "task": {}, "data": {}}))
    exp, seed, variant = run_experiment(run)
    assert (seed, variant, exp.seeds) == (2, "geclr", (2,))
    assert (exp.pretrain.contrast.method, exp.pretrain.epochs, exp.pretrain.contrast.queue_size) == ("geclr", 3, 128)
    assert (exp.data.window, exp.data.max_pretrain_windows) == (40, 64)
    assert exp.data.representation == "first_frame" and exp.pretrain.contrast.views == "paper"  # predates both
    loaded = load_run(run)
    assert loaded.variant == "geclr" and loaded.data_config() == exp.data
    (run / LEGACY_FILE).write_text(json.dumps({"task": {}, "data": {}}))
    with pytest.raises(DataFileError, match=r"workbench\.json: settings: missing \(a workbench\.json holds the run's "
                       r"RunSettings under 'settings'\)"):
        load_run(run)
    (run / LEGACY_FILE).write_text(json.dumps({"settings": {"epochs": "2"}}))
    with pytest.raises(DataFileError, match=r"workbench\.json: settings: not a readable RunSettings \(.*"
                       r"'pretrain\.epochs': expected an integer, got '2'\)"):
        load_run(run)
    (run / LEGACY_FILE).write_text("[1, 2]")
    with pytest.raises(DataFileError, match=r"workbench\.json: settings: missing"):
        load_run(run)
    (run / EXPERIMENT_FILE).write_text(json.dumps({"experiment": notebook_experiment().to_dict(), "seed": 0}))
    assert run_experiment(run)[1:] == (0, "cage")  # experiment.json, when there, is the record read


def test_config_json_values_of_the_wrong_type_name_file_key_type_and_value(tiny_runs, tmp_path):
    run = copy_run(tiny_runs / "a", tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "epochs": "2"}))
    message = r'config\.json: epochs: expected an integer, got the string "2"'
    with pytest.raises(DataFileError, match=message):
        load_run(run)
    with pytest.raises(ValueError, match=r'config\.json: not a valid PretrainConfig: epochs: expected an integer, '
                       r'got the string "2"'):
        load_pretrained(run)
    assert run not in [r.path for r in list_runs(tmp_path)]  # skipped, as any foreign config.json
    bad = {**config, "model": {**config["model"], "widths": 5}, "fast": "yes"}
    with pytest.raises(DataFileError, match=r"x\.json: model\.widths: expected a list, got the integer 5"):
        PretrainConfig.from_dict(bad, "x.json")
    with pytest.raises(DataFileError, match=r"fast: expected an object \(FastConfig\) or null, got the string \"yes\""):
        PretrainConfig.from_dict({**config, "fast": "yes"})
    with pytest.raises(DataFileError, match=r"lr: expected a number, got a boolean true"):
        PretrainConfig.from_dict({**config, "lr": True})
    assert PretrainConfig.from_dict(config) == PretrainConfig.from_dict(json.loads(json.dumps(config)))


# ---------------------------------------------------------------- a checkpoint of another run


def test_another_runs_checkpoint_is_refused_naming_both_files(tiny_runs, tmp_path):
    run = copy_run(tiny_runs / "a", tmp_path / "run")
    shutil.copy(tiny_runs / "b" / "checkpoint.pt", run / "checkpoint.pt")  # same model, other seed: loads "fine"
    config = PretrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    with pytest.raises(CheckpointError, match=r"run/checkpoint\.pt: belongs to another run than .*run/config\.json "
                       r"\(run identity \w+ vs \w+; settings that differ: \['seed'\]\); put the run's own"):
        check_same_run(run / "config.json", config, run / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match=r"belongs to another run than"):  # your_gait checks it
        yg.run_identity(run)
    own = torch.load(tiny_runs / "a" / "checkpoint.pt", weights_only=True)
    check_same_run(run / "config.json", config, run / "checkpoint.pt", own)  # its own: fine
    old = {k: v for k, v in own.items() if k != "config"}  # a checkpoint without the config entry:
    check_same_run(run / "config.json", config, run / "checkpoint.pt", old)  # left to the strict state-dict check
    torch.save({"model": torch.load(tiny_runs / "geclr" / "checkpoint.pt", weights_only=True)["model"]},
               run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: checkpoint does not match the model; missing keys"):
        load_pretrained(run)


def test_resuming_with_another_models_optimizer_state_names_the_file(tiny_runs, tmp_path):
    run = copy_run(tiny_runs / "a", tmp_path / "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["optimizer"] = torch.load(tiny_runs / "geclr" / "checkpoint.pt", weights_only=True)["optimizer"]
    torch.save(state, run / "checkpoint.pt")
    config = replace(tiny_config(tmp_path, "cage", epochs=2), run_dir=str(run))
    with pytest.raises(CheckpointError, match=r"run/checkpoint\.pt: entry 'optimizer': belongs to another model or "
                       r"configuration than the run's config\.json \(ValueError: .*\); resume only with"):
        pretrain(config, gaits(), run, resume=True)
    state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(3, 3)  # same groups, another shape
    state["optimizer"]["param_groups"] = torch.load(tiny_runs / "a" / "checkpoint.pt",
                                                    weights_only=True)["optimizer"]["param_groups"]
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"entry 'optimizer': .*\(parameter 0: momentum_buffer has shape \(3, 3\)"):
        pretrain(config, gaits(), run, resume=True)


# ---------------------------------------------------------------- k-NN, empty test sets


def features(n: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.arange(n) % 2


@pytest.mark.parametrize("k, message", [(0, "must be >= 1 .*got 0"), (-3, "must be >= 1 .*got -3"),
                                        (2.5, "must be a whole number >= 1 .*got 2.5"),
                                        (True, "must be a whole number >= 1 .*got True")])
def test_knn_refuses_k_below_one(k, message):
    f, y = features()
    refused = rf"^EvalConfig: knn_k must be a whole number >= 1 \(the neighbours that vote\), got {re.escape(repr(k))}$"
    with pytest.raises(ValueError, match=refused):  # a bad k fails where the k-NN's recipe is built
        EvalConfig.paper("knn", knn_k=k)
    with pytest.raises(ValueError, match=refused):
        replace(EvalConfig.paper("knn"), knn_k=k)
    given = str(k).lower()  # as a command line gives it (TOML: true, 2.5, -3)
    with pytest.raises(ParameterError, match=rf"override 'linear\.knn_k={re.escape(given)}': 'linear(\.knn_k)?': "
                       r"(EvalConfig: knn_k must be a whole number >= 1|expected an integer, got)"):
        load("demo", [f"linear.knn_k={given}"])  # the experiments' k-NN (its recipe: linear)
    with pytest.raises(CagelibError, match=rf"^knn_predict: k: {message}"):
        knn_predict(f, y, f, 2, k=k)


def test_knn_k_above_the_training_set_is_clamped_to_its_size():
    f, y = features()
    clamped = knn_eval(None, f[:6], y[:6], f, y, config=EvalConfig.paper("knn", knn_k=50))
    every = knn_eval(None, f[:6], y[:6], f, y, config=EvalConfig.paper("knn", knn_k=6))
    assert clamped.top1 == every.top1 and clamped.config["knn_k"] == 50 and clamped.config["k_used"] == 6
    assert "k_used" not in every.config and every.config["knn_k"] == 6
    fewer = knn_eval(None, f[:6], y[:6], f, y, config=EvalConfig.paper("knn", knn_k=1))
    assert fewer.config["knn_k"] == 1 and "k_used" not in fewer.config  # the k given is the k used


class Task:
    name = "emotion4"

    def __init__(self, n=12):
        self.x, _ = features(n)
        self.groups = np.arange(n) // 2  # clips of two windows
        self.y, self.label_names = self.groups % 2, ("a", "b")


def test_an_empty_test_fold_names_the_fold_and_the_task():
    task = Task()
    folds = [(np.arange(6), np.arange(6, 12)), (np.arange(12), np.array([], dtype=int))]
    with pytest.raises(CagelibError, match=r"^task 'emotion4': fold 1 of 2 \(counted from 0\): the test windows are empty \(of 12 task "
                       r"windows, 12 train and 0 test\); this happens when a fold .*fewer clips than folds"):
        evaluate_folds(None, task, folds, "knn", EvalConfig.paper("knn", device="cpu"))
    f, y = features()
    with pytest.raises(CagelibError, match=r"^test_x: is empty: no test windows; this happens when"):
        linear_eval(None, f, y, f[:0], y[:0], EvalConfig.paper("linear", device="cpu", epochs=1))
    with pytest.raises(CagelibError, match=r"^train_x: is empty: no training windows"):
        knn_eval(None, f[:0], y[:0], f, y)


# ---------------------------------------------------------------- your_gait


@pytest.fixture(scope="module")
def gait_run(tmp_path_factory):
    torch.set_num_threads(1)
    outputs = tmp_path_factory.mktemp("outputs") / "demo"
    run = pretrain_run(notebook_experiment(), run_dir=outputs / "seed0" / "pretrain_x", progress=False).run_dir
    yg.train_probe(run, epochs=5)
    return run


def test_a_probe_of_another_run_or_checkpoint_is_refused_and_refitted(gait_run, tiny_runs, tmp_path, capsys):
    other = copy_run(tiny_runs / "a", tmp_path / "other")  # one epoch, as gait_run: the epoch check passes
    for name in (yg.PROBE_WEIGHTS, yg.PROBE_FILE):
        shutil.copy(gait_run / name, other / name)
    with pytest.raises(CheckpointError, match=r"other/probe\.pt: fitted on another run \(run identity \w+, this "
                       r"run's is \w+\); fit it with"):
        yg.load_probe(other)
    run = copy_run(gait_run, tmp_path / "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, run / "checkpoint.pt")  # the same run's settings, other weights
    with pytest.raises(CheckpointError, match=r"run/probe\.pt: fitted on another checkpoint\.pt than the run's present"):
        yg.load_probe(run)
    probe = yg.ensure_probe(run, epochs=2)
    out = capsys.readouterr().out
    assert f"{run / 'probe.pt'}: fitted on another checkpoint.pt" in out
    assert f"fitting the emotion probe of {run} now" in out
    assert probe.info["checkpoint_sha256"] == yg.run_identity(run)["checkpoint_sha256"]


def test_ensure_probe_says_which_run_has_no_probe(gait_run, tmp_path, capsys):
    run = copy_run(gait_run, tmp_path / "run")
    (run / yg.PROBE_WEIGHTS).unlink()
    yg.ensure_probe(run, epochs=2)
    assert capsys.readouterr().out.startswith(f"{run}: has no emotion probe (probe.pt, probe.json): fitting the "
                                              f"emotion probe of {run} now")


@pytest.mark.parametrize("frames", [1, 3, 15])
def test_a_recording_shorter_than_half_a_window_is_refused(gait_run, clip, frames):
    with pytest.raises(DataFileError, match=rf"^recording: too short: {frames} frames at 30 fps, the minimum is 16 "
                       r"\(0\.53 s, half of the run's 32-frame window\)"):
        yg.predict_gait(gait_run, clip[:frames])
    assert yg.predict_gait(gait_run, clip[:16]).window_probs.shape == (1, 4)


def test_fps_with_a_bvh_is_refused(gait_run, clip, tmp_path, capsys):
    path = tmp_path / "walk.bvh"
    path.write_text(bandai_bvh(clip[:40]))
    with pytest.raises(DataFileError, match=r"walk\.bvh: fps: a BVH file carries its own frame rate \(Frame Time "
                       r"0\.03333333 s: 30 fps\); the option of 120 fps would be ignored; leave out --fps"):
        yg.predict_gait(gait_run, path, fps=120)
    with pytest.raises(SystemExit) as info:
        cli.main(["your-gait", str(gait_run), str(path), "--fps", "120"])
    assert info.value.code == 2
    assert "--fps 120: " in capsys.readouterr().err


def test_a_bvh_frame_time_of_a_rounded_30_fps_keeps_every_frame(gait_run, clip, tmp_path, capsys):
    text = bandai_bvh(clip[:68]).replace("Frame Time: 0.03333333", "Frame Time: 0.0333333")
    path = tmp_path / "walk68.bvh"
    path.write_text(text)
    positions, fps = yg.load_recording(path)
    assert len(positions) == 68 and len(yg.resample(positions, fps, 30.0)) == 68
    cli.main(["your-gait", str(gait_run), str(path)])
    out = capsys.readouterr().out
    assert f"{path}: 68 frames at 30 fps (the run's rate), 5 windows of 32 frames" in out
    assert len(yg.resample(yg.resample(clip[:68], 30.0, 60.0), 60.0, 30.0)) == 68  # 135 frames at 60 fps: 68 at 30


def test_run_dir_is_explained_and_a_folder_above_runs_lists_them(gait_run, clip, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["your-gait", "--help"])
    text = capsys.readouterr().out
    assert "usage: python -m cagelib your-gait [-h]" in text and "RUN_DIR" in text
    assert "outputs/demo/seed0/pretrain_emotion4+style15" in " ".join(text.split())
    np.save(tmp_path / "walk.npy", clip)
    demo = gait_run.parents[1]  # the outputs/demo of this test
    with pytest.raises(SystemExit) as info:
        cli.main(["your-gait", str(demo), str(tmp_path / "walk.npy")])
    assert info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{demo}: not a pretraining run folder (no config.json); it holds 1 run folder below it: seed0/pretrain_x;" \
           f" pass one of them, e.g. {gait_run}" in err


# ---------------------------------------------------------------- peers


@pytest.mark.parametrize("overrides, message", [
    (["seeds=[-1]"], r"override 'seeds=\[-1\]'.*seeds.*>= 0.*got \[-1\]"),
    (["seeds=[0, 0]"], r"override 'seeds=\[0, 0\]'.*seeds must be distinct.*got \[0, 0\]"),
    (["data.max_pretrain_windows=-5"], r"override 'data\.max_pretrain_windows=-5': 'data': DataConfig: need .*"
                                       r"max_pretrain_windows >= 0"),
    (["--only", "mampp"], r"--only: \['mampp'\] are not variants of 'peers'"),
], ids=["negative-seed", "seed-twice", "negative-corpus", "unknown-variant"])
def test_peers_validates_options_before_listing(overrides, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["peers", *overrides, "--list"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert re.search(message, err), err
    assert out == ""  # nothing listed
    assert "python -m cagelib peers: error: " in err and "usage: python -m cagelib peers" in err, err


def test_peers_lists_its_cells_and_refuses_a_results_file(tmp_path, capsys):
    out = f"out={json.dumps(str(tmp_path / 'peers'))}"
    assert cli.main(["peers", "seeds=[0]", out, "--list", "--only", "geclr"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert "geclr, seed 0: to run" in listed and not any(line.startswith(("mamp", "cage")) for line in listed)
    assert not any("seed 1" in line for line in listed)
    assert not (tmp_path / "peers").exists()  # listing writes nothing
    # the order of the module's docstring (`python -m cagelib peers --only geclr mamp seeds=[0]`): the same cells
    assert cli.main(["peers", "--only", "geclr", "seeds=[0]", out, "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == listed
    (tmp_path / "table.md").write_text("x")
    with pytest.raises(SystemExit) as info:
        cli.main(["peers", f"out={json.dumps(str(tmp_path / 'table.md'))}", "--list"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(rf"out.*{re.escape(str(tmp_path / 'table.md'))} is a file, not a folder", err), err
    assert (tmp_path / "table.md").read_text() == "x"


# ---------------------------------------------------------------- --help of every command


class Captured(Exception):
    def __init__(self, parser):
        super().__init__(parser.prog)
        self.parser = parser


def parser_of(main, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``main`` builds (caught at its ``parse_args``)."""
    def grab(self, *args, **kwargs):
        raise Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(Captured) as info:
        main([])
    monkeypatch.undo()
    return info.value.parser


def benchmark_parse_args():
    spec = importlib.util.spec_from_file_location("pretrain_throughput", ROOT / "benchmarks" / "pretrain_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_args


def cli_parser(command: str):
    """The parser of ``python -m cagelib <command>``, as ``cagelib.cli.main`` would pass it its arguments."""
    def main(argv):
        sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices[command].parse_args(argv)

    return main


def commands():
    from cagelib.data import build

    return {**{f"python -m cagelib {c}": cli_parser(c) for c in ("demo", "pretrain", "evaluate", "peers", "reproduce")},
            "python -m cagelib your-gait": yg.main, "python -m cagelib data": build.main,
            "python benchmarks/pretrain_throughput.py": benchmark_parse_args()}


@pytest.mark.parametrize("command", list(commands()))
def test_every_option_has_a_help_sentence_and_the_usage_names_the_command(command, monkeypatch):
    parser = parser_of(commands()[command], monkeypatch)
    assert parser.prog == command
    assert parser.format_usage().startswith(f"usage: {command} ")
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{command}: {name} has no help"
        assert len(action.help.strip()) >= 12, f"{command}: {name}: help {action.help!r} is not a sentence"
