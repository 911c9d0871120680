"""Where a run came from (cagelib.provenance): the record's fields and types, nulls instead of errors outside a git
checkout (or without git), and the provenance.json that every start of a pretraining run writes."""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from test_pretrain_loop import gaits, tiny_config

import cagelib
from cagelib import provenance as P
from cagelib.pretrain.loop import pretrain

ROOT = Path(__file__).resolve().parents[1]


def test_the_record_has_every_field_with_its_type():
    record = P.provenance()
    assert set(record) == {"command", "git", "versions", "device", "platform", "time_utc"}
    assert isinstance(record["command"]["argv"], list) and all(isinstance(a, str) for a in record["command"]["argv"])
    assert isinstance(record["command"]["executable"], str)
    git = record["git"]
    assert git["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", git["commit"])
    assert (git["dirty"] is None) if git["commit"] is None else isinstance(git["dirty"], bool)
    versions = record["versions"]
    assert versions["cagelib"] == cagelib.__version__
    for name in ("python", "torch", "numpy"):
        assert isinstance(versions[name], str) and versions[name]
    assert versions["scikit-learn"] is None or isinstance(versions["scikit-learn"], str)
    device = record["device"]
    assert device["cpu"] is None or isinstance(device["cpu"], str)
    for flag in ("amx", "avx512_bf16"):
        assert device[flag] is None or isinstance(device[flag], bool)
    assert isinstance(device["torch_threads"], int) and device["torch_threads"] >= 1
    assert device["cuda"] is None or isinstance(device["cuda"], str)
    assert isinstance(record["platform"], str) and record["platform"]
    assert record["time_utc"].endswith("+00:00")
    assert json.loads(json.dumps(record)) == record  # plain JSON


def test_outside_a_git_checkout_the_commit_is_null(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "cagelib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git never looks above tmp_path
    monkeypatch.setattr(P, "SOURCE", package)
    assert P.provenance()["git"] == {"commit": None, "dirty": None}
    monkeypatch.setattr(P, "SOURCE", tmp_path / "gone" / "cagelib")  # a folder that does not exist
    assert P.git_state() == {"commit": None, "dirty": None}


def test_a_package_untracked_in_the_checkout_around_it_is_not_given_its_commit(monkeypatch):
    """E.g. an install in a virtual environment inside some repository: not that repository's code."""
    monkeypatch.setattr(P, "SOURCE", ROOT / "tests" / "not_a_tracked_package")
    assert P.git_state() == {"commit": None, "dirty": None}


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file or directory: 'git'"),
                                   subprocess.TimeoutExpired(["git"], P.GIT_TIMEOUT)])
def test_no_git_or_a_hanging_git_gives_nulls(monkeypatch, error):
    def run(*args, **kwargs):
        raise error

    monkeypatch.setattr(P.subprocess, "run", run)
    assert P.git_state() == {"commit": None, "dirty": None}


def test_without_proc_cpuinfo_the_flags_are_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "CPUINFO", tmp_path / "cpuinfo")
    device = P.device_info()
    assert device["amx"] is None and device["avx512_bf16"] is None
    assert device["cpu"] is None or isinstance(device["cpu"], str)
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx512_bf16 amx_tile\n")
    device = P.device_info()
    assert (device["cpu"], device["amx"], device["avx512_bf16"]) == ("Some CPU", True, True)


def test_every_start_of_a_run_is_recorded_in_provenance_json(tmp_path):
    config = tiny_config(tmp_path, "geclr", epochs=1, health=None)
    pretrain(config, gaits())
    path = Path(config.run_dir) / "provenance.json"
    runs = json.loads(path.read_text())["runs"]
    assert [(r["resumed"], r["start_epoch"], r["world_size"]) for r in runs] == [(False, 0, 1)]
    assert runs[0]["versions"]["torch"] and runs[0]["git"].keys() == {"commit", "dirty"}
    pretrain(replace(config, epochs=2), gaits(), resume=True)
    pretrain(replace(config, epochs=2), gaits(), resume=True)  # nothing left to train: still a start
    later = json.loads(path.read_text())["runs"]
    assert later[0] == runs[0]  # the earlier record is kept as it was
    assert [(r["resumed"], r["start_epoch"]) for r in later] == [(False, 0), (True, 1), (True, 2)]
