"""Training health (``cagelib.pretrain.health``): the metrics on known inputs, the monitor leaves the
model and the training untouched, the loop writes the metrics, and a tiny run that learns shows it."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cagelib.methods.cage import ContrastConfig
from cagelib.methods.encoders import AGCNConfig
from cagelib.pretrain.config import PretrainConfig, build_model
from cagelib.pretrain.health import (HealthConfig, HealthMonitor, alignment, clip_halves, knn_balanced_accuracy,
                                     retrieval, spread, uniformity)
from cagelib.pretrain.loop import HEALTH_INIT, pretrain

TINY = AGCNConfig.small(widths=(16, 32), strides=(1, 2))
STREAM_METRICS = ("retrieval", "alignment", "uniformity", "spread")


def gaits(n: int = 64, t: int = 12, seed: int = 0) -> np.ndarray:
    """Distinct root-relative instances: a random pose each, plus a small periodic motion."""
    g = np.random.default_rng(seed)
    frames = np.arange(t).reshape(1, t, 1, 1)
    x = g.normal(0, 0.3, (n, 1, 16, 3)) + g.uniform(0, 0.2, (n, 1, 16, 3)) * np.sin(
        g.uniform(0.2, 0.7, (n, 1, 1, 1)) * frames + g.uniform(0, 6.3, (n, 1, 1, 1)))
    x[:, :, 0] = 0
    return x.astype(np.float32)


def config(tmp_path, name: str = "run", **overrides) -> PretrainConfig:
    base = PretrainConfig(epochs=2, batch_size=16, milestones=(), model=TINY, device="cpu", progress=False,
                          contrast=ContrastConfig.preset("hsmb", queue_size=32), run_dir=str(tmp_path / name),
                          health=HealthConfig(windows=32))
    return replace(base, **overrides)


def test_metrics_on_known_inputs():
    z = F.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    assert alignment(z, z) == 0 and retrieval(z, z) == 1
    same = F.normalize(torch.ones(10, 8), dim=1)
    assert uniformity(same) == pytest.approx(0.0, abs=1e-6) and spread(same) == pytest.approx(0.0, abs=1e-6)
    eye = torch.eye(4)  # orthonormal: every distinct pair at squared distance 2
    assert uniformity(eye) == pytest.approx(-4.0, abs=1e-6)
    assert alignment(eye, eye.roll(1, dims=0)) == pytest.approx(2.0)
    assert retrieval(eye, eye.roll(1, dims=0)) == 0
    assert spread(z) > 0.5


def test_knn_and_clip_halves():
    reference = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = torch.tensor([0, 0, 1, 1])
    assert knn_balanced_accuracy(reference, y, reference + 0.01, y, k=1) == 1.0
    assert knn_balanced_accuracy(reference, y, reference, 1 - y, k=1) == 0.0
    groups = np.repeat(np.arange(6), 3)
    ref, query = clip_halves(groups, seed=0)
    assert len(ref) == len(query) == 9 and not set(groups[ref]) & set(groups[query])
    assert np.array_equal(clip_halves(groups, 0)[0], ref)


@pytest.mark.parametrize("training", [True, False])
def test_monitor_restores_the_mode_and_reports_every_stream(tmp_path, training):
    model = build_model(config(tmp_path, contrast=ContrastConfig.preset("cage", queue_size=32)))
    model.train(training)
    x, labels = gaits(40), (gaits(24, seed=1), np.arange(24) % 2, np.arange(24) // 3)
    monitor = HealthMonitor(x, model.augment, HealthConfig(windows=16), labels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    health = monitor(model)
    assert model.training is training and all(m.training is training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no bank / BN update
    assert set(health) == {f"{m}_{s}" for m in (*STREAM_METRICS, "knn") for s in ("cartesian", "spherical")}
    assert all(math.isfinite(v) for v in health.values())
    assert monitor.chance == 1 / 16 and monitor(model) == health  # fixed windows and views


def test_health_changes_no_loss_and_lands_in_metrics_jsonl(tmp_path):
    x, labels = gaits(48), (gaits(24, seed=1), np.arange(24) % 2, np.arange(24) // 3)
    on = pretrain(config(tmp_path, "on"), x, health_labels=labels)
    off = pretrain(config(tmp_path, "off", health=None), x)
    health_keys = {f"{m}_cartesian" for m in (*STREAM_METRICS, "knn")}
    for a, b in zip(on.history, off.history, strict=True):
        assert health_keys <= set(a) and not health_keys & set(b)
        assert {k: v for k, v in a.items() if k not in health_keys | {"seconds"}} == \
            {k: v for k, v in b.items() if k != "seconds"}  # bitwise equal losses
    lines = [json.loads(line) for line in (on.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and lines == on.history
    assert json.loads((on.run_dir / HEALTH_INIT).read_text()) == on.health_init
    assert set(on.health_init) == health_keys | {"epoch", "chance"} and on.health_init["chance"] == 1 / 32
    assert off.health_init is None and not (off.run_dir / HEALTH_INIT).exists()
    for name, parameter in on.model.state_dict().items():
        assert torch.equal(parameter, off.model.state_dict()[name]), name


def test_resume_keeps_the_initial_health_and_an_old_config_loads(tmp_path):
    x = gaits(48)
    first = pretrain(config(tmp_path, epochs=1), x)
    seen = []

    class Plot:
        def __call__(self, epoch, metrics):
            seen.append(epoch)

        def health_init(self, metrics):
            seen.append(metrics)

    resumed = pretrain(config(tmp_path, epochs=2), x, resume=True, callback=Plot())
    assert resumed.health_init == first.health_init and seen == [first.health_init, 2]
    old = config(tmp_path).to_dict()  # a schema-1 config.json written before these fields
    del old["representation"], old["health"], old["contrast"]["views"], old["schema"], old["options"]
    loaded = PretrainConfig.load(json.loads(json.dumps(old)))  # what those runs were trained with:
    assert loaded.representation == "first_frame" and loaded.health == HealthConfig()
    assert loaded.contrast.views == "paper"  # Crop + Joint Jittering
    with pytest.raises(ValueError, match="schema 1"):  # no silent legacy fill outside load
        PretrainConfig.from_dict({**old, "schema": 1})
    assert PretrainConfig.from_dict(json.loads(json.dumps(config(tmp_path).to_dict()))) == config(tmp_path)


def test_a_run_that_learns_shows_retrieval_and_spread_rising(tmp_path):
    """Crop views on distinct instances: instance discrimination is easy, so retrieval must rise well
    above its value at initialisation and far above chance, and the features must spread out."""
    run = pretrain(config(tmp_path, epochs=10, lr=0.1, health=HealthConfig(windows=64),
                          contrast=ContrastConfig(queue_size=32, momentum=0.9, temperature=0.2, views="crop")),
                   gaits(64))
    init, last = run.health_init, run.history[-1]
    assert last["retrieval_cartesian"] > init["retrieval_cartesian"] + 0.15
    assert last["retrieval_cartesian"] > 20 / 64  # chance: 1 / 64
    assert init["spread_cartesian"] < 0.05 < 0.3 < last["spread_cartesian"]
    assert last["uniformity_cartesian"] < init["uniformity_cartesian"] - 0.5


def test_the_pretraining_plot_shows_health_from_epoch_0_beside_the_loss():
    from cagelib.lab.notebook import LiveLossPlot

    live = LiveLossPlot("t")
    live.handle = type("Handle", (), {"update": lambda self, figure: None})()  # no notebook display here
    live.health_init({"epoch": 0, "chance": 0.25, "retrieval_cartesian": 0.3, "spread_cartesian": 0.01})
    live(1, {"epoch": 1, "loss": 3.0, "acc": 0.5, "retrieval_cartesian": 0.6, "spread_cartesian": 0.4})
    loss, _, health = live.figure().axes  # loss, its accuracy axis, health
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in health.get_lines()}
    assert lines["retrieval_cartesian"] == ([0, 1], [0.3, 0.6]) and lines["spread_cartesian"] == ([0, 1], [0.01, 0.4])
    assert lines["retrieval chance (1 / windows)"][1] == [0.25, 0.25]
    assert all(line.get_marker() == "o" for line in loss.get_lines())  # a 1-epoch run is visible
    assert health.get_xlabel().startswith("epoch") and health.get_title()
