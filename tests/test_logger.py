"""The run logger (cagelib.pretrain.logger): metrics.jsonl exactly as the JSONL writer alone writes it, TensorBoard
scalars (every numeric metric, step = epoch; none twice after a resume) where the package is installed, and a loop
that imports and runs without it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_pretrain_loop import gaits, losses, tiny_config

from cagelib.pretrain import logger as L
from cagelib.pretrain.checkpoint import write_metrics
from cagelib.pretrain.loop import pretrain

ROOT = Path(__file__).resolve().parents[1]
needs_tensorboard = pytest.mark.skipif(not L.tensorboard_available(), reason="the tensorboard package is absent")


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's view of the run's event files: tag -> [(step, value)] (purged steps dropped, as it shows them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / L.TENSORBOARD))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_metrics_jsonl_is_exactly_what_the_jsonl_writer_writes(tmp_path):
    result = pretrain(tiny_config(tmp_path, "hsmb"), gaits())
    written = (result.run_dir / "metrics.jsonl").read_bytes()
    write_metrics(tmp_path / "alone.jsonl", result.history)  # the JSONL path by itself, on the same history
    assert written == (tmp_path / "alone.jsonl").read_bytes()
    assert written == "".join(json.dumps(m) + "\n" for m in result.history).encode()
    with L.RunLogger(tmp_path / "jsonl_only", tensorboard=False) as logger:  # the logger without TensorBoard
        assert logger.sinks == ["jsonl"] and logger.tensorboard_dir is None
        for metrics in result.history:
            logger.log_epoch(metrics)
    assert (tmp_path / "jsonl_only" / "metrics.jsonl").read_bytes() == written
    assert not (tmp_path / "jsonl_only" / L.TENSORBOARD).exists()


@needs_tensorboard
def test_tensorboard_holds_every_numeric_metric_per_epoch_and_the_initial_health(tmp_path):
    result = pretrain(tiny_config(tmp_path, "hsmb"), gaits())
    events = list((result.run_dir / L.TENSORBOARD).glob("events.out.tfevents.*"))
    assert len(events) == 1
    seen = scalars(result.run_dir)
    numeric = {k for m in result.history for k, v in m.items() if k != "epoch" and isinstance(v, (int, float))}
    assert numeric <= set(seen) and "loss" in numeric and "lr" in numeric
    for name in ("loss", "acc", "lr"):
        assert [step for step, _ in seen[name]] == [1, 2]
        assert [v for _, v in seen[name]] == pytest.approx([m[name] for m in result.history], rel=1e-6)
    health = [k for k in result.health_init if k not in ("epoch", "chance")]
    assert health and all(k in result.history[0] for k in health)
    for name in health:  # epoch 0 (before training) and then every epoch
        assert [step for step, _ in seen[name]] == [0, 1, 2]
        assert seen[name][0][1] == pytest.approx(result.health_init[name], rel=1e-6)


@needs_tensorboard
def test_a_resumed_run_shows_no_epoch_twice_in_tensorboard(tmp_path):
    """Killed after epoch 3 with the checkpoint of epoch 2: epoch 3 is trained again and shown once."""
    config = tiny_config(tmp_path, "hsmb", epochs=4, checkpoint_every=2, health=None)

    def kill_after_epoch_3(epoch, metrics):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(config, gaits(), callback=kill_after_epoch_3)
    resumed = pretrain(config, gaits(), resume=True)
    seen = scalars(resumed.run_dir)
    assert [step for step, _ in seen["loss"]] == [1, 2, 3, 4]
    assert [v for _, v in seen["loss"]] == pytest.approx([m["loss"] for m in resumed.history], rel=1e-6)
    lines = (resumed.run_dir / "metrics.jsonl").read_text().splitlines()
    assert losses([json.loads(line) for line in lines]) == losses(resumed.history)  # one line per epoch, too


def test_without_tensorboard_the_run_writes_jsonl_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "_summary_writer", lambda: None)  # as without the package
    with L.RunLogger(tmp_path / "a") as logger:
        assert logger.sinks == ["jsonl"]
    result = pretrain(tiny_config(tmp_path, "geclr", epochs=1, health=None), gaits())
    assert not (result.run_dir / L.TENSORBOARD).exists()
    assert [json.loads(line)["epoch"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()] == [1]


def test_tensorboard_false_turns_the_event_files_off(tmp_path):
    result = pretrain(tiny_config(tmp_path, "geclr", epochs=1, health=None), gaits(), tensorboard=False)
    assert not (result.run_dir / L.TENSORBOARD).exists() and (result.run_dir / "metrics.jsonl").is_file()


def test_the_loop_imports_without_the_tensorboard_package(tmp_path):
    code = ("import sys\n"
            "import cagelib.pretrain.loop, cagelib.pretrain.distributed\n"
            "assert 'torch.utils.tensorboard' not in sys.modules, 'imported eagerly'\n"
            "sys.modules['tensorboard'] = None  # from here on, `import tensorboard` fails as if it were absent\n"
            "from cagelib.pretrain.logger import RunLogger, tensorboard_available\n"
            "assert not tensorboard_available()\n"
            f"logger = RunLogger({str(tmp_path / 'run')!r})\n"
            "logger.log_epoch({'epoch': 1, 'loss': 0.5})\n"
            "logger.close()\n"
            "print(logger.sinks)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "['jsonl']"
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == '{"epoch": 1, "loss": 0.5}\n'
    assert not (tmp_path / "run" / L.TENSORBOARD).exists()
