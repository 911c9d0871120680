"""The main job (`make demo`, `python -m cagelib demo`) end to end at a tiny size: files written, numbers
well-formed, and a second run in the same folder replaces the first."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from cagelib import cli
from cagelib.data.tasks import DataConfig, gait_task
from cagelib.experiment import Experiment, load
from cagelib.lab.demo import command
from cagelib.lab.runner import MARKER, prepare_output

# what the old test shrank (DemoConfig(epochs=1, queue_size=32, seeds=(0,), folds=2, max_pretrain_windows=64,
# workers=1)), as overrides of the demo preset (method: the preset's GE-CLR)
TINY = ["pretrain.epochs=1", "pretrain.contrast.queue_size=32", "seeds=[0]", "folds=2",
        "data.max_pretrain_windows=64", "workers=1"]


@pytest.fixture(autouse=True)
def _sigterm_restored():
    """``cli.main`` installs its SIGTERM handler in the main thread: give pytest its own back."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def test_emotion_task_keeps_task_clips_out_of_the_pretraining_corpus():
    task = gait_task(DataConfig(max_pretrain_windows=0))
    assert task.summary()["per_class"]["happy"]["clips"] == 7
    assert len(task.clip_names) == 28
    # A task window must not reappear in the corpus (windows are cut from disjoint clip sets).
    corpus = {w.tobytes() for w in task.pretrain_x[:, :4]}
    assert not any(w.tobytes() in corpus for w in task.x[:, :4])
    for train, test in task.folds(4, 2):
        assert not set(task.groups[train]) & set(task.groups[test])


def test_demo_runs_twice_in_one_folder_and_writes_its_report(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", *TINY, f"out={out}"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(argv) == 0  # the second run replaces the first instead of failing on its checkpoint
    assert "Replacing the previous results" in capsys.readouterr().out
    for name in ("summary.json", "experiment.json", "results.json", "report.md", "table.md", "skeleton.png", MARKER):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    tasks = saved["seeds"]["0"]["tasks"]
    assert set(tasks) == {"emotion4", "style15"}
    rows = tasks["emotion4"]
    assert {"pretrained, linear", "pretrained, linear (z)", "pretrained, k-NN", "random init, linear",
            "hand-crafted, logistic regression", "majority class"} <= set(rows)
    for row in rows.values():
        assert all(0.0 <= row[key] <= 100.0 for key in ("top1", "balanced", "clip_top1"))
    # the majority class's balanced accuracy is exactly chance: one class right, three wrong
    assert rows["majority class"]["balanced"] == 25.0
    assert saved["seeds"]["0"]["health"]["emotion4+style15"]["final"]["epoch"] == 1
    report = (out / "report.md").read_text()
    assert "| pretrained, linear |" in report
    # one seed gives no interval: the paired differences are there, as dashes (over seeds and over clips)
    assert "Paired differences" in report and "clips and seeds (bootstrap)" in report
    assert "| pretrained, linear (z) | random init, linear (z) | - | - | - | - |" in saved["differences"]
    # the seed keeps every row's prediction of every task window (one vector per repeat) and the windows' labels
    kept = saved["seeds"]["0"]["predictions"]
    task = gait_task(DataConfig(max_pretrain_windows=64))
    assert kept["emotion4"]["labels"] == task.y.tolist() and kept["emotion4"]["clips"] == task.groups.tolist()
    assert set(kept["emotion4"]["rows"]) == set(rows)
    for name, vectors in kept["emotion4"]["rows"].items():
        assert len(vectors) == 1 and len(vectors[0]) == len(task.y), name
        assert set(vectors[0]) <= set(range(len(task.label_names))), name
    # in place: on each fold's test windows the majority class predicts the fold's most frequent training class
    majority = np.array(kept["emotion4"]["rows"]["majority class"][0])
    for train, test in task.folds(2, 1, 0):  # the folds of seed 0 (exp.folds = 2, one repeat)
        assert (majority[test] == np.bincount(task.y[train]).argmax()).all()
    # the run records the experiment it ran (the overrides applied), in experiment.json and results.json
    exp = Experiment.from_dict(json.loads((out / "experiment.json").read_text()))
    assert (exp.pretrain.epochs, exp.seeds, exp.folds, exp.data.max_pretrain_windows) == (1, (0,), 2, 64)
    assert exp.pretrain.contrast.queue_size == 32 and exp.out == str(out)
    assert saved["experiment"] == exp.to_dict() and "provenance" in saved
    # the report's command line is the one that reproduces the run: the preset and its overrides
    assert command(exp) == " ".join(["python -m cagelib", *argv])
    assert f"Command: `{command(exp)}`" in report
    assert command(load("long", ["seeds=[0]"])) == "python -m cagelib demo --config long seeds=[0]"
    # the default pretraining step is the fast one, and the report says which step ran
    assert exp.pretrain.fast is not None and "the fast step" in report
    slow = load("demo", [*TINY, "pretrain.fast=none"])
    assert slow.pretrain.fast is None and command(slow).endswith("pretrain.fast=none")


def test_a_bad_override_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "pretrain.epoch=1", f"out={tmp_path / 'demo'}"])
    assert exit_.value.code == 2
    assert "did you mean 'pretrain.epochs'" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_an_output_folder_not_written_by_cagelib_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not written by cagelib"):
        prepare_output(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_the_table_shows_a_row_missing_on_one_task_as_a_dash():
    from cagelib.lab.comparison import comparison_table

    cell = {"top1": 50.0, "balanced": 40.0, "clip_top1": 30.0}
    report = {"seeds": {"0": {"tasks": {"emotion4": {"pretrained, linear": cell, "supervised (from scratch)": cell},
                                        "walkstyle7": {"pretrained, linear": cell}}}}}
    table = comparison_table(report)
    assert "| supervised (from scratch) | 50.0 | 40.0 | 30.0 | - | - | - |" in table


def test_the_paired_differences_pair_seeds_and_say_not_separable_within_the_noise():
    from cagelib.lab.comparison import differences_table

    def seed(pretrained, random, handcrafted):
        rows = {"pretrained, linear (z)": pretrained, "random init, linear (z)": random,
                "hand-crafted, logistic regression": handcrafted}
        return {"tasks": {"emotion4": {r: {"balanced": v} for r, v in rows.items()}}}

    report = {"seeds": {"0": seed(80, 70, 79), "1": seed(71, 61, 82), "2": seed(90, 80.5, 77)}}
    table = differences_table(report)
    assert "| pretrained, linear (z) | random init, linear (z) | +9.8 [" in table and "A > B | - |" in table
    assert "| pretrained, linear (z) | hand-crafted, logistic regression | +1.0 [" in table
    # k-NN, raw linear: rows absent; no predictions in this report: no bootstrap column's interval
    assert table.count("not separable") == 1 and table.count("| - | - |") == 3  # + STEP's row, absent here
