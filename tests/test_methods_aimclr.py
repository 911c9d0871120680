"""AimCLR (cagelib.methods.aimclr): extreme views, EADM, D3M, nearest-neighbours mining, in the shared loop."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cagelib.data.synthetic import synthetic_gaits
from cagelib.methods.aimclr import (AimCLR, AimCLRConfig, ExtremeAugment, attention_drop, d3m_divergence,
                                    energy_attention, mine_neighbours, spatial_flip)
from cagelib.methods.augment import valid_lengths
from cagelib.methods.cage import ContrastConfig
from cagelib.methods.encoders import AGCNConfig
from cagelib.methods.losses import contrastive_cross_entropy, info_nce_logits
from cagelib.methods.registry import available_methods, build_method
from cagelib.pretrain.config import PretrainConfig, build_model
from cagelib.pretrain.loop import announce_epoch, make_optimization, pretrain, train_step
from cagelib.skeleton import LEFT_RIGHT_PAIRS

torch.set_num_threads(1)
SMALL = AGCNConfig.small()


def aimclr_config(tmp_path=None, queue_size: int = 64, aimclr: AimCLRConfig | None = None, **overrides):
    base = dict(contrast=ContrastConfig(method="aimclr", queue_size=queue_size), model=SMALL,
                options=aimclr or AimCLRConfig(), batch_size=8, epochs=1, milestones=(), device="cpu",
                progress=False, run_dir=str(tmp_path / "run") if tmp_path is not None else "outputs/pretrain")
    return PretrainConfig(**{**base, **overrides})


def gaits(n: int = 8, t: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(synthetic_gaits(n, t, seed=seed))  # (n, t, 16, 3), zero-padded


def test_registered_built_through_the_registry_and_the_config_round_trips():
    assert "aimclr" in available_methods()
    config = aimclr_config(aimclr=AimCLRConfig(topk=2, blur_sigma=(0.5, 1.0)))
    method = build_method(config)
    assert isinstance(method, AimCLR) and set(method.encoders()) == {"cartesian"}
    again = PretrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.options.blur_sigma == (0.5, 1.0)
    paper = PretrainConfig.paper("aimclr")
    assert (paper.epochs, paper.milestones, paper.options.mining_epoch) == (300, (250,), 150)
    for bad in (dict(topk=0), dict(flip_p=1.5), dict(blur_kernel=4), dict(views="nope")):
        with pytest.raises(ValueError, match="AimCLRConfig"):
            AimCLRConfig(**bad)
    with pytest.raises(ValueError, match="one stream"):
        build_method(aimclr_config(contrast=ContrastConfig(method="aimclr", streams=("cartesian", "spherical"))))


def test_flip_swaps_the_left_right_pairs_and_is_an_involution():
    x = torch.randn(4, 6, 16, 3)
    g = torch.Generator().manual_seed(0)
    flipped = spatial_flip(x, g, p=1.0)
    for left, right in LEFT_RIGHT_PAIRS:
        assert torch.equal(flipped[:, :, left], x[:, :, right]) and torch.equal(flipped[:, :, right], x[:, :, left])
    for centre in (0, 1, 2, 3):
        assert torch.equal(flipped[:, :, centre], x[:, :, centre])
    assert torch.equal(spatial_flip(flipped, g, p=1.0), x)
    mirrored = spatial_flip(x, g, p=1.0, mirror=True)
    assert torch.equal(mirrored[:, :, 4, 0], -x[:, :, 7, 0]) and torch.equal(spatial_flip(mirrored, g, 1.0, True), x)
    assert torch.equal(spatial_flip(x, g, p=0.0), x)
    some = spatial_flip(torch.randn(64, 2, 16, 3), torch.Generator().manual_seed(1), p=0.5)
    assert some.shape == (64, 2, 16, 3)


def test_extreme_views_are_batched_seeded_and_keep_zero_padding():
    x = gaits(16, 32)
    aug = ExtremeAugment(AimCLRConfig())
    a, b = aug(x, torch.Generator().manual_seed(3)), aug(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(4)))
    assert (valid_lengths(a) <= valid_lengths(x)).all()  # nothing is written into the padding
    # each extreme transform alone: axis mask zeroes exactly one axis, blur keeps a constant sequence constant
    only = dict(flip_p=0.0, time_flip_p=0.0, noise_p=0.0, blur_p=0.0, axis_mask_p=0.0, shear=0.0,
                rotate_degrees=0.0, rotate_minor_degrees=0.0, padding_ratio=10**6)
    masked = ExtremeAugment(AimCLRConfig(**{**only, "axis_mask_p": 1.0}))(x, torch.Generator().manual_seed(0))
    zero_axes = (masked == 0).flatten(1, 2).all(dim=1).sum(dim=1)  # (N,) axes that are all zero
    assert (zero_axes == 1).all()
    constant = torch.ones(2, 40, 16, 3)
    blurred = ExtremeAugment(AimCLRConfig(**{**only, "blur_p": 1.0}))(constant, torch.Generator().manual_seed(0))
    assert torch.allclose(blurred[:, 7:-7], constant[:, 7:-7], atol=1e-6)  # a normalised kernel
    reversed_ = ExtremeAugment(AimCLRConfig(**{**only, "time_flip_p": 1.0}))(x, torch.Generator().manual_seed(0))
    length = int(valid_lengths(x[:1]))
    assert torch.allclose(reversed_[0, :length], x[0, :length].flip(0), atol=1e-6)  # body frame: x - root + root


def test_eadm_drops_exactly_the_most_attended_joints_and_activations():
    g = torch.Generator().manual_seed(0)
    feature_map = torch.randn(3, 8, 6, 16, generator=g)  # (N, C, T', V)
    feature_map[:, :, :, 5] += 6.0  # joint 5 stands out in every channel and frame
    dropped, joint_keep, element_keep = attention_drop(feature_map, threshold=0.7)
    attention = energy_attention(feature_map)
    joint_attention = attention.mean(dim=(1, 2))  # (N, V)
    assert not joint_keep[:, 5].any() and joint_keep.sum() > 0
    assert torch.equal(joint_keep, joint_attention < 0.7)
    for n in range(3):  # every dropped joint is more attended than every kept one
        assert joint_attention[n][~joint_keep[n]].min() > joint_attention[n][joint_keep[n]].max()
    assert torch.equal(element_keep, attention < 0.7)
    assert attention[~element_keep].min() > attention[element_keep].max()
    assert (dropped[:, :, :, 5] == 0).all() and (dropped[~element_keep] == 0).all()
    kept = joint_keep[:, None, None, :] & element_keep  # (N, C, T', V) survivors, rescaled
    scale = (joint_keep.numel() / joint_keep.sum()) * (element_keep.numel() / element_keep.sum())
    assert torch.allclose(dropped[kept], feature_map[kept] * scale)


def test_mined_neighbours_are_the_nearest_in_the_bank():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(50, 16, generator=g), dim=1)  # (K, D)
    query, key = (F.normalize(torch.randn(4, 16, generator=g), dim=1) for _ in range(2))
    logits = info_nce_logits(query, key, bank, 0.07)  # (N, 1 + K)
    mined = mine_neighbours([logits], topk=3)
    nearest = (query @ bank.T).argsort(dim=1, descending=True)[:, :3]  # brute force (N, 3)
    expected = torch.zeros(4, 50, dtype=torch.bool).scatter(1, nearest, True)
    assert torch.equal(mined, expected)
    # a masked entry (empty or the query's own stale key) is never mined, even if it is the nearest
    mask = torch.zeros(4, 50, dtype=torch.bool).scatter(1, nearest[:, :1], True)
    masked = mine_neighbours([info_nce_logits(query, key, bank, 0.07, mask)], topk=1)
    assert torch.equal(masked, torch.zeros(4, 50, dtype=torch.bool).scatter(1, nearest[:, 1:2], True))
    # the union over the views (z, z_e, z_ed) as the code
    other = info_nce_logits(key, key, bank, 0.07)
    union = mine_neighbours([logits, other], topk=1)
    assert torch.equal(union, mine_neighbours([logits], 1) | mine_neighbours([other], 1))


def test_d3m_is_zero_for_equal_distributions_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 20, generator=g)
    assert float(d3m_divergence(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(d3m_divergence(logits, logits + 3.0)) == pytest.approx(0.0, abs=1e-6)  # same softmax
    other = torch.randn(5, 20, generator=g).requires_grad_(True)
    divergence = d3m_divergence(logits, other)
    expected = F.kl_div(F.log_softmax(other, 1), F.log_softmax(logits, 1), log_target=True, reduction="batchmean")
    assert float(divergence.detach()) > 0 and torch.allclose(divergence, expected, atol=1e-6)
    divergence.backward()
    assert torch.isfinite(other.grad).all()
    masked = logits.clone()
    masked[:, 10:] = float("-inf")  # empty bank entries in both distributions
    changed = masked.clone().requires_grad_(True)
    value = d3m_divergence(masked, changed * 0.5)
    value.backward()
    assert torch.isfinite(value) and float(value.detach()) > 0 and torch.isfinite(changed.grad).all()


def test_mining_starts_at_the_configured_epoch_and_loss_is_infonce_before():
    torch.manual_seed(0)
    model = build_model(aimclr_config(aimclr=AimCLRConfig(mining_epoch=2)))
    model.memory_bank.enqueue(F.normalize(torch.randn(64, 128), dim=1))  # a full bank of unknown samples
    x = gaits()
    model.eval()  # the bank and momentum encoder stay as they are
    announce_epoch(model, 1)
    before = model(x, torch.Generator().manual_seed(0), torch.arange(8))
    announce_epoch(model, 2)
    after = model(x, torch.Generator().manual_seed(0), torch.arange(8))
    assert float(before["mined"]) == 0 and 1 <= float(after["mined"]) <= 3
    assert float(after["loss_info"]) != float(before["loss_info"])
    assert float(after["loss_d3m"]) == float(before["loss_d3m"]) > 0  # same views, same distributions
    # before mining L_N is InfoNCE of the normal view's query against its key and the queue
    g = torch.Generator().manual_seed(0)
    x_q, x_k = model.augment(x, g), model.augment(x, g)
    logits = info_nce_logits(model.query_net(x_q), model.momentum_net(x_k), model.memory_bank.features, 0.07)
    assert float(before["loss_info"]) == pytest.approx(float(contrastive_cross_entropy(logits).detach()), rel=1e-5)


def test_loss_falls_on_a_fixed_batch():
    # as CAGE's test: a 32-entry bank (full after 4 steps of 8 keys), m = 0.99 so that the keys follow
    # the query encoder within 30 steps; the views are drawn afresh every step
    config = aimclr_config(queue_size=32, contrast=ContrastConfig(method="aimclr", queue_size=32, momentum=0.99))
    model = build_model(config)
    optimizer = make_optimization(config, model, torch.device("cpu"))[0]
    x, generator = gaits(), torch.Generator().manual_seed(0)
    seen = []
    for _ in range(30):
        out = train_step(model, optimizer, x, generator, torch.arange(8))
        seen.append(float(out["loss"]))
    assert all(np.isfinite(seen)) and np.mean(seen[-5:]) < 0.85 * np.mean(seen[4:9]), seen
    assert all(p.grad is None for p in model.momentum_net.parameters())  # f^ moves by momentum only
    assert int(model.memory_bank.num_filled()) == 32


def test_embed_and_encoders_follow_the_representation():
    torch.manual_seed(0)
    model = build_model(aimclr_config(representation="root_velocity")).eval()
    x = gaits(5)
    assert model.embed(x, "cartesian").shape == (5, 128)
    assert torch.allclose(model.embed(x, "cartesian").norm(dim=1), torch.ones(5), atol=1e-5)
    encoder = model.encoders()["cartesian"]
    assert encoder(x).shape == (5, encoder.out_dim) == (5, 64)
    spherical = build_model(aimclr_config(contrast=ContrastConfig(method="aimclr", streams=("spherical",))))
    assert set(spherical.encoders()) == {"spherical"}
    assert torch.isfinite(spherical(x, torch.Generator().manual_seed(0))["loss"])


def test_pretrain_with_health_mines_from_its_epoch_and_resumes_exactly(tmp_path):
    data = synthetic_gaits(16, 32, seed=2)
    config = aimclr_config(tmp_path, epochs=3, aimclr=AimCLRConfig(mining_epoch=1))
    full = pretrain(replace(config, run_dir=str(tmp_path / "full")), data)
    history = full.history
    assert len(history) == 3 and all(np.isfinite(m["loss"]) for m in history)
    assert history[0]["mined"] == 0 and history[1]["mined"] > 0 and history[2]["mined"] > 0
    for key in ("retrieval_cartesian", "alignment_cartesian", "uniformity_cartesian", "spread_cartesian"):
        assert key in history[-1] and key in full.health_init
    part = replace(config, epochs=1, run_dir=str(tmp_path / "part"))
    pretrain(part, data)
    resumed = pretrain(replace(part, epochs=3), data, resume=True)
    drop = ("seconds",)
    assert ([{k: v for k, v in m.items() if k not in drop} for m in resumed.history]
            == [{k: v for k, v in m.items() if k not in drop} for m in history])
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_the_extreme_rotation_turns_as_the_code():
    """AimCLR's random_rotate: per axis R (its code's matrices), then R = R.T, then seq @ R, x then y then z."""
    import math
    import numpy as np

    from cagelib.methods.aimclr import rotation_matrix

    def code_matrix(axis, a):
        c, s = math.cos(a), math.sin(a)
        r = {0: [[1, 0, 0], [0, c, s], [0, -s, c]], 1: [[c, 0, -s], [0, 1, 0], [s, 0, c]],
             2: [[c, s, 0], [-s, c, 0], [0, 0, 1]]}[axis]
        return np.array(r).T

    angles = torch.tensor([[0.4, 0.1, -0.3], [0.02, 0.5, 0.2]], dtype=torch.float64)
    seq = np.random.default_rng(0).normal(size=(5, 3))
    for n in range(2):
        expected = seq
        for axis in range(3):
            expected = expected @ code_matrix(axis, float(angles[n, axis]))
        ours = torch.from_numpy(seq) @ rotation_matrix(angles, as_code=True)[n]
        assert np.allclose(ours.numpy(), expected, atol=1e-12)
        other = torch.from_numpy(seq) @ rotation_matrix(angles, as_code=False)[n]
        assert not np.allclose(other.numpy(), expected, atol=1e-3)  # cagelib's first version turned x, z the other way
    assert AimCLRConfig().time_flip_p == 0.0 and AimCLRConfig().rotate_as_code


def test_a_run_saved_before_the_rotation_fix_keeps_its_rotation():
    from cagelib.pretrain.config import PretrainConfig

    saved = PretrainConfig.paper("aimclr").to_dict()
    saved["schema"] = 2
    saved["options"] = {k: v for k, v in saved["options"].items() if k != "rotate_as_code"} | {"time_flip_p": 0.5}
    loaded = PretrainConfig.load(saved)
    assert loaded.options.rotate_as_code is False and loaded.options.time_flip_p == 0.5
    assert PretrainConfig.load(PretrainConfig.paper("aimclr").to_dict()).options.rotate_as_code is True
