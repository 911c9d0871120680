"""One loop for one process and DDP: over two gloo processes (CPU), ``pretrain_distributed`` runs
``cagelib.pretrain.loop.pretrain``; rank 0 alone holds the run folder's lock and writes the folder (one
TensorBoard event file, provenance.json), a resumed run equals an uninterrupted one, a failing fresh run leaves
no folder, a busy folder stops every rank, and ``pretrain`` alone inside a process group is refused."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from cagelib.data.synthetic import synthetic_gaits
from cagelib.methods.cage import ContrastConfig
from cagelib.methods.encoders import AGCNConfig
from cagelib.pretrain import distributed as D
from cagelib.pretrain.logger import TENSORBOARD, tensorboard_available
from cagelib.pretrain.loop import PretrainConfig, pretrain
from cagelib.pretrain.run_lock import RUN_LOCK, RunLock

WORLD = 2


def _config(run_dir, epochs: int = 2, **overrides) -> PretrainConfig:
    return PretrainConfig(epochs=epochs, batch_size=8, lr=0.01, milestones=(1,), model=AGCNConfig.small(),
                          contrast=ContrastConfig.preset("csmb", queue_size=24), run_dir=str(run_dir),
                          progress=False, device="cpu", **overrides)


def _losses(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


def _worker(out_dir: str) -> None:
    """Runs in each spawned process (a gloo group of WORLD processes)."""
    torch.set_num_threads(1)
    out, rank, report = Path(out_dir), dist.get_rank(), {"pid": os.getpid()}
    data = synthetic_gaits(16, 16, seed=0)
    holders = []  # who holds the run folder's lock, seen by this rank after every epoch

    def callback(epoch, metrics):
        holders.append(json.loads((out / "run" / RUN_LOCK).read_text())["pid"])

    D.pretrain_distributed(_config(out / "run"), data, callback=callback)
    report["holders"] = holders
    report["resumed"] = _losses(D.pretrain_distributed(_config(out / "run", epochs=3), data, resume=True).history)
    report["full"] = _losses(D.pretrain_distributed(_config(out / "full", epochs=3), data).history)

    def fail(epoch, metrics):
        raise KeyboardInterrupt

    try:
        D.pretrain_distributed(_config(out / "failed", checkpoint_every=2), data, callback=fail)
    except KeyboardInterrupt:
        report["failed"] = "KeyboardInterrupt"
    try:
        D.pretrain_distributed(_config(out / "busy"), data)  # the parent holds its lock
    except Exception as err:  # noqa: BLE001 (reported to the test)
        report["busy"] = [type(err).__name__, str(err)]
    try:
        pretrain(_config(out / "alone"), data)
    except RuntimeError as err:
        report["alone"] = str(err)
    dist.barrier()
    (out / f"rank{rank}.json").write_text(json.dumps(report))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_loop")
    with RunLock(out / "busy"):  # the forked ranks inherit it: rank 0 finds the folder in use
        D.spawn(_worker, WORLD, str(out), start_method="fork")  # conftest keeps the parent single-threaded
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)], out


def test_rank_0_holds_the_lock_and_writes_the_run_folder(ranks):
    reports, out = ranks
    for report in reports:  # every rank saw rank 0's lock during the run
        assert report["holders"] == [reports[0]["pid"]] * 2
    run = out / "run"
    assert not (run / RUN_LOCK).exists()  # released at the end
    assert {"checkpoint.pt", "config.json", "metrics.jsonl", "distributed.json", "provenance.json"} <= {
        p.name for p in run.iterdir()}
    assert not (run / "health_init.json").exists()  # a run over processes has no health monitor
    records = json.loads((run / "provenance.json").read_text())["runs"]
    assert [(r["world_size"], r["resumed"], r["start_epoch"]) for r in records] == [(2, False, 0), (2, True, 2)]
    if tensorboard_available():  # one writer: rank 0's event files only
        pids = {p.name.split(".")[-2] for p in (run / TENSORBOARD).glob("events.out.tfevents.*")}
        assert pids == {str(reports[0]["pid"])}


def test_a_resumed_run_over_processes_equals_the_uninterrupted_one(ranks):
    reports, out = ranks
    for report in reports:
        assert report["resumed"] == report["full"] and [m["epoch"] for m in report["full"]] == [1, 2, 3]
    lines = (out / "run" / "metrics.jsonl").read_text().splitlines()
    assert _losses([json.loads(line) for line in lines]) == reports[0]["resumed"]


def test_a_failing_fresh_run_over_processes_leaves_no_folder(ranks):
    reports, out = ranks
    assert [r["failed"] for r in reports] == ["KeyboardInterrupt"] * WORLD
    assert not (out / "failed").exists()


def test_a_busy_run_folder_stops_every_rank(ranks):
    reports, out = ranks
    assert reports[0]["busy"][0] == "RunFolderBusyError"
    assert "in use by another pretraining process" in reports[0]["busy"][1]
    assert reports[1]["busy"][0] == "RuntimeError"
    assert "rank 0 could not lock the run folder: RunFolderBusyError" in reports[1]["busy"][1]
    assert list((out / "busy").iterdir()) == []  # nothing written (the holder has released its lock since)


def test_pretrain_alone_inside_a_process_group_is_refused(ranks):
    reports, out = ranks
    for report in reports:
        assert "use cagelib.pretrain.distributed.pretrain_distributed" in report["alone"]
    assert not (out / "alone").exists()
