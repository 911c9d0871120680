"""The peer grid (cagelib.lab.peers, the preset `peers`) and the stream encoder it probes
(cagelib.evaluate.features.StreamEncoder)."""
from __future__ import annotations

import copy
import json
import signal

import pytest
import torch

from cagelib import cli
from cagelib.coordinates import spherical_coordinates
from cagelib.errors import ParameterError
from cagelib.evaluate.features import StreamEncoder
from cagelib.evaluate.protocols import EvalConfig
from cagelib.experiment import Experiment, load
from cagelib.lab import peers
from cagelib.lab.peers import CONTROLS, PROBES, SUPERVISED, cell_key, cell_path, cells, done, run_grid
from cagelib.lab.workbench import repo_root
from cagelib.methods.cage import CAGE, ContrastConfig
from cagelib.methods.encoders import AGCN, AGCNConfig

# what the old test shrank (PeerGridConfig(seeds=(0,), tasks=("emotion4",), epochs=1, pretrain_windows=64,
# folds=2, finetune_epochs=1, supervised_epochs=1, workers=1)), as overrides of the peers preset
TINY = ["seeds=[0]", 'data.tasks=["emotion4"]', 'supervised_tasks=["emotion4"]', "pretrain.epochs=1",
        "data.max_pretrain_windows=64", "folds=2", "finetune.epochs=1", "supervised.epochs=1", "workers=1"]


def tiny_grid(tmp_path, *extra) -> Experiment:
    """The peers preset at the tiny size, out and runs under ``tmp_path``, its one variant GE-CLR (as
    ``--only geclr`` makes it)."""
    exp = load("peers", [*TINY, f"out={tmp_path / 'results'}", f"runs={tmp_path / 'runs'}", *extra])
    return Experiment.from_dict({**exp.to_dict(), "variants": {"geclr": exp.variants["geclr"]}})


