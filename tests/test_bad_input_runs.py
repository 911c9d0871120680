"""Bad input from the hostile review, part 2: processes, files and run folders that fail cleanly.

Two writers on one run folder (the run lock), a full disk during a checkpoint write, the demo's parent
killed by SIGKILL / SIGINT / SIGTERM (its seed workers die too, and stale workers never write into a
rerun's folder), a refused run leaving no half-made folder, ``--device cuda`` without CUDA, the notebooks
of an installed package (tests/test_packaging.py), and the demo's and reproduce's command lines.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_pretrain_loop import gaits, losses, tiny_config

from cagelib import atomic
from cagelib.atomic import NoSpaceError, atomic_write_text
from cagelib.lab import comparison, demo, jobs, reproduce
from cagelib.pretrain.checkpoint import CHECKPOINT, load_checkpoint_file
from cagelib.pretrain.run_lock import RUN_LOCK, RunFolderBusyError, RunFolderReplacedError, RunLock
from cagelib.pretrain.loop import check_data, pretrain

ROOT = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT / "tests")}


# ---------------------------------------------------------------- 1. the run folder's lock


def test_a_second_writer_on_a_locked_run_folder_is_refused_naming_the_holder(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    with RunLock(config.run_dir):
        with pytest.raises(RunFolderBusyError) as err:
            pretrain(config, gaits())
    message = str(err.value)
    assert message.startswith(f"{config.run_dir}: this run folder is in use by another pretraining process (pid "
                              f"{os.getpid()} on host {socket.gethostname()}, since ")
    assert "choose another run_dir" in message
    assert not (Path(config.run_dir) / CHECKPOINT).exists()  # the second writer wrote nothing
    pretrain(config, gaits())  # released: the run goes ahead
    assert sorted(p.name for p in Path(config.run_dir).iterdir()) == ["checkpoint.pt", "config.json",
                                                                   "health_init.json", "metrics.jsonl"]


HOLDER = """
import sys, time
from pathlib import Path
from test_pretrain_loop import gaits, tiny_config
from cagelib.pretrain.loop import pretrain

def hang(epoch, metrics):  # the first epoch is written: stay inside the run until killed
    Path({started!r}).write_text("1")
    time.sleep(600)

pretrain(tiny_config(Path({tmp!r}), epochs=2, checkpoint_every=1), gaits(), callback=hang)
"""


def test_two_pretraining_processes_on_one_folder_the_second_stops_and_a_killed_holder_never_blocks(tmp_path):
    started = tmp_path / "started"
    child = subprocess.Popen([sys.executable, "-c", HOLDER.format(started=str(started), tmp=str(tmp_path))],
                             cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
        while not started.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), child.communicate()[0].decode()[-2000:]
        config = tiny_config(tmp_path, epochs=2)
        before = (Path(config.run_dir) / CHECKPOINT).read_bytes()
        with pytest.raises(RunFolderBusyError, match=rf"in use by another pretraining process \(pid {child.pid} on "
                                                     rf"host {socket.gethostname()}, since 20"):
            pretrain(config, gaits(), resume=True)
        assert (Path(config.run_dir) / CHECKPOINT).read_bytes() == before  # the holder's checkpoint untouched
    finally:
        child.kill()
        child.wait()
    assert (Path(config.run_dir) / RUN_LOCK).exists()  # the killed holder could not remove its lock file ...
    resumed = pretrain(config, gaits(), resume=True)  # ... and it does not block: the kernel released the lock
    assert [m["epoch"] for m in resumed.history] == [1, 2]
    assert not (Path(config.run_dir) / RUN_LOCK).exists()


def test_a_run_whose_folder_is_replaced_stops_without_writing_into_the_new_one(tmp_path):
    config = tiny_config(tmp_path, epochs=3)
    run_dir = Path(config.run_dir)

    def rerun_replaces_the_folder(epoch, metrics):
        shutil.rmtree(run_dir)
        run_dir.mkdir()
        (run_dir / "the rerun's file").write_text("mine")

    with pytest.raises(RunFolderReplacedError, match=r"the run folder was removed or replaced while this "
                                                     r"pretraining process .* was writing it"):
        pretrain(config, gaits(), callback=rerun_replaces_the_folder)
    assert [p.name for p in run_dir.iterdir()] == ["the rerun's file"]  # not a byte of the stale run


# ---------------------------------------------------------------- 2. a full disk during a checkpoint write


def half_then(error):
    """A ``torch.save`` that writes half a checkpoint, then raises ``error`` (what a full disk does)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        data = Path(f).read_bytes()
        Path(f).write_bytes(data[: len(data) // 2])
        raise error
    return save


def torch_writer_error_after_enospc() -> RuntimeError:
    """torch's writer error as raised on a full disk: the errno is lost (its context, with a file object)."""
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as err:
        return err


@pytest.mark.parametrize("fault", ["enospc", "torch writer, disk nearly full", "torch writer, errno in context"])
def test_a_full_disk_during_a_checkpoint_write_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                                       fault):
    config = tiny_config(tmp_path, "hsmb", epochs=1)
    pretrain(config, gaits())
    checkpoint = Path(config.run_dir) / CHECKPOINT
    before = checkpoint.read_bytes()
    if fault == "enospc":
        error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif fault == "torch writer, disk nearly full":  # no errno at all: the free space tells
        error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0)
    else:
        error = torch_writer_error_after_enospc()
    monkeypatch.setattr(torch, "save", half_then(error))
    with pytest.raises(NoSpaceError) as err:
        pretrain(replace(config, epochs=2), gaits(), resume=True)
    assert str(err.value).startswith(f"{checkpoint}: no space left on device")
    assert "checkpoint.pt keeps its previous content" in str(err.value)
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert checkpoint.read_bytes() == before  # the previous checkpoint, intact ...
    assert not [p.name for p in checkpoint.parent.iterdir() if p.name.startswith(".")]  # ... no temp file left
    monkeypatch.undo()
    assert load_checkpoint_file(checkpoint, "cpu")["epoch"] == 1
    resumed = pretrain(replace(config, epochs=2), gaits(), resume=True)  # space again: the run continues
    full = pretrain(replace(config, epochs=2, run_dir=str(tmp_path / "full")), gaits())
    assert losses(resumed.history) == losses(full.history)


