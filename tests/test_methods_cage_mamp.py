"""CAGE + MAMP (cagelib.methods.cage_mamp): CAGE's loss plus masked motion prediction on the same A-GCN."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cagelib.methods.cage import CAGE, ContrastConfig
from cagelib.methods.cage_mamp import CAGEMAMP, MaskedMotionConfig
from cagelib.methods.encoders import AGCN, AGCNConfig
from cagelib.methods.mamp import motion
from cagelib.methods.registry import available_methods, build_method
from cagelib.pretrain.config import PretrainConfig, build_model
from cagelib.pretrain.loop import make_optimization, pretrain, train_step
from test_methods_mamp import walks

MODEL = AGCNConfig.small()


def combo_config(tmp_path=None, **overrides) -> PretrainConfig:
    base = dict(contrast=ContrastConfig(method="cage_mamp", queue_size=16), model=MODEL, batch_size=4, epochs=1,
                milestones=(), device="cpu", progress=False,
                run_dir=str(tmp_path / "run") if tmp_path is not None else "outputs/pretrain")
    return PretrainConfig(**{**base, **overrides})


def test_registered_and_the_base_preset_decides_the_contrastive_part():
    assert "cage_mamp" in available_methods()
    model = build_method(combo_config())
    assert isinstance(model, CAGEMAMP) and isinstance(model, CAGE)
    assert model.config.streams == ("cartesian", "spherical") and model.config.bank_mode == "cooperation"
    assert model.config.queue_size == 16  # the other contrast fields are the given ones
    single = build_method(combo_config(options=MaskedMotionConfig(base="geclr")))
    assert single.config.streams == ("cartesian",) and single.config.bank_mode == "none"
    again = PretrainConfig.from_dict(json.loads(json.dumps(combo_config().to_dict())))
    assert again == combo_config()
    with pytest.raises(ValueError, match="base"):
        MaskedMotionConfig(base="mamp")
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedMotionConfig(mask_ratio=1.0)


def test_target_is_the_motion_of_the_masked_tokens_and_they_are_zeroed_in_the_input():
    torch.manual_seed(0)
    model = CAGEMAMP(MaskedMotionConfig(norm_target=False), ContrastConfig(queue_size=16), lambda: AGCN(MODEL)).eval()
    assert model.segment == 4  # the small A-GCN's temporal strides 1, 1, 2, 2
    x = walks(n=3, t=46)  # 46 frames: the last 2 are dropped
    out = model.masked_motion_loss(x, torch.Generator().manual_seed(1))
    n, length = 3, 46 // 4 * 16
    assert out["masked"].shape == (n, length) and out["prediction"].shape == (n, length, 12)
    assert (out["masked"].sum(dim=1) == round(0.5 * length)).all()
    kept = x[:, :44]
    diff = motion(kept)
    for s, v in ((0, 0), (5, 7), (10, 15)):  # token s * V + v holds frames 4s..4s+3 of joint v
        assert torch.allclose(out["target"][:, s * 16 + v], diff[:, 4 * s:4 * s + 4, v].reshape(n, 12))
        is_masked = out["masked"][:, s * 16 + v]  # (N,)
        frames = out["seen"][:, 4 * s:4 * s + 4, v]  # (N, 4, 3)
        assert torch.equal(frames[is_masked], torch.zeros_like(frames[is_masked]))
        assert torch.equal(frames[~is_masked], kept[:, 4 * s:4 * s + 4, v][~is_masked])
    per_token = (out["prediction"] - out["target"]).pow(2).mean(2)  # the loss is over masked tokens only
    assert torch.allclose(out["loss"], per_token[out["masked"]].mean(), atol=1e-6)


def test_the_masked_values_do_not_reach_the_encoder():
    torch.manual_seed(0)
    model = CAGEMAMP(MaskedMotionConfig(), ContrastConfig(queue_size=16), lambda: AGCN(MODEL)).eval()
    x = walks(n=2)
    out = model.masked_motion_loss(x, torch.Generator().manual_seed(3))
    seg, joint = divmod(int(out["masked"][0].nonzero()[0]), 16)
    changed = x.clone()
    changed[0, 4 * seg:4 * seg + 4, joint] += 5.0  # only under a masked token of sample 0
    again = model.masked_motion_loss(changed, torch.Generator().manual_seed(3))
    assert torch.equal(out["seen"], again["seen"]) and torch.equal(out["prediction"], again["prediction"])


def test_loss_falls_on_a_fixed_batch_and_holds_both_terms():
    torch.manual_seed(0)
    config = combo_config(options=MaskedMotionConfig(base="geclr"))
    model = build_model(config)
    optimizer = make_optimization(config, model, torch.device("cpu"))[0]
    x = walks(n=8)
    seen, motion_losses = [], []
    for _ in range(30):
        out = train_step(model, optimizer, x, torch.Generator().manual_seed(0))
        seen.append(float(out["loss"]))
        motion_losses.append(float(out["loss_motion"]))
    # step 0 contrasts against an empty bank (no negatives); from step 1 the bank holds this batch's keys
    assert all(np.isfinite(seen)) and seen[-1] < 0.8 * max(seen[1:5]), seen
    assert motion_losses[-1] < 0.8 * motion_losses[0], motion_losses


def test_a_short_run_reports_reconstruction_and_retrieval(tmp_path):
    result = pretrain(combo_config(tmp_path, epochs=2), walks(n=12).numpy())
    assert len(result.history) == 2 and all(np.isfinite(m["loss"]) for m in result.history)
    for key in ("reconstruction", "retrieval_cartesian", "retrieval_spherical", "loss_motion"):
        assert key in result.history[-1]
    assert "reconstruction" in result.health_init
