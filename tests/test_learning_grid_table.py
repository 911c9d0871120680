"""benchmarks/learning_grid.py's table: beside the probes' means, per cell, task and fair probe the paired
difference "pretrained - random init" with its clip bootstrap interval and verdict, from the window
predictions a cell keeps; "-" for a cell written without them. No cell is run (synthetic cell files)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLASSES, CLIPS_PER_CLASS, WINDOWS_PER_CLIP, WRONG_PER_CLASS = 4, 7, 3, 2


@pytest.fixture(scope="module")
def grid():
    spec = importlib.util.spec_from_file_location("learning_grid", ROOT / "benchmarks" / "learning_grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predictions() -> dict:
    """One task's kept predictions: pretrained right on every window (both probes); random init wrong on every
    window of ``WRONG_PER_CLASS`` clips per class with linear (z), and the same as pretrained with k-NN."""
    clips = np.repeat(np.arange(CLASSES * CLIPS_PER_CLASS), WINDOWS_PER_CLIP)
    labels = clips // CLIPS_PER_CLASS
    wrong = np.where(clips % CLIPS_PER_CLASS < WRONG_PER_CLASS, (labels + 1) % CLASSES, labels)
    rows = {"pretrained, linear (z)": [labels.tolist()], "pretrained, k-NN": [labels.tolist()],
            "random init, linear (z)": [wrong.tolist()], "random init, k-NN": [labels.tolist()]}
    return {"labels": labels.tolist(), "clips": clips.tolist(), "rows": rows}


def cell_result(method: str, views: str, kept: bool) -> dict:
    """A cell's JSON as ``run_cell`` writes it (fold means made up), with or without the window predictions."""
    health = {"retrieval_cartesian": 0.1, "spread_cartesian": 0.5, "knn_cartesian": 0.4}
    means = {f"{e}, {p}": {"top1": 50.0, "balanced": 50.0, "clip_top1": 50.0}
             for e in ("pretrained", "random init") for p in ("linear", "linear (z)", "k-NN")}
    result = {"tasks": {"emotion4": means, "style15": means}, "health": {"emotion4+style15": {"init": health,
                                                                                            "final": health}},
              "history": [{"loss": 3.0}, {"loss": 2.0}],
              "cell": {"method": method, "representation": "root_relative", "views": views, "seed": 0, "epochs": 2}}
    if kept:
        result["predictions"] = {"emotion4": predictions(), "style15": predictions()}
    return result


def table_rows(text: str) -> dict:
    """``{(method, views): {column: value}}`` of the Markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for line in lines[2:]:
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        out[(row["method"], row["views"])] = row
    return out


def test_the_table_gives_the_paired_difference_where_predictions_were_kept_and_a_dash_elsewhere(grid, tmp_path,
                                                                                                  monkeypatch):
    results = tmp_path / "learning_grid"
    results.mkdir()
    monkeypatch.setattr(grid, "RESULTS", results)
    for name, method, views, kept in (("new", "geclr", "body", True), ("old", "cage", "paper", False)):
        (results / f"{name}.json").write_text(json.dumps(cell_result(method, views, kept)))
    text = grid.write_table()
    assert (tmp_path / "learning_grid.md").read_text() == text
    rows = table_rows(text)
    column = "{} {} pretrained - random init bal. points [95 % interval] verdict"
    missed = 100.0 * WRONG_PER_CLASS / CLIPS_PER_CLASS  # balanced accuracy random init loses on linear (z)
    for task in ("emotion4", "style15"):
        new, old = rows[("geclr", "body")], rows[("cage", "paper")]
        assert new[column.format(task, "linear (z)")].startswith(f"{missed:+.1f} [+")
        assert new[column.format(task, "linear (z)")].endswith("] A > B")
        assert new[column.format(task, "k-NN")] == "+0.0 [+0.0, +0.0] not separable"
        assert old[column.format(task, "linear (z)")] == old[column.format(task, "k-NN")] == "-"
        assert new[f"{task} pretrained linear (z) bal. %"] == "50.0"  # the means as before
    c = grid.paired_difference([cell_result("geclr", "body", True)], "emotion4", "pretrained, linear (z)",
                               "random init, linear (z)")
    assert c.difference == pytest.approx(missed) and 0 < c.low < c.high and c.n == 1
    two_seeds = [cell_result("geclr", "body", True), cell_result("geclr", "body", False)]  # one seed kept none
    assert grid.paired_difference(two_seeds, "emotion4", "pretrained, k-NN", "random init, k-NN") is None
    both = [cell_result("geclr", "body", True)] * 2
    assert grid.paired_difference(both, "emotion4", "pretrained, linear (z)", "random init, linear (z)").n == 2


def test_a_cell_keeps_its_window_predictions_one_line_per_vector(grid, tmp_path, monkeypatch):
    """``run_cell`` writes ``run_seed``'s predictions into the cell's JSON (here a stand-in ``run_seed``)."""
    monkeypatch.setattr(grid, "RESULTS", tmp_path / "cells")
    monkeypatch.setattr(grid, "RUNS", tmp_path / "runs")
    (tmp_path / "cells").mkdir()
    made = cell_result("geclr", "body", True)

    def run_seed(exp, seed):
        metrics = Path(exp.out) / f"seed{seed}" / "pretrain_emotion4+style15" / "metrics.jsonl"
        metrics.parent.mkdir(parents=True)
        metrics.write_text("".join(json.dumps(h) + "\n" for h in made["history"]))
        return {k: v for k, v in made.items() if k not in ("history", "cell")}

    monkeypatch.setattr(grid, "run_seed", run_seed)
    name = grid.run_cell(("geclr", "root_relative", "body", 0, 2))
    text = (tmp_path / "cells" / f"{name}.json").read_text()
    saved = json.loads(text)
    assert saved["predictions"] == made["predictions"] and saved["history"] == made["history"]
    vector = json.dumps(made["predictions"]["emotion4"]["labels"])
    assert f'"labels": {vector}' in text  # a vector on one line, not one number per line
    assert len(text.splitlines()) < 200