def test_another_write_error_is_not_called_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", half_then(RuntimeError("[enforce fail at inline_container.cc:300] . "
                                                              "something else")))
    with pytest.raises(RuntimeError, match="something else") as err:
        with atomic.atomic_path(tmp_path / "x.pt") as tmp:
            torch.save({"a": torch.zeros(3)}, tmp)
    assert not isinstance(err.value, NoSpaceError) and list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root and permission to mount needed; else the test is skipped, saying why)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs Linux and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (not root, or not permitted in this container): "
                    f"{done.stderr.strip()[-200:]}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_really_full_disk_during_a_checkpoint_write(small_disk):
    config = tiny_config(small_disk, "hsmb", epochs=1)  # a checkpoint of ~230 KB on a 1 MiB disk
    pretrain(config, gaits())
    checkpoint = Path(config.run_dir) / CHECKPOINT
    before = checkpoint.read_bytes()
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 64 * 1024))  # 64 KB left
    with pytest.raises(NoSpaceError) as err:
        pretrain(replace(config, epochs=2), gaits(), resume=True)
    assert str(err.value).startswith(f"{checkpoint}: no space left on device (")
    assert checkpoint.read_bytes() == before
    assert not [p.name for p in checkpoint.parent.iterdir() if p.name.startswith(".")]
    (small_disk / "filler").unlink()
    assert [m["epoch"] for m in pretrain(replace(config, epochs=2), gaits(), resume=True).history] == [1, 2]


def test_a_full_disk_names_the_file_of_a_text_write_too(small_disk):
    stat = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize))
    with pytest.raises(NoSpaceError, match=r"report.md: no space left on device \(0 bytes free\) while writing it; "
                                           r"report.md was not written"):
        atomic_write_text(small_disk / "report.md", "x" * 100_000)
    assert not (small_disk / "report.md").exists()


# ---------------------------------------------------------------- 3. the demo's parent killed


DEMO = """
import runpy, signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # a test runner started in the background ignores it
runpy.run_module("cagelib.lab.demo", run_name="__main__")
"""


