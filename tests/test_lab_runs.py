"""The lab (cagelib.lab): paths, experiments, pretraining runs and their discovery, evaluation files,
results tables built from run files, notebook stripping."""
from __future__ import annotations

import json
import math
import os
import shutil

import nbformat
import numpy as np
import pytest

from cagelib.data.tasks import DataConfig, embedded_set, emotion_data
from cagelib.errors import ParameterError
from cagelib.evaluate.metrics import majority_result
from cagelib.experiment import Experiment, load
from cagelib.lab import evaluation as ex
from cagelib.lab import notebook, runs, tables
from cagelib.lab import workbench as wb
from cagelib.methods.encoders import AGCNConfig
from cagelib.pretrain.config import PretrainConfig

# the old TINY RunSettings (epochs=1, batch_size=16, queue_size=32, window=16, max_pretrain_windows=32,
# device="cpu") as overrides of the notebook preset (the old RunSettings' base)
TINY = ["pretrain.epochs=1", "pretrain.batch_size=16", "pretrain.contrast.queue_size=32", "data.window=16",
        "data.max_pretrain_windows=32", "pretrain.device=cpu"]
# the old EvalSettings(protocols=("linear",), folds=2, linear_epochs=5, device="cpu")
LINEAR_ONLY = ['protocols=["linear"]', "folds=2", "linear.epochs=5", "linear.device=cpu"]


