"""The peer grid (cagelib.lab.peers) and the stream encoder it probes (cagelib.evaluate.features.StreamEncoder)."""
from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch

from cagelib.coordinates import spherical_coordinates
from cagelib.evaluate.features import StreamEncoder
from cagelib.lab import peers
from cagelib.lab.peers import CONTROLS, PROBES, SUPERVISED, PeerGridConfig, cell_path, cells, run_grid
from cagelib.methods.cage import CAGE, ContrastConfig
from cagelib.methods.encoders import AGCN, AGCNConfig


def test_stream_encoder_feeds_the_stream_its_own_input_and_copies_only_the_encoder():
    torch.manual_seed(0)
    model = CAGE(ContrastConfig.preset("c3l", queue_size=8), lambda: AGCN(AGCNConfig.small())).eval()
    x = torch.randn(3, 16, 16, 3)
    spherical = StreamEncoder(model, "spherical").eval()
    assert torch.allclose(spherical(x), model.encoders()["spherical"](spherical_coordinates(x)))
    assert StreamEncoder(model).stream == "cartesian"  # the first stream by default
    clone = copy.deepcopy(spherical)
    assert clone.encoder is not spherical.encoder and not clone.training
    assert sum(p.numel() for p in clone.parameters()) == sum(p.numel() for p in model.encoders()["spherical"].parameters())
    with torch.no_grad():
        next(clone.parameters()).add_(1.0)  # training the copy leaves the method alone
    assert torch.allclose(spherical(x), model.encoders()["spherical"](spherical_coordinates(x)))
    with pytest.raises(ValueError, match="streams"):
        StreamEncoder(model, "bone")


def test_a_tiny_grid_writes_cells_and_one_table_and_continues(tmp_path):
    config = PeerGridConfig(methods=("geclr",), seeds=(0,), tasks=("emotion4",), epochs=1, pretrain_windows=64, folds=2,
                            finetune_epochs=1, supervised_epochs=1, workers=1, results=str(tmp_path / "results"),
                            runs=str(tmp_path / "runs"))
    assert cells(config) == [(CONTROLS, 0), ("geclr", 0), (SUPERVISED, 0)]
    assert cells(replace(config, supervised_epochs=0)) == [(CONTROLS, 0), ("geclr", 0)]
    text = run_grid(config, log=lambda *_: None)
    for method in (CONTROLS, "geclr", SUPERVISED):
        cell = json.loads(cell_path(config, method, 0).read_text())
        assert cell["key"] == config.cell_key(method)
        for row in cell["rows"].values():
            for task in config.tasks:
                assert set(row[task]) == set(PROBES)
                assert all(0.0 <= v["balanced"] <= 100.0 for v in row[task].values())
    geclr = json.loads(cell_path(config, "geclr", 0).read_text())
    assert geclr["steps"] == 2 and geclr["stream"] == "cartesian" and geclr["health"]["final"]["epoch"] == 1
    controls = json.loads(cell_path(config, CONTROLS, 0).read_text())["rows"]
    assert controls["majority class"]["emotion4"]["k-NN"]["balanced"] == 25.0  # 4 classes: 1 / 4 per class recall
    for row in ("| geclr |", "| random init (A-GCN) |", "| hand-crafted, logistic regression |", "| majority class |"):
        assert row in text
    assert text.index("| geclr |") < text.index("| random init (A-GCN) |")  # methods first, then the controls
    supervised = json.loads(cell_path(config, SUPERVISED, 0).read_text())
    assert set(supervised["rows"]) == {"supervised (from scratch)"} and "| supervised (from scratch) |" in text
    assert supervised["key"]["supervised"]["epochs"] == 1  # its recipe, epochs overridden
    result = supervised["rows"]["supervised (from scratch)"]["emotion4"]
    assert len({v["balanced"] for v in result.values()}) == 1  # one result, repeated in every probe column
    assert (tmp_path / "results" / "table.md").read_text() == text
    # a second run finds every cell done; another setting makes them stale
    messages = []
    run_grid(config, log=messages.append)
    assert messages[0].startswith("peers: 3 cells done, 0 to run")
    assert not peers._done(replace(config, finetune_epochs=2), "geclr", 0)
    assert not peers._done(replace(config, epochs=2), "geclr", 0)
    assert not peers._done(replace(config, supervised_epochs=2), SUPERVISED, 0)
    assert peers._done(replace(config, supervised_epochs=2), "geclr", 0)  # the other cells do not depend on it


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown methods"):
        PeerGridConfig(methods=("moco",))
    with pytest.raises(ValueError, match="folds"):
        PeerGridConfig(folds=1)


def test_difference_table_pairs_seeds_and_gives_verdicts():
    from cagelib.lab.peers import difference_table

    def cell(method, seed, rows):
        return {"method": method, "seed": seed, "rows": {
            row: {"emotion4": {probe: {"balanced": value + 0.3 * seed} for probe in ("linear (z)", "k-NN")}}
            for row, value in rows.items()}}

    loaded = [cell("controls", s, {"random init (A-GCN)": 50.0 + 7 * s}) for s in range(3)]  # a large seed spread
    loaded += [cell("geclr", s, {"geclr": 60.0 + 7 * s + (0.5 if s == 1 else 0)}) for s in range(3)]  # +10 paired
    loaded += [cell("cage", s, {"cage": 60.0 + 7 * s + (-3, 4, -1)[s]}) for s in range(3)]  # +10 +- noise vs control
    table = difference_table(loaded, ("emotion4",), "balanced")
    rows = {tuple(line.split(" | ")[:2]): line for line in table.splitlines()[2:]}
    assert "A > B" in rows[("| geclr", "random init (A-GCN)")]  # paired: the shared seed spread cancels
    assert "not separable" in rows[("| cage", "geclr")]  # 0 +- noise
    assert ("| geclr", "geclr") not in rows


def test_run_jobs_reports_each_result_in_job_order_in_workers_and_inline():
    import math

    from cagelib.lab.jobs import run_jobs

    for workers in (1, 2):
        seen = []
        assert run_jobs(math.factorial, [3, 4, 5], workers, done=seen.append) == [6, 24, 120]
        assert seen == [6, 24, 120]
