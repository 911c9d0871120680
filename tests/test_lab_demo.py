"""The main job (`make demo`) end to end at a tiny size: files written, numbers well-formed."""
from __future__ import annotations

import json

from cagelib.lab.demo import DemoConfig, run
from cagelib.data.tasks import TaskConfig, emotion_task


def test_emotion_task_keeps_task_clips_out_of_the_pretraining_corpus():
    task = emotion_task(config=TaskConfig(max_pretrain_windows=None))
    assert task.summary()["per_class"]["happy"]["clips"] == 7
    assert len(task.clip_names) == 28
    # A task window must not reappear in the corpus (windows are cut from disjoint clip sets).
    corpus = {w.tobytes() for w in task.pretrain_x[:, :4]}
    assert not any(w.tobytes() in corpus for w in task.x[:, :4])
    for train, test in task.folds(4, 2):
        assert not set(task.groups[train]) & set(task.groups[test])


def test_demo_runs_and_writes_its_report(tmp_path):
    config = DemoConfig(method="cage", epochs=1, queue_size=32, folds=2, repeats=1, out=str(tmp_path / "demo"),
                        task=TaskConfig(max_pretrain_windows=64, stride=24))
    report = run(config)
    out = tmp_path / "demo"
    for name in ("summary.json", "results.json", "report.md", "skeleton.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["results"]) == {"pretrained / cartesian", "random init / cartesian",
                                     "pretrained / spherical", "random init / spherical", "majority class / -"}
    for res in saved["results"].values():
        assert res["linear"]["n"] == 2 and 0.0 <= res["linear"]["top1_mean"] <= 100.0
        assert 0.0 <= res["linear"]["balanced_mean"] <= 100.0
    # the majority baseline's balanced accuracy is exactly chance: one class right, three wrong
    assert saved["results"]["majority class / -"]["linear"]["balanced_mean"] == 25.0
    assert report["final_pretrain_metrics"]["epoch"] == 1
    assert "| pretrained | cartesian |" in (out / "report.md").read_text()