def tiny(method: str = "geclr", *extra) -> Experiment:
    return load("notebook", [f"pretrain.contrast.method={method}", *TINY, *extra])


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An outputs folder holding one tiny GE-CLR run, evaluated (linear, 2 folds)."""
    root = tmp_path_factory.mktemp("outputs")
    result = wb.pretrain_run(tiny(), outputs=root, progress=False)
    ex.evaluate_run(result.run_dir, tiny("geclr", *LINEAR_ONLY), progress=False)
    return root


def test_repo_root_is_found_from_the_notebooks_folder(tmp_path, monkeypatch):
    root = wb.repo_root()
    assert (root / "pyproject.toml").is_file() and (root / "cagelib").is_dir()
    assert wb.repo_root(root / "notebooks") == root
    assert wb.repo_root(tmp_path) == root  # outside the checkout: the installed package's parent
    monkeypatch.chdir(root / "notebooks")
    assert wb.resolve_path("outputs/x") == root / "outputs" / "x"  # relative to the repository, not the cwd
    assert wb.resolve_path(tmp_path) == tmp_path
    monkeypatch.delenv("CAGELIB_OUTPUTS", raising=False)
    assert wb.outputs_dir() == root / "outputs"
    monkeypatch.setenv("CAGELIB_OUTPUTS", str(tmp_path))
    assert wb.outputs_dir() == tmp_path and wb.outputs_dir(tmp_path / "o") == tmp_path / "o"


def test_experiment_schedule_paper_values_and_variants():
    # milestones given as fractions of the run (the notebook preset: 50 % / 80 %), floored, or as epochs
    assert tiny("geclr", "pretrain.epochs=10").pretrain.milestones == (5, 8)
    assert tiny("geclr", "pretrain.epochs=2").pretrain.milestones == (1,)
    assert tiny("geclr", "pretrain.epochs=1").pretrain.milestones == ()
    assert tiny("geclr", "pretrain.epochs=10", "pretrain.milestones=[3]").pretrain.milestones == (3,)
    cage, geclr = load("paper"), load("paper", ["pretrain=paper:geclr"])
    assert (cage.pretrain.epochs, cage.pretrain.milestones, cage.pretrain.contrast.queue_size) == (300, (150, 250), 2048)
    assert cage.pretrain.model == AGCNConfig() and cage.pretrain.contrast.method == "cage"
    assert (geclr.pretrain.epochs, geclr.pretrain.milestones) == (200, (100, 160))
    config = cage.pretrain_config(0, "/tmp/x")
    assert config.model.widths[-1] == 256 and len(config.model.widths) == 10 and config.contrast.method == "cage"
    assert config.run_dir == "/tmp/x" and config.seed == 0
    assert cage.data.max_pretrain_windows == 0  # 0 means every corpus window
    # variants are named by their grid; each is its own experiment
    speed = load("reproduce/speed")
    down = speed.cell("hsmb (down r=0.5)").pretrain_config(0, "x")
    assert (down.contrast.method, down.contrast.ambiguity_speed, down.contrast.speed_down_rate) == ("hsmb", "down", 0.5)
    up = speed.cell("hsmb (up r=8)").pretrain_config(0, "x")
    assert (up.contrast.ambiguity_speed, up.contrast.speed_up_rate) == ("up", 8)
    # the same run: the device does not matter, the seed does
    assert wb.run_key(tiny("geclr", "pretrain.device=cuda"), 0) == wb.run_key(tiny(), 0)
    assert wb.run_key(tiny(), 1) != wb.run_key(tiny(), 0)
    with pytest.raises(ParameterError, match="'huge' is not a preset of AGCNConfig"):
        tiny("geclr", "pretrain.model=huge")


def test_dataset2_corpus_is_walking_only_and_the_task_is_unchanged():
    other = emotion_data(DataConfig(window=32, max_pretrain_windows=0), "other")
    walking = emotion_data(DataConfig(window=32, max_pretrain_windows=0), "dataset-2")
    gs = embedded_set()
    # Task clips are excluded by group ("dataset-N/clip_id"): dataset-2 walks that share a clip id with a
    # dataset-1 task clip (walk_normal_001/002) stay in the corpus.
    d2 = gs.lengths[gs.meta["dataset"] == "dataset-2"]
    assert len(walking.pretrain_x) == int(np.sum((d2 - 32) // 32 + 1))  # every dataset-2 window, nothing else
    assert len(walking.pretrain_x) < len(other.pretrain_x)
    np.testing.assert_array_equal(walking.x, other.x)
    np.testing.assert_array_equal(walking.y, other.y)
    with pytest.raises(ValueError, match="corpus"):
        emotion_data(corpus="everything")


def test_pretrain_run_writes_a_run_that_is_found_again(outputs):
    (run,) = runs.list_runs(outputs)
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", wb.EXPERIMENT_FILE, "evaluation.json"):
        assert (run.path / name).is_file(), name
    assert run.path.parent == outputs / "runs" and run.path.name.startswith("geclr-s0-")
    assert run.complete and run.method == "geclr" and run.seed == 0 and len(run.history) == 1
    assert run.variant == "geclr"  # made outside a grid: the variant is the method
    assert run.experiment.data.window == 16 and run.data_config().window == 16 and run.encoder == "small"
    assert run.experiment.pretrain.contrast.queue_size == 32 and run.record[1] == 0
    paper_config = PretrainConfig.paper("cage").to_dict()
    assert runs.Run(run.path, paper_config, None).encoder == "paper"  # inferred for runs without an experiment
    saved = json.loads((run.path / wb.EXPERIMENT_FILE).read_text())
    assert saved["data"]["pretrain_windows"] == 32 and saved["seed"] == 0 and saved["variant"] == "geclr"
    assert runs.latest_run(outputs, "geclr").path == run.path and runs.latest_run(outputs, "cage") is None
    assert runs.ensure_run(tiny(), outputs, progress=False) == run.path  # found, not retrained
    assert runs.ensure_run(tiny("geclr", "pretrain.device=auto"), outputs, progress=False) == run.path
    assert runs.list_runs(outputs, experiment=tiny("geclr", "seeds=[1]")) == []  # another seed: another run
    assert runs.find_run("geclr", outputs) == run.path
    assert len(runs.list_runs(outputs)) == 1
    with pytest.raises(ValueError, match="another experiment"):
        wb.pretrain_run(tiny("geclr", "seeds=[3]"), run_dir=run.path, progress=False)
    table = runs.runs_table(outputs)
    assert "| geclr | 0 | 1/1 | small |" in table and "| linear |" in table


def test_discovery_skips_unfinished_runs_and_foreign_json(outputs, tmp_path):
    (run,) = runs.list_runs(outputs)
    copy = tmp_path / "deep" / "unfinished"
    shutil.copytree(run.path, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "epochs": 3}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"not": "a run"}')
    found = runs.list_runs(tmp_path)
    assert [r.path for r in found] == [copy] and not found[0].complete
    assert runs.latest_run(tmp_path) is None
    with pytest.raises(ValueError, match="unfinished"):
        ex.evaluate_run(copy)


def test_ensure_run_trains_only_when_asked(tmp_path, capsys):
    exp = tiny("asmb", "seeds=[2]")
    with pytest.raises(FileNotFoundError, match="03_pretrain"):
        runs.ensure_run(exp, tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="no complete 'asmb' run"):
        runs.find_run("asmb", tmp_path)
    path = runs.ensure_run(exp, tmp_path, progress=False, train_if_missing=True)
    assert "pretraining one now" in capsys.readouterr().out
    assert path.name.startswith("asmb-s2-") and runs.load_run(path).complete
    assert runs.ensure_run(exp, tmp_path, progress=False) == path
    assert runs.find_run("asmb", tmp_path) == path


def test_the_random_init_control_is_always_evaluated():
    """The old ``baseline`` flag is gone: whatever the protocols, the last entry is the same encoder at its
    random initialisation, read with the linear probe."""
    for protocols in (["linear"], ["knn"], ["finetune", "semi-supervised"]):
        jobs = ex.protocol_runs(tiny("geclr", f"protocols={json.dumps(protocols)}", "label_fractions=[0.2, 0.5]"))
        assert jobs[-1] == (ex.RANDOM_INIT, "linear", 1.0)
        assert [name for name, _, _ in jobs].count(ex.RANDOM_INIT) == 1
    semi = ex.protocol_runs(tiny("geclr", 'protocols=["semi-supervised"]', "label_fractions=[0.2, 0.5]"))
    assert semi == [("semi 20%", "semi-supervised", 0.2), ("semi 50%", "semi-supervised", 0.5),
                    (ex.RANDOM_INIT, "linear", 1.0)]


def test_evaluation_file_baselines_and_results_tables(outputs):
    (run,) = runs.list_runs(outputs)
    evaluation = json.loads((run.path / "evaluation.json").read_text())
    assert set(evaluation["results"]) == {"linear", ex.RANDOM_INIT, ex.MAJORITY}
    assert evaluation["settings"] == ex.evaluation_settings(tiny("geclr", *LINEAR_ONLY))
    assert evaluation["settings"]["folds"] == 2 and evaluation["settings"]["linear"]["epochs"] == 5
    data = emotion_data(run.data_config())
    folds = data.folds(2, 1, 0)
    for name, res in evaluation["results"].items():
        agg = res["aggregate"]
        assert agg["n"] == 2 and len(agg["per_class_mean"]) == 4 and 0 <= agg["top1_mean"] <= 100
        assert np.sum(res["confusion"]) == len(data.y)  # every window tested once over the 2 folds
        assert agg["top1_mean"] == pytest.approx(np.mean([f["top1"] for f in res["folds"]]))
    majority = [100 * np.mean(data.y[te] == np.bincount(data.y[tr], minlength=4).argmax()) for tr, te in folds]
    assert evaluation["results"][ex.MAJORITY]["aggregate"]["top1_values"] == pytest.approx(majority)
    rows = tables.evaluation_rows(evaluation)
    assert [r["protocol"] for r in rows] == ["linear", ex.RANDOM_INIT, ex.MAJORITY]
    per_class = evaluation["results"]["linear"]["aggregate"]["per_class_mean"]
    assert rows[0]["balanced %"] == pytest.approx(np.nanmean(per_class))
    (row,) = ex.collect_results(outputs)
    assert row["method"] == "geclr" and row["linear"] == evaluation["results"]["linear"]["aggregate"]["top1_mean"]
    assert row["linear fold std"] == evaluation["results"]["linear"]["aggregate"]["top1_std"]


def test_summary_is_mean_and_std_over_seeds():
    rows = [{"run": "a", "method": "cage", "seed": 0, "linear": 50.0},
            {"run": "b", "method": "cage", "seed": 1, "linear": 60.0},
            {"run": "c", "method": "geclr", "seed": 0, "linear": 40.0, "finetune": 45.0}]
    summary = tables.summarize_results(rows, method_order=("geclr", "cage"))
    assert [s["method"] for s in summary] == ["geclr", "cage"]
    assert summary[1] == {"method": "cage", "seeds": 2, "runs": 2,
                          "linear top-1 %": f"55.00 ± {np.std([50, 60], ddof=1):.2f}"}
    assert summary[0]["linear top-1 %"] == "40.00" and summary[0]["finetune top-1 %"] == "45.00"
    rows[1]["epochs"], rows[0]["epochs"], rows[2]["epochs"] = 300, 2, 2
    by_size = tables.summarize_results(rows, by=("method", "epochs"))  # runs of different sizes kept apart
    assert [(s["method"], s["epochs"], s["runs"]) for s in by_size] == [("cage", 2, 1), ("cage", 300, 1), ("geclr", 2, 1)]


def test_majority_result_counts():
    res = majority_result([0, 2, 2, 1], [2, 2, 0, 3], ("a", "b", "c", "d"))
    assert res.top1 == 50.0 and res.confusion[0] == [0, 0, 1, 0] and res.per_class[2] == 100.0
    assert math.isnan(res.per_class[1])  # no test sample of class b


def test_strip_and_check_notebooks(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1"), nbformat.v4.new_markdown_cell("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nb.cells[0].execution_count = 1
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert notebook.main(["strip", "--check", str(path)]) == 1
    assert notebook.strip_notebook(path) and not notebook.strip_notebook(path)
    clean = nbformat.read(path, as_version=4)
    assert clean.cells[0].outputs == [] and clean.cells[0].execution_count is None
    assert clean.cells[0].metadata["tags"] == ["parameters"] and "widgets" not in clean.metadata
    assert notebook.main(["strip", "--check", str(path)]) == 0


def test_live_loss_plot_redraws_every_epoch(capsys):
    live = notebook.LiveLossPlot("t")
    live(1, {"epoch": 1, "loss": 3.0, "loss_base": 2.0, "acc": 0.1, "lr": 0.1, "seconds": 1.0})
    live(2, {"epoch": 2, "loss": 2.5, "loss_base": 1.5, "acc": 0.2, "lr": 0.1, "seconds": 1.0})
    assert len(live.history) == 2
    assert capsys.readouterr().out.count("Figure(") == 2  # outside a kernel, display() prints each figure
    lines = {line.get_label(): list(line.get_ydata()) for ax in live.figure().axes for line in ax.get_lines()}
    assert lines == {"positive-pair acc": [0.1, 0.2], "loss": [3.0, 2.5], "loss_base": [2.0, 1.5]}


def test_set_threads():
    import torch

    before = torch.get_num_threads()
    try:
        assert wb.set_threads(1) == 1 and wb.set_threads(0) == 1  # 0 leaves the setting alone
    finally:
        torch.set_num_threads(before)
    assert os.cpu_count() >= 1
