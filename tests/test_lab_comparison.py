"""cagelib.lab.comparison and the runner's window predictions: a seed's predictions assembled from its folds,
kept beside its fold means, and the differences table's two intervals (over seeds, and over clips and seeds)."""
from __future__ import annotations

import numpy as np
import pytest

from cagelib.data.splits import repeated_grouped_kfold
from cagelib.evaluate.metrics import EvalResult, prediction_result
from cagelib.lab import comparison
from cagelib.lab.comparison import PAIRED, differences_table, run_seed
from cagelib.lab.runner import HANDCRAFTED, MAJORITY, window_labels, window_predictions

NAMES = ("a", "b", "c")


def task_windows(clips_per_class=6, windows=(2, 5, 3)):
    """``(labels, clips)`` of ``3 * clips_per_class`` clips, clip c of class c % 3, of cycled lengths."""
    n_clips = 3 * clips_per_class
    clips = np.repeat(np.arange(n_clips), np.resize(windows, n_clips))
    return clips % 3, clips


def test_window_predictions_put_every_fold_back_in_place_one_vector_per_repeat():
    labels, clips = task_windows()
    n = len(labels)
    folds = repeated_grouped_kfold(clips, labels, n_splits=3, n_repeats=2, seed=4)
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(2, n))  # what each repeat "predicts" for each window
    results = [prediction_result("linear", labels[test], truth[i // 3][test], NAMES, clips[test])
               for i, (_, test) in enumerate(folds)]
    vectors = window_predictions(results, folds, n)
    assert np.array_equal(np.array(vectors), truth) and all(isinstance(v, int) for v in vectors[0])
    # the pooled accuracy of a repeat is its folds' accuracies weighted by their sizes
    sizes = np.array([len(test) for _, test in folds[:3]])
    pooled = 100 * np.mean(np.array(vectors[0]) == labels)
    assert pooled == pytest.approx(np.sum([r.top1 for r in results[:3]] * sizes) / n)


def test_window_predictions_refuse_gaps_and_results_without_predictions():
    labels, clips = task_windows()
    folds = repeated_grouped_kfold(clips, labels, n_splits=3, n_repeats=1, seed=0)
    results = [prediction_result("linear", labels[test], labels[test], NAMES) for _, test in folds]
    with pytest.raises(ValueError, match="repeat 0 leaves"):
        window_predictions(results[:2], folds[:2], len(labels))
    saved = [EvalResult.from_dict(r.to_dict()) for r in results]  # saved without predictions
    with pytest.raises(ValueError, match="holds no predictions"):
        window_predictions(saved, folds, len(labels))


def seed_result(means: dict, predictions: dict | None, labels, clips) -> dict:
    """A seed of results.json: fold means ``{row: balanced}`` and (optionally) ``{row: window predictions}``."""
    out = {"tasks": {"emotion4": {row: {"top1": v, "balanced": v, "clip_top1": v} for row, v in means.items()}}}
    if predictions is not None:
        out["predictions"] = {"emotion4": {"labels": labels.tolist(), "clips": clips.tolist(),
                                           "rows": {row: [np.asarray(p).tolist()] for row, p in predictions.items()}}}
    return out


def cells(table: str, a: str, b: str) -> list[str]:
    """The cells after A and B of the table's row (A, B)."""
    line = next(row for row in table.splitlines() if row.startswith(f"| {a} | {b} |"))
    return [c.strip() for c in line.strip().strip("|").split(" | ")][2:]


def wrong_on(labels, clips, bad):
    """Predictions right on every window but those of the clips ``bad`` (the next class there)."""
    return np.where(np.isin(clips, bad), (labels + 1) % 3, labels)


def test_the_differences_table_gives_both_intervals_and_can_disagree():
    labels, clips = task_windows(clips_per_class=10, windows=(4,))
    z, zr = PAIRED[0]  # pretrained, linear (z) vs random init, linear (z)
    rng = np.random.default_rng(1)
    seeds = {}
    for s, (a, b) in enumerate([(80, 70), (71, 61), (90, 80.5)]):
        # the seeds' fold means separate z from its control over seeds; their predictions differ on one clip only
        # (clip 0, the same in every seed), and the hand-crafted row is wrong on a third of the clips
        hand = wrong_on(labels, clips, rng.choice(30, 10, replace=False))
        seeds[str(s)] = seed_result({z: a, zr: b, HANDCRAFTED: 60.0 + s},
                                    {z: labels, zr: wrong_on(labels, clips, [0]), HANDCRAFTED: hand}, labels, clips)
    table = differences_table({"seeds": seeds})
    header = table.splitlines()[0]
    assert "emotion4 A - B over seeds (t)" in header and "emotion4 A - B clips and seeds (bootstrap)" in header
    t_cell, boot_cell = cells(table, z, zr)
    assert t_cell.startswith("+9.8 [") and t_cell.endswith("A > B")
    assert boot_cell.startswith("+3.3 [+0.0, ") and boot_cell.endswith("not separable")  # one clip of 10: +10 / 3
    assert cells(table, z, HANDCRAFTED)[1].endswith("A > B")  # right on every window vs wrong on 10 of 30 clips
    # pairs whose rows are absent (k-NN, raw linear): a dash in both columns
    assert sum(row.endswith("| - | - |") for row in table.splitlines()) == 3  # + STEP's row, absent here


def test_a_results_file_without_predictions_still_has_its_t_interval():
    labels, clips = task_windows()
    z, zr = PAIRED[0]
    old = {"seeds": {str(s): seed_result({z: a, zr: b}, None, labels, clips)
                     for s, (a, b) in enumerate([(80, 70), (71, 61), (90, 80.5)])}}
    t_cell, boot_cell = cells(differences_table(old), z, zr)
    assert t_cell.startswith("+9.8 [") and t_cell.endswith("A > B") and boot_cell == "-"
    one = {"seeds": {"0": seed_result({z: 80, zr: 70}, {z: labels, zr: labels}, labels, clips)}}
    assert f"| {z} | {zr} | - | - |" in differences_table(one)  # one seed: neither interval


def test_run_seed_keeps_the_predictions_beside_the_fold_means(monkeypatch):
    labels, clips = task_windows()
    means = {"top1": 1.0, "balanced": 2.0, "clip_top1": 3.0}
    vector = [labels.tolist()]
    majority = [[0] * len(labels)]

    def fake_cell(exp, seed, part, token=None):
        probes = {"linear": means, "linear (z)": means, "k-NN": means}
        return {"rows": {"pretrained": {"emotion4": probes}, "random init": {"emotion4": probes},
                         MAJORITY: {"emotion4": probes}},
                "predictions": {"pretrained": {"emotion4": {p: vector for p in probes}},
                                "random init": {"emotion4": {p: majority for p in probes}},
                                MAJORITY: {"emotion4": {p: majority for p in probes}}},
                "windows": {"emotion4": window_labels(type("T", (), {"y": labels, "groups": clips}))},
                "health": {}, "pretrain_seconds": {}, "seconds": 1.0}

    monkeypatch.setattr(comparison, "run_cell", fake_cell)
    from cagelib.experiment import load
    result = run_seed(load("demo"), 0)
    rows = set(result["tasks"]["emotion4"])
    kept = result["predictions"]["emotion4"]
    assert rows == set(kept["rows"]) and MAJORITY in rows and "pretrained, linear (z)" in rows
    assert kept["labels"] == labels.tolist() and kept["clips"] == clips.tolist()
    assert kept["rows"]["pretrained, k-NN"] == vector and kept["rows"][MAJORITY] == majority
    assert result["tasks"]["emotion4"]["pretrained, linear"] == means  # the table's layout as before
