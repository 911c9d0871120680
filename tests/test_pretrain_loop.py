"""The pretraining loop: files, determinism, exact resume, strict loading, the learning-rate schedule."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from cagelib.methods.cage import ContrastConfig
from cagelib.methods.encoders import AGCNConfig
from cagelib.pretrain.checkpoint import load_encoder, load_pretrained
from cagelib.pretrain.logger import tensorboard_available
from cagelib.pretrain.loop import PretrainConfig, epoch_seed, pretrain, train_step

TINY = AGCNConfig.small(widths=(32, 64), strides=(1, 2))


def gaits(n: int = 10, t: int = 12, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    pose = g.normal(0, 0.3, (1, 1, 16, 3))
    frames = np.arange(t).reshape(1, t, 1, 1)
    motion = g.uniform(0, 0.2, (n, 1, 16, 3)) * np.sin(g.uniform(0.2, 0.7, (n, 1, 1, 1)) * frames
                                                       + g.uniform(0, 6.3, (n, 1, 1, 1)))
    return (pose + motion).astype(np.float32)


def tiny_config(tmp_path, method: str = "cage", **overrides) -> PretrainConfig:
    base = PretrainConfig(epochs=2, batch_size=4, milestones=(3,), model=TINY,
                          contrast=ContrastConfig.preset(method, queue_size=16), device="cpu",
                          run_dir=str(tmp_path / "run"), progress=False)
    return replace(base, **overrides)


def losses(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


def test_pretrain_writes_config_metrics_and_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "hsmb")
    seen = []
    result = pretrain(config, gaits(), callback=lambda epoch, metrics: seen.append((epoch, metrics["loss"])))
    run = result.run_dir
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "health_init.json",
                                                       "metrics.jsonl", "provenance.json"] + (
        ["tensorboard"] if tensorboard_available() else [])  # no temp files; event files where installed
    assert PretrainConfig.from_dict(json.loads((run / "config.json").read_text())) == config
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and lines == result.history
    assert {"loss", "loss_base", "loss_cartesian", "acc", "negatives", "lr", "seconds"} <= set(lines[0])
    assert all(math.isfinite(m["loss"]) for m in lines)
    assert seen == [(1, lines[0]["loss"]), (2, lines[1]["loss"])]
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and {"model", "optimizer", "scheduler", "generator", "history"} <= set(state)
    assert "memory_banks.cartesian.features" in state["model"]


def test_same_seed_same_run_and_the_global_rng_is_untouched(tmp_path):
    rng_before = torch.get_rng_state()
    a = pretrain(tiny_config(tmp_path, run_dir=str(tmp_path / "a")), gaits())
    b = pretrain(tiny_config(tmp_path, run_dir=str(tmp_path / "b")), gaits())
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert losses(a.history) == losses(b.history)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    c = pretrain(tiny_config(tmp_path, run_dir=str(tmp_path / "c"), seed=1), gaits())
    assert losses(c.history) != losses(a.history)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    data = gaits()
    full = pretrain(tiny_config(tmp_path, epochs=4, run_dir=str(tmp_path / "full")), data)
    part = tiny_config(tmp_path, epochs=2, run_dir=str(tmp_path / "part"))
    pretrain(part, data)
    resumed = pretrain(replace(part, epochs=4), data, resume=True)
    assert losses(resumed.history) == losses(full.history)
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3, 4]
    lr = [m["lr"] for m in full.history]
    assert lr == pytest.approx([0.1, 0.1, 0.1, 0.01])  # milestone at epoch 3
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for name in full_state:
        assert torch.equal(full_state[name], resumed_state[name]), name
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_run_killed_between_checkpoints_resumes_from_the_last_checkpoint(tmp_path):
    data = gaits(seed=3)
    full = pretrain(tiny_config(tmp_path, "hsmb", epochs=4, run_dir=str(tmp_path / "full")), data)
    config = tiny_config(tmp_path, "hsmb", epochs=4, checkpoint_every=2, run_dir=str(tmp_path / "killed"))

    def kill_after_epoch_3(epoch, metrics):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(config, data, callback=kill_after_epoch_3)
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 3
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    resumed = pretrain(config, data, resume=True)
    assert losses(resumed.history) == losses(full.history)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]


def test_resume_refuses_changed_settings_data_and_overwrites(tmp_path):
    config, data = tiny_config(tmp_path, "geclr", epochs=1), gaits()
    pretrain(config, data)
    with pytest.raises(FileExistsError, match="resume=True"):
        pretrain(config, data)
    with pytest.raises(ValueError, match="'lr'"):
        pretrain(replace(config, epochs=2, lr=0.5), data, resume=True)
    with pytest.raises(ValueError, match="data differ"):
        pretrain(replace(config, epochs=2), data * 2, resume=True)
    done = pretrain(config, data, resume=True)  # nothing left to do: returns the finished run
    assert len(done.history) == 1


def test_each_epoch_has_its_own_shuffle():
    seeds = {epoch_seed(0, e) for e in range(50)} | {epoch_seed(1, e) for e in range(50)}
    assert len(seeds) == 100
    orders = [torch.randperm(32, generator=torch.Generator().manual_seed(epoch_seed(0, e))) for e in range(3)]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])


def test_load_pretrained_and_load_encoder(tmp_path):
    result = pretrain(tiny_config(tmp_path, "cage", epochs=1), gaits())
    model = load_pretrained(result.run_dir)
    for (name, x), (_, y) in zip(result.model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(x, y), name
    encoder = load_encoder(result.run_dir, "spherical")
    assert not encoder.training
    x = torch.as_tensor(gaits()[:3])
    reference = result.model.encoders()["spherical"].eval()
    assert torch.equal(encoder(x), reference(x))


def test_load_pretrained_is_strict(tmp_path):
    result = pretrain(tiny_config(tmp_path, "geclr", epochs=1), gaits())
    path = result.run_dir / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    removed = "query_nets.cartesian.head.net.0.weight"
    state["model"].pop(removed)
    state["model"]["stray.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        load_pretrained(result.run_dir)
    message = str(error.value)
    assert "checkpoint.pt" in message and removed in message and "stray.weight" in message

    other = pretrain(tiny_config(tmp_path, "geclr", epochs=1, run_dir=str(tmp_path / "other")), gaits())
    config = json.loads((other.run_dir / "config.json").read_text())
    config["model"]["width_multiplier"] = 0.5  # a config that no longer matches the weights
    (other.run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"belongs to another run than .*config.json.*settings that differ: \['model'\]"):
        load_pretrained(other.run_dir)  # the checkpoint's own config says whose it is
    state = torch.load(other.run_dir / "checkpoint.pt", weights_only=True)
    state.pop("config")  # an older checkpoint without its config: the strict shape check still refuses it
    torch.save(state, other.run_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained(other.run_dir)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path / "nowhere")


def test_train_step_returns_detached_metrics_and_updates_the_query_encoder(tmp_path):
    from cagelib.pretrain.loop import build_model

    model = build_model(tiny_config(tmp_path, "csmb"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.query_nets.parameters()]
    out = train_step(model, optimizer, torch.as_tensor(gaits()[:4]), torch.Generator().manual_seed(0),
                     torch.arange(4))
    assert all(not v.requires_grad for v in out.values())
    assert {"loss", "loss_base", "loss_positive", "acc"} <= set(out)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.query_nets.parameters()))


def test_paper_settings():
    cage, geclr = PretrainConfig.paper("cage"), PretrainConfig.paper("geclr")
    assert (cage.epochs, cage.milestones, geclr.epochs, geclr.milestones) == (300, (150, 250), 200, (100, 160))
    assert cage.model == AGCNConfig() and cage.contrast == ContrastConfig.preset("cage")
    assert (cage.batch_size, cage.lr, cage.sgd_momentum, cage.weight_decay) == (32, 0.1, 0.9, 1e-4)
    assert cage.contrast.queue_size == 2048 and cage.contrast.momentum == 0.999


def test_bad_input_is_rejected(tmp_path):
    config = tiny_config(tmp_path, "geclr")
    with pytest.raises(ValueError, match=r"\(N, T, 16, 3\)"):
        pretrain(config, np.zeros((10, 12, 15, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="fewer than batch_size"):
        pretrain(config, gaits(n=3))
    bad = gaits()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pretrain(config, bad)
