"""MAMP (cagelib.methods.mamp): masked motion prediction as a registered method of the shared loop."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cagelib.methods.cage import ContrastConfig
from cagelib.methods.mamp import MAMP, MAMPConfig, motion, patchify
from cagelib.methods.registry import available_methods, build_method
from cagelib.pretrain.config import PretrainConfig, build_model
from cagelib.pretrain.loop import make_optimization, pretrain, train_step

SMALL = MAMPConfig(dim=32, depth=2, heads=4, decoder_dim=32, decoder_depth=1, max_frames=48)


def walks(n: int = 8, t: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth periodic motion of 16 joints, ``(n, t, 16, 3)``."""
    g = np.random.default_rng(seed)
    pose = g.normal(0, 0.3, (1, 1, 16, 3))
    frames = np.arange(t).reshape(1, t, 1, 1)
    swing = g.uniform(0.05, 0.2, (n, 1, 16, 3)) * np.sin(g.uniform(0.2, 0.5, (n, 1, 1, 1)) * frames
                                                         + g.uniform(0, 6.3, (n, 1, 16, 1)))
    return torch.as_tensor(pose + swing, dtype=torch.float32)


def mamp_config(tmp_path=None, **overrides) -> PretrainConfig:
    base = dict(contrast=ContrastConfig(method="mamp"), options=SMALL, optimizer="adamw", lr=1e-3,
                weight_decay=0.05, batch_size=4, epochs=1, milestones=(), device="cpu", progress=False,
                run_dir=str(tmp_path / "run") if tmp_path is not None else "outputs/pretrain")
    return PretrainConfig(**{**base, **overrides})


def test_registered_selectable_and_the_config_round_trips():
    assert "mamp" in available_methods()
    config = mamp_config()
    assert isinstance(build_method(config), MAMP)
    again = PretrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.options == SMALL and again.optimizer == "adamw"
    old = {**config.to_dict(), "schema": 1}
    del old["options"], old["optimizer"]  # schema 1, written before the optimizer and MAMP's own field
    assert PretrainConfig.load(old).options == MAMPConfig() and PretrainConfig.load(old).optimizer == "sgd"
    paper = PretrainConfig.paper("mamp")
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.options.depth) == ("adamw", 1e-3, 0.05, 8)
    with pytest.raises(ValueError, match="unknown method"):
        ContrastConfig(method="moco")
    with pytest.raises(ValueError, match="optimizer"):
        mamp_config(optimizer="adam")
    with pytest.raises(ValueError, match="mask_ratio"):
        MAMPConfig(mask_ratio=1.0)


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    config = mamp_config()
    model = build_model(config)
    optimizer = make_optimization(config, model, torch.device("cpu"))[0]
    x = walks()
    seen = []
    for _ in range(20):
        generator = torch.Generator().manual_seed(0)  # the same views and masks every step
        seen.append(float(train_step(model, optimizer, x, generator)["loss"]))
    assert all(np.isfinite(seen))
    assert seen[-1] < 0.8 * seen[0] and min(seen[10:]) < min(seen[:5]), seen


def test_target_is_the_motion_of_exactly_the_masked_tokens():
    torch.manual_seed(0)
    model = MAMP(SMALL, num_joints=16).eval()
    x = walks(n=3, t=46)  # 46 frames: the last 2 are dropped (l = 4)
    out = model.masked_loss(x, torch.Generator().manual_seed(1))
    n, length = 3, 46 // 4 * 16
    assert out["masked"].shape == (n, length) and out["prediction"].shape == (n, length, 12)
    assert int(out["masked"].sum(dim=1)[0]) == length - int(length * 0.1)  # 90 % masked per sample
    # target: the frame differences inside each (segment, joint) token, normalised per token
    kept = x[:, :44]
    diff = torch.zeros_like(kept)
    diff[:, :-1] = kept[:, 1:] - kept[:, :-1]
    s, v = 5, 7  # segment 5 (frames 20..23), joint 7
    token = diff[:, 4 * s:4 * s + 4, v].reshape(n, 12)
    token = (token - token.mean(1, keepdim=True)) / (token.var(1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(out["target"][:, s * 16 + v], token, atol=1e-5)
    assert torch.equal(motion(kept), diff) and torch.equal(patchify(diff, 4)[:, s * 16 + v], diff[:, 20:24, v].reshape(n, 12))
    # the loss is the MSE of exactly the masked tokens: a perfect prediction there gives 0, whatever the rest
    per_token = (out["prediction"] - out["target"]).pow(2).mean(2)
    expected = per_token[out["masked"]].mean()
    assert torch.allclose(out["loss"], expected, atol=1e-6)


def test_the_encoder_never_sees_masked_tokens():
    torch.manual_seed(0)
    model = MAMP(SMALL, num_joints=16).eval()
    x = walks(n=2)
    seen = []
    handle = model.encoder.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    out = model.masked_loss(x, torch.Generator().manual_seed(3))
    handle.remove()
    visible, masked = out["visible"], out["masked"]
    assert seen[0].shape == (2, visible.shape[1], SMALL.dim) and visible.shape[1] == int(192 * 0.1)
    assert not masked.gather(1, visible).any()  # the encoder's tokens are all unmasked ones
    # changing the input under masked tokens leaves the encoder's output unchanged
    changed = x.clone()
    seg, joint = divmod(int(masked[0].nonzero()[0]), 16)
    changed[0, 4 * seg:4 * seg + 4, joint] += 5.0
    tokens_a = model.encoder.transform(model.encoder.tokens(x).gather(1, visible[..., None].expand(-1, -1, SMALL.dim)))
    tokens_b = model.encoder.transform(model.encoder.tokens(changed).gather(1, visible[..., None].expand(-1, -1, SMALL.dim)))
    assert torch.equal(tokens_a, tokens_b)


def test_encoders_give_pooled_features_of_every_token():
    torch.manual_seed(0)
    model = build_model(mamp_config())
    encoder = model.encoders()["cartesian"]
    assert set(model.encoders()) == {"cartesian"}
    assert encoder(walks(n=5, t=32)).shape == (5, SMALL.dim) == (5, encoder.out_dim)


def test_one_epoch_of_the_loop_with_health(tmp_path):
    result = pretrain(mamp_config(tmp_path, epochs=2), walks(n=12).numpy())
    assert len(result.history) == 2 and all(np.isfinite(m["loss"]) for m in result.history)
    for key in ("reconstruction", "retrieval_cartesian", "uniformity_cartesian", "spread_cartesian"):
        assert key in result.history[-1] and key in result.health_init
    assert isinstance(result.model, MAMP)