def _alive(pids) -> list:
    psutil = pytest.importorskip("psutil")
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_killing_the_demo_stops_its_seed_workers_and_the_resource_tracker(tmp_path, signum):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "demo"
    child = subprocess.Popen([sys.executable, "-c", DEMO, "--epochs", "50", "--seeds", "0", "1", "--workers", "2",
                              "--out", str(out)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
        while (len(list(out.glob(f"seed*/pretrain_*/{RUN_LOCK}"))) < 2 and child.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.2)  # both workers are pretraining (they hold their run folders' locks)
        assert child.poll() is None, child.communicate()[0].decode()[-3000:]
        descendants = [p.pid for p in psutil.Process(child.pid).children(recursive=True)]
        assert len(descendants) >= 3, descendants  # two seed workers and the resource tracker
        os.kill(child.pid, signum)
        child.wait(60)
        deadline = time.monotonic() + 20
        while _alive(descendants) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(descendants) == [], f"still running after {signum.name} of the parent: " + ", ".join(
            " ".join(psutil.Process(pid).cmdline())[:120] for pid in _alive(descendants))
    finally:
        child.kill()
        child.wait()
        for pid in _alive([p for p in locals().get("descendants", [])]):
            os.kill(pid, signal.SIGKILL)
    if signum != signal.SIGKILL:
        assert child.returncode in (128 + signum, -signum, 1), child.returncode


def test_a_stale_worker_never_writes_into_a_rerun_output_folder(tmp_path):
    out = comparison.prepare_output(tmp_path / "demo")
    token = comparison.output_token(out)
    assert token and len(token) == 32
    comparison.check_output(out, token)  # its own folder: fine
    again = comparison.prepare_output(out)  # a rerun replaces the folder: a new token
    assert comparison.output_token(again) != token
    config = comparison.ComparisonConfig(out=str(out))
    with pytest.raises(comparison.OutputReplacedError, match=r"the output folder was removed or replaced by another "
                                                             r"run while this worker .* of an earlier run"):
        comparison._seed_job((config, 0, token))  # checked before the seed's first pretraining ...
    assert sorted(p.name for p in out.iterdir()) == [comparison.MARKER]  # ... so nothing was written


def test_an_interrupted_pool_terminates_its_workers_at_once(monkeypatch):
    psutil = pytest.importorskip("psutil")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    began = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        jobs.run_jobs(_sleep_or_fail, [0, 600], workers=2)  # job 1 fails; job 2 would run for 10 min
    assert time.monotonic() - began < 120
    new = {p.pid for p in psutil.Process().children(recursive=True)
           if "resource_tracker" not in " ".join(p.cmdline())} - before  # the tracker lives as long as pytest
    deadline = time.monotonic() + 20
    while _alive(new) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(new) == []


def _sleep_or_fail(seconds):
    if not seconds:
        time.sleep(1)
        raise ZeroDivisionError("a failing job")
    time.sleep(seconds)


# ---------------------------------------------------------------- 4. no half-made run folder


def test_a_refused_run_leaves_no_run_folder(tmp_path):
    config = tiny_config(tmp_path, batch_size=64)  # 10 windows
    with pytest.raises(ValueError, match=r"pretrain: 10 samples are fewer than batch_size=64"):
        pretrain(config, gaits())
    assert not Path(config.run_dir).exists()
    with pytest.raises(ValueError, match=r"10 samples are fewer than batch_size=64"):
        check_data(config, gaits())  # the same check for callers that write before pretrain, writing nothing
    assert list(tmp_path.iterdir()) == []


def test_a_run_failing_before_its_first_checkpoint_leaves_no_folder_but_an_existing_folder_is_kept(tmp_path):
    config = tiny_config(tmp_path, epochs=2, checkpoint_every=2)

    def interrupted(epoch, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(config, gaits(), callback=interrupted)
    assert not Path(config.run_dir).exists()
    Path(config.run_dir).mkdir()
    (Path(config.run_dir) / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, gaits(), callback=interrupted)
    assert (Path(config.run_dir) / "notes.txt").read_text() == "mine"  # a folder it did not create stays


def test_a_notebook_run_refused_for_a_batch_larger_than_the_corpus_leaves_no_run_folder(tmp_path):
    from cagelib.lab.settings import RunSettings, pretrain_run

    with pytest.raises(ValueError, match="fewer than batch_size=1000"):
        pretrain_run(RunSettings(method="geclr", epochs=1, batch_size=1000, max_pretrain_windows=64),
                     outputs=tmp_path, progress=False)
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "runs"])


# ---------------------------------------------------------------- 5. a device the machine lacks


def test_reproduce_with_cuda_on_a_machine_without_it_fails_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        reproduce.main(["--device", "cuda", "--out", str(tmp_path / "out")])
    assert "error: --device 'cuda': CUDA is not available on this machine" in capsys.readouterr().err
    from cagelib.device import DeviceError

    grid = reproduce.Grid("t", {"geclr": reproduce.RunSettings(method="geclr")}, seeds=(0,), tsne=())
    with pytest.raises(DeviceError, match=r"device 'cuda:0': CUDA is not available"):
        reproduce.run_grid(grid, tmp_path / "out", device="cuda:0", log=lambda line: None)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 7. the command lines


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "-1"], "--seeds: -1 is not an integer >= 0"),
    (["--seeds", "0", "0"], "--seeds: 0 is given twice; each seed is one pretraining, give it once"),
    (["--epochs", "0"], "--epochs: 0 is below 1"),
    (["--workers", "0"], "--workers: 0 is below 1"),
])
def test_demo_refuses_a_bad_command_line_before_anything_runs(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        demo.main(argv + ["--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert f"python -m cagelib.lab.demo: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_duplicate_seeds_are_refused_by_the_demo_function_too(tmp_path):
    with pytest.raises(ValueError, match=r"^seeds: 0 is given twice"):
        demo.run(demo.DemoConfig(seeds=(0, 0), out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module", [demo, reproduce], ids=lambda m: m.__name__)
def test_every_option_has_a_sentence_of_help_and_the_usage_names_the_module(module):
    parser = module.parser()
    assert parser.prog == f"python -m {module.__name__}"
    assert parser.format_usage().startswith(f"usage: python -m {module.__name__} ")
    assert parser.description.endswith(".") and len(parser.description) > 80
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and action.help[0].isupper() and action.help.endswith("."), action.option_strings
