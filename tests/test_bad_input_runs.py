"""Bad input from the hostile review, part 2: processes, files and run folders that fail cleanly.

Two writers on one run folder (the run lock), a full disk during a checkpoint write, the demo's parent
killed by SIGKILL / SIGINT / SIGTERM (its seed workers die too, and stale workers never write into a
rerun's folder), a refused run leaving no half-made folder, ``--device cuda`` without CUDA, the notebooks
of an installed package (tests/test_packaging.py), and the command lines of ``python -m cagelib demo`` and
``python -m cagelib reproduce`` (``cagelib.cli``: a bad override is refused before anything is written).
"""
from __future__ import annotations

import errno
import json
import os
import re
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
from test_pretrain_loop import gaits, losses, tensorboard_available, tiny_config

from cagelib import atomic, cli
from cagelib.atomic import NoSpaceError, atomic_write_text
from cagelib.errors import ParameterError
from cagelib.experiment import Experiment, load, settings_help
from cagelib.lab import comparison, demo, jobs, reproduce, runner
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
    assert sorted(p.name for p in Path(config.run_dir).iterdir()) == [
        "checkpoint.pt", "config.json", "health_init.json", "metrics.jsonl", "provenance.json"] + (
        ["tensorboard"] if tensorboard_available() else [])  # the whole run, no temporary file


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
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a test runner started in the background ignores it
from cagelib.cli import main
if __name__ == "__main__":  # the seed workers are spawned: they import this script without running it
    sys.exit(main(sys.argv[1:]))
"""


def toml_path(path) -> str:
    """``path`` as the TOML string of an override value (``out="/tmp/..."``)."""
    return json.dumps(str(path))


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
    child = subprocess.Popen([sys.executable, "-c", DEMO, "demo", "pretrain.epochs=50", "seeds=[0, 1]", "workers=2",
                              f"out={toml_path(out)}"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
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
    out = runner.prepare_output(tmp_path / "demo")
    token = runner.output_token(out)
    assert token and len(token) == 32
    runner.check_output(out, token)  # its own folder: fine
    again = runner.prepare_output(out)  # a rerun replaces the folder: a new token
    assert runner.output_token(again) != token
    exp = load("demo", [f"out={toml_path(out)}", "seeds=[0]"])
    assert exp.run_folder("seed0").is_relative_to(out)  # the seed's runs would go inside the output folder
    for job in (lambda: comparison.run_seed(exp, 0, token), lambda: comparison._seed_job((exp, 0, token))):
        with pytest.raises(runner.OutputReplacedError, match=r"the output folder was removed or replaced by another "
                                                             r"run while this worker .* of an earlier run"):
            job()  # checked before the seed's first pretraining ...
        assert sorted(p.name for p in out.iterdir()) == [runner.MARKER]  # ... so nothing was written


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
    from cagelib.lab.workbench import pretrain_run

    exp = load("notebook", ["pretrain.contrast.method=geclr", "pretrain.epochs=1", "pretrain.batch_size=1000",
                            "data.max_pretrain_windows=64"])
    with pytest.raises(ValueError, match="fewer than batch_size=1000"):
        pretrain_run(exp, outputs=tmp_path, progress=False)
    assert list(tmp_path.rglob("*")) in ([], [tmp_path / "runs"])


# ---------------------------------------------------------------- 5. a device the machine lacks


def test_reproduce_with_cuda_on_a_machine_without_it_fails_before_anything_runs(tmp_path, monkeypatch, capsys):
    from cagelib.device import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    exp = load("reproduce/small", ["pretrain.device=cuda:0", "seeds=[0]", f"out={toml_path(tmp_path / 'out')}"])
    exp = Experiment.from_dict({**exp.to_dict(), "variants": {"geclr": exp.variants["geclr"]}})  # --only geclr
    with pytest.raises(DeviceError, match=r"device 'cuda:0': CUDA is not available"):
        reproduce.run_grid(exp, notebooks=("03_pretrain", "04_evaluate"), log=lambda line: None)
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exit_:  # the command line: an error message, not a traceback
        cli.main(["reproduce", "--device", "cuda", f"out={toml_path(tmp_path / 'out')}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: --device 'cuda': CUDA is not available on this machine" in err
    assert "python -m cagelib reproduce: error: " in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 7. the command lines


@pytest.mark.parametrize("argv, message", [
    (["seeds=[-1]"], r"override 'seeds=\[-1\]'.*seeds.*>= 0.*got \[-1\]"),
    (["seeds=[0, 0]"], r"override 'seeds=\[0, 0\]'.*seeds must be distinct.*got \[0, 0\]"),
    (["seeds=[0]", "workers=1", "pretrain.epochs=0"], r"override 'pretrain\.epochs=0'.*epochs.*>= 1"),
    (["workers=0"], r"override 'workers=0'.*workers.*>= 1"),
    (["pretrain.contrast.method=cagee"], r"override 'pretrain\.contrast\.method=cagee': 'pretrain\.contrast.*"
                                         r"unknown method 'cagee'; use one of .*\bcage\b"),
    (["pretrain.epoch=3"], r"override 'pretrain\.epoch=3': 'pretrain\.epoch': is not a setting of PretrainConfig; "
                           r"did you mean 'pretrain\.epochs'\?"),
    (["--config", "demoo"], r"preset: 'demoo': no such preset; did you mean 'demo'\?"),
], ids=["negative-seed", "seed-twice", "no-epochs", "no-workers", "unknown-method", "unknown-key", "preset-misspelt"])
def test_demo_refuses_a_bad_command_line_before_anything_runs(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", *argv, f"out={toml_path(out)}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err  # names the override, the key and the problem ...
    assert not out.exists()  # ... before anything is written
    assert "python -m cagelib demo: error: " in err, err  # argparse's error of the demo command


def test_duplicate_seeds_are_refused_before_the_demo_function_can_run_them(tmp_path):
    out = tmp_path / "out"
    exp = load("demo", [f"out={toml_path(out)}"])
    with pytest.raises(ValueError, match=r"seeds must be distinct integers >= 0 .*got \[0, 0\]"):
        demo.run(replace(exp, seeds=(0, 0)))  # the experiment refuses them: demo.run never sees them
    with pytest.raises(ParameterError, match=r"seeds must be distinct .*got \[0, 0\]"):
        Experiment.from_dict({**exp.to_dict(), "seeds": [0, 0]})
    with pytest.raises(ParameterError, match=r"seeds must be distinct .*got \[0, 0\]"):
        load("demo", {"seeds": [0, 0], "out": str(out)})
    assert not out.exists()


def subcommand_parser(command: str):
    """The parser of ``python -m cagelib <command>`` (``cagelib.cli.build_parser``)."""
    import argparse

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("command", ["demo", "pretrain", "evaluate", "peers", "reproduce"])
def test_every_option_has_a_sentence_of_help_and_the_usage_names_the_command(command):
    parser = subcommand_parser(command)
    assert parser.prog == f"python -m cagelib {command}"
    assert parser.format_usage().startswith(f"usage: python -m cagelib {command} ")
    assert parser.description.endswith(".") and len(parser.description.split()) >= 8
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and action.help[0].isupper() and action.help.endswith("."), action.option_strings
    epilog = " ".join(parser.epilog.split())  # every setting an override may set, with its sentence
    for key, _, comment in settings_help(Experiment):
        assert f"{key} {' '.join(comment.split())}" in epilog, key