@pytest.fixture(autouse=True)
def _sigterm_restored():
    """``cli.main`` installs its SIGTERM handler in the main thread: give pytest its own back."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


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


def test_the_committed_cells_are_done_under_the_peers_preset(monkeypatch):
    """The cell files in benchmarks/results/peers/cells/ were written before the experiment tree (their keys
    hold ``finetune_epochs`` and a ``SupervisedConfig``): ``upgraded_key`` must read them as cells of today's
    ``peers`` preset, or the committed results would silently stop counting (and be rerun)."""
    monkeypatch.chdir(repo_root())
    exp = load("peers")
    grid = cells(exp)
    assert len(grid) == 3 * (len(exp.variants) + 2)  # every method, the controls and the supervised cell, 3 seeds
    assert all(cell_path(exp, name, seed).is_file() for name, seed in grid)
    stale = [f"{name}-s{seed}" for name, seed in grid if not done(exp, name, seed)]
    assert stale == []
    assert len(peers.load_cells(exp)) == len(grid)


def test_the_grid_s_recipes_are_the_ones_its_cells_were_run_with():
    """The supervised reference trains with its own recipe (``EvalConfig.paper("supervised")``: Adam lr 1e-3,
    weight decay 1e-4, 60 epochs), the finetune probe with the preset's short recipe on top of the paper's."""
    exp = load("peers")
    assert exp.supervised == EvalConfig.paper("supervised", device="cpu")
    assert exp.finetune == EvalConfig.paper("finetune", optimizer="adam", lr=1e-3, epochs=5, milestones=(),
                                            device="cpu")
    assert exp.linear == EvalConfig.paper("linear", device="cpu")


def test_a_tiny_grid_writes_cells_and_one_table_and_continues(tmp_path, capsys):
    exp = tiny_grid(tmp_path)
    assert cells(exp) == [(CONTROLS, 0), ("geclr", 0), (SUPERVISED, 0)]
    assert cells(tiny_grid(tmp_path, "supervised_tasks=[]")) == [(CONTROLS, 0), ("geclr", 0)]
    text = run_grid(exp, log=lambda *_: None)
    for method in (CONTROLS, "geclr", SUPERVISED):
        cell = json.loads(cell_path(exp, method, 0).read_text())
        assert cell["key"] == cell_key(exp, method)
        for row in cell["rows"].values():
            for task in exp.data.tasks:
                assert set(row[task]) == set(PROBES)
                assert all(0.0 <= v["balanced"] <= 100.0 for v in row[task].values())
    geclr = json.loads(cell_path(exp, "geclr", 0).read_text())
    assert geclr["steps"] == 2 and geclr["stream"] == "cartesian" and geclr["health"]["final"]["epoch"] == 1
    assert not (tmp_path / "results" / "geclr-s0").exists() and (tmp_path / "runs" / "geclr-s0").is_dir()
    controls = json.loads(cell_path(exp, CONTROLS, 0).read_text())["rows"]
    assert controls["majority class"]["emotion4"]["k-NN"]["balanced"] == 25.0  # 4 classes: 1 / 4 per class recall
    for row in ("| geclr |", "| random init (A-GCN) |", "| hand-crafted, logistic regression |", "| majority class |"):
        assert row in text
    assert text.index("| geclr |") < text.index("| random init (A-GCN) |")  # methods first, then the controls
    supervised = json.loads(cell_path(exp, SUPERVISED, 0).read_text())
    assert set(supervised["rows"]) == {"supervised (from scratch)"} and "| supervised (from scratch) |" in text
    assert supervised["key"]["supervised"]["epochs"] == 1  # its recipe, epochs overridden
    result = supervised["rows"]["supervised (from scratch)"]["emotion4"]
    assert len({v["balanced"] for v in result.values()}) == 1  # one result, repeated in every probe column
    assert (tmp_path / "results" / "table.md").read_text() == text
    # a second run finds every cell done; another setting makes them stale
    messages = []
    run_grid(exp, log=messages.append)
    assert messages[0].startswith("peers: 3 cells done, 0 to run")
    assert not done(tiny_grid(tmp_path, "finetune.epochs=2"), "geclr", 0)
    assert not done(tiny_grid(tmp_path, "pretrain.epochs=2"), "geclr", 0)
    assert not done(tiny_grid(tmp_path, "supervised.epochs=2"), SUPERVISED, 0)
    assert done(tiny_grid(tmp_path, "supervised.epochs=2"), "geclr", 0)  # the other cells do not depend on it
    # the command line sees the same cells (`--only`, overrides), done or not
    argv = ["peers", *TINY, f"out={tmp_path / 'results'}", f"runs={tmp_path / 'runs'}"]
    capsys.readouterr()
    assert cli.main([*argv, "--only", "geclr", "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["controls, seed 0: done", "geclr, seed 0: done",
                                                    "supervised, seed 0: done"]
    assert cli.main([*argv, "pretrain.epochs=2", "--only", "geclr", "--list"]) == 0
    assert "geclr, seed 0: to run" in capsys.readouterr().out.splitlines()
    assert peers.command_line(exp).startswith("python -m cagelib peers seeds=[0] ")


def test_bad_settings_are_refused(tmp_path, capsys):
    with pytest.raises(ParameterError, match="unknown method 'moco'"):
        load("peers", ["pretrain.contrast.method=moco"])
    with pytest.raises(ParameterError, match="folds"):
        load("peers", ["folds=1"])
    with pytest.raises(SystemExit) as exit_:  # a variant the grid does not have
        cli.main(["peers", "--only", "moco", "--list"])
    assert exit_.value.code == 2 and "--only: ['moco'] are not variants of 'peers'" in capsys.readouterr().err
    # a variant of an unknown method is refused before any cell runs or anything is written (the old
    # PeerGridConfig(methods=("moco",)) was refused on construction)
    exp = tiny_grid(tmp_path)
    bad = Experiment.from_dict({**exp.to_dict(), "variants": {"moco": {"pretrain": {"contrast": {"method": "moco"}}}}})
    with pytest.raises(ParameterError, match="unknown method 'moco'"):
        run_grid(bad, log=lambda *_: None)
    assert not cell_path(bad, CONTROLS, 0).exists()  # no cell ran: the controls come first in the grid
    assert not (tmp_path / "runs").exists()


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


def test_the_difference_table_bootstraps_clips_where_cells_kept_their_predictions():
    """Two seeds of a method that is right on every window and a control right on half the clips: the t column
    and the clips column both separate; cells without predictions (the committed ones) show no clips column."""
    from cagelib.lab.peers import difference_table

    labels = [c % 2 for c in range(20) for _ in range(3)]  # 20 clips of 3 windows, 2 classes
    clips = [c for c in range(20) for _ in range(3)]
    control = [y if c < 10 else 1 - y for y, c in zip(labels, clips)]  # wrong on the last 10 clips

    def cell(method, row, predicted, seed, balanced):
        probes = {p: {"top1": balanced, "balanced": balanced, "clip_top1": balanced} for p in ("linear (z)", "k-NN")}
        return {"method": method, "seed": seed, "rows": {row: {"emotion4": probes}},
                "predictions": {row: {"emotion4": {p: [predicted] for p in probes}}},
                "windows": {"emotion4": {"labels": labels, "clips": clips}}}

    loaded = [cell("geclr", "geclr", labels, s, 100.0 - s) for s in (0, 1)] + [
        cell("controls", "random init (A-GCN)", control, s, 50.0 + s) for s in (0, 1)]
    table = difference_table(loaded, ("emotion4",), "balanced")
    row = next(line for line in table.splitlines() if line.startswith("| geclr | random init"))
    assert row.count("A > B") == 4 and "+50.0 [" in row  # two probes x (t, clips)
    for c in loaded:
        del c["predictions"], c["windows"]
    assert "(clips)" not in difference_table(loaded, ("emotion4",), "balanced")


def test_stream_each_probes_every_stream_and_their_concatenation(tmp_path):
    exp = load("peers", [*TINY, f"out={tmp_path / 'results'}", f"runs={tmp_path / 'runs'}", "stream=each",
                         'protocols=["knn"]', "supervised_tasks=[]"])
    exp = Experiment.from_dict({**exp.to_dict(), "variants": {"c3l": {"pretrain": {"contrast": {"method": "c3l"}}}}})
    cell = peers.run_grid_cell(exp, "c3l", 0)
    assert set(cell["rows"]) == {"c3l", "c3l (spherical)", "c3l (both)"}  # the first stream keeps the method's name
    assert cell["stream"] == "cartesian" and cell["key"]["stream"] == "each"
    assert set(cell["predictions"]) == set(cell["rows"])
    assert "stream" not in cell_key(tiny_grid(tmp_path), "geclr")  # other reads keep their keys
    with pytest.raises(ValueError, match="stream must be one of"):
        load("peers", ["stream=all"])
