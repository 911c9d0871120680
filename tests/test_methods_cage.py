"""InfoNCE, the memory bank and the CAGE contrastive model (GE-CLR, HSMB / ASMB / CSMB, C3L)."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from cagelib.methods import augment
from cagelib.methods.cage import CAGE, CROSS_MODES, PRESETS, ContrastConfig
from cagelib.typed import from_mapping
from cagelib.coordinates import spherical_coordinates
from cagelib.methods.losses import EMPTY, UNKNOWN, MemoryBank, info_nce, info_nce_logits
from cagelib.methods.encoders import AGCN, AGCNConfig

TINY = AGCNConfig.small(widths=(32, 64), strides=(1, 2))  # 2 units: fast on CPU


def gaits(n: int = 8, t: int = 16, seed: int = 1) -> torch.Tensor:
    """``n`` distinct synthetic walks ``(n, t, 16, 3)``: a shared pose plus per-sample oscillations."""
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(1, 1, 16, 3, generator=g) * 0.3
    phase = torch.rand(n, 1, 1, 1, generator=g) * 2 * math.pi
    freq = 0.2 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
    amplitude = 0.2 * torch.rand(n, 1, 16, 3, generator=g)
    frames = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1)
    return pose + amplitude * torch.sin(freq * frames + phase)


def make_model(method: str, seed: int = 0, augmentation=None, **overrides) -> CAGE:
    config = ContrastConfig.preset(method, queue_size=32, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CAGE(config, lambda: AGCN(TINY), augment=augmentation or augment.Crop())


def sgd_steps(model: CAGE, x: torch.Tensor, steps: int, lr: float = 0.1, seed: int = 0) -> list[dict]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.arange(x.shape[0])
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(x, generator, ids)
        out["loss"].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in out.items()})
    return history


# --- InfoNCE (Eq. 2) -----------------------------------------------------------------------------

def test_info_nce_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # K = 2, shared
    # t = 0.5. Row 0: positive 0.6/0.5 = 1.2, negatives 0 and -2. Row 1: positive 2, negatives 2 and 0.
    row0 = -1.2 + math.log(math.exp(1.2) + math.exp(0.0) + math.exp(-2.0))
    row1 = -2.0 + math.log(math.exp(2.0) + math.exp(2.0) + math.exp(0.0))
    loss = info_nce(q, k, negatives, temperature=0.5)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    logits = info_nce_logits(q, k, negatives, 0.5)
    assert torch.allclose(logits, torch.tensor([[1.2, 0.0, -2.0], [2.0, 2.0, 0.0]]))
    # masking row 1's first negative removes it from that row's denominator only
    mask = torch.tensor([[False, False], [True, False]])
    row1_masked = -2.0 + math.log(math.exp(2.0) + math.exp(0.0))
    masked = info_nce(q, k, negatives, 0.5, negative_mask=mask)
    assert masked.item() == pytest.approx((row0 + row1_masked) / 2, rel=1e-6)


def test_info_nce_matches_direct_formula_with_per_sample_negatives_and_mask():
    g = torch.Generator().manual_seed(0)
    n, k, d, t = 4, 6, 5, 0.2
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)
    q, key, negatives = unit(n, d), unit(n, d), unit(n, k, d)
    mask = torch.rand(n, k, generator=g) < 0.4
    expected = 0.0
    for i in range(n):
        positive = math.exp(float(q[i] @ key[i]) / t)
        denominator = positive + sum(math.exp(float(q[i] @ negatives[i, j]) / t) for j in range(k) if not mask[i, j])
        expected += -math.log(positive / denominator) / n
    assert info_nce(q, key, negatives, t, mask).item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_mask_equals_dropping_the_negative():
    g = torch.Generator().manual_seed(1)
    q, key = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    negatives = torch.randn(5, 4, generator=g)
    mask = torch.zeros(1, 5, dtype=torch.bool)
    mask[0, 2] = True
    kept = negatives[[0, 1, 3, 4]]
    assert torch.allclose(info_nce(q, key, negatives, 0.1, mask), info_nce(q, key, kept, 0.1))


def test_info_nce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="negatives"):
        info_nce(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4, 2, 3), 0.1)
    with pytest.raises(ValueError, match="query and positive_key"):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(4, 3), 0.1)


# --- MemoryBank --------------------------------------------------------------------------------

def test_memory_bank_is_a_fifo_that_wraps_around():
    size, dim = 5, 2
    bank = MemoryBank(size, dim)
    reference_features, reference_ids, pointer = [None] * size, [EMPTY] * size, 0
    g = torch.Generator().manual_seed(0)
    next_id = 0
    for batch in (3, 4, 7, 5, 1):  # fits; wraps; larger than the bank; exactly the bank; one
        rows = torch.randn(batch, dim, generator=g)
        ids = torch.arange(next_id, next_id + batch)
        next_id += batch
        bank.enqueue(rows, ids)
        for row, i in zip(rows, ids.tolist()):  # the definition: write one row at a time
            reference_features[pointer], reference_ids[pointer] = row / row.norm(), i
            pointer = (pointer + 1) % size
        assert bank.sample_ids.tolist() == reference_ids
        assert int(bank.pointer) == pointer
        filled = [j for j in range(size) if reference_ids[j] != EMPTY]
        assert torch.allclose(bank.features[filled], torch.stack([reference_features[j] for j in filled]))
        assert int(bank.num_filled()) == len(filled)
    assert torch.allclose(bank.features.norm(dim=1), torch.ones(size))
    bank.enqueue(torch.ones(2, dim))  # no ids -> UNKNOWN
    assert bank.sample_ids[[pointer, (pointer + 1) % size]].tolist() == [UNKNOWN, UNKNOWN]


def test_memory_bank_masks_empty_entries_and_own_stale_keys():
    bank = MemoryBank(6, 2)
    bank.enqueue(torch.ones(4, 2), torch.tensor([7, 3, 7, UNKNOWN]))  # entries 4 and 5 stay EMPTY
    query_ids = torch.tensor([7, 3, 9, UNKNOWN])
    mask = bank.negative_mask(query_ids, mask_own=True)
    assert mask.tolist() == [
        [True, False, True, False, True, True],  # sample 7: both stale copies of its own key dropped
        [False, True, False, False, True, True],
        [False, False, False, False, True, True],
        [False, False, False, False, True, True],  # an unknown query id never matches UNKNOWN entries
    ]
    assert bank.negative_mask(query_ids, mask_own=False).tolist() == [[False] * 4 + [True] * 2]
    assert bank.negative_mask(None).tolist() == [[False] * 4 + [True] * 2]


def test_memory_bank_state_is_in_buffers():
    bank = MemoryBank(4, 3)
    bank.enqueue(torch.randn(3, 3), torch.tensor([1, 2, 3]))
    state = bank.state_dict()
    assert set(state) == {"features", "sample_ids", "pointer"}
    copy = MemoryBank(4, 3)
    copy.load_state_dict(state)
    assert torch.equal(copy.features, bank.features) and int(copy.pointer) == 3
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        bank.enqueue(torch.zeros(2, 4))


# --- ContrastConfig ----------------------------------------------------------------------------

def test_config_presets_and_overrides():
    assert ContrastConfig.preset("cage").streams == ("cartesian", "spherical")
    assert ContrastConfig.preset("cage").bank_mode == "cooperation"
    assert ContrastConfig.preset("cage").cross_coordinate == "cartesian_guides_spherical"
    assert ContrastConfig(method="cage") == ContrastConfig.preset("cage")
    assert ContrastConfig.preset("spherical_acl").streams == ("spherical",)
    assert ContrastConfig().bank_mode == "none" and ContrastConfig().streams == ("cartesian",)
    custom = ContrastConfig.preset("cage", cross_coordinate="symmetric", streams=["spherical", "cartesian"])
    assert custom.cross_coordinate == "symmetric" and custom.streams == ("cartesian", "spherical")
    for name in PRESETS:  # JSON round trip
        config = ContrastConfig.preset(name, ambiguity_enqueue=3)
        assert from_mapping(ContrastConfig, json.loads(json.dumps(dataclasses.asdict(config)))) == config


@pytest.mark.parametrize("bad, match", [
    (dict(method="moco"), "unknown method"),
    (dict(method="geclr", cross_coordinate="symmetric"), "needs both streams"),
    (dict(method="cage", bank_mode="queue"), "bank_mode"),
    (dict(method="cage", streams=("polar",)), "streams"),
    (dict(method="hsmb", ambiguity_enqueue="half"), "ambiguity_enqueue"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        ContrastConfig(**bad)


def test_default_augmentations_follow_the_config():
    config = ContrastConfig.preset("hsmb", ambiguity_speed="down", speed_down_rate=0.5, queue_size=8)
    model = CAGE(config, lambda: AGCN(TINY))
    assert isinstance(model.augment, augment.Compose)
    assert isinstance(model.ambiguity, augment.AmbiguityTransform)
    assert model.ambiguity.speed == "down" and model.ambiguity.speed_down_rate == 0.5
    assert CAGE(ContrastConfig(queue_size=8), lambda: AGCN(TINY)).ambiguity is None  # GE-CLR needs none


# --- CAGE model --------------------------------------------------------------------------------

def test_momentum_update_math():
    model = make_model("c3l", momentum=0.9)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in list(model.query_nets.parameters()) + list(model.momentum_nets.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
    query = [p.detach().clone() for p in model.query_nets.parameters()]
    key = [p.detach().clone() for p in model.momentum_nets.parameters()]
    model.momentum_update()
    for q, k, new in zip(query, key, model.momentum_nets.parameters()):
        assert torch.allclose(new, 0.9 * k + 0.1 * q, atol=1e-6)


def test_momentum_encoders_start_as_copies_and_get_no_gradient():
    model = make_model("cage")
    for q, k in zip(model.query_nets.parameters(), model.momentum_nets.parameters()):
        assert torch.equal(q, k) and not k.requires_grad
    out = model(gaits(), torch.Generator().manual_seed(0), torch.arange(8))
    out["loss"].backward()
    assert all(p.grad is None for p in model.momentum_nets.parameters())
    for stream in ("cartesian", "spherical"):
        grads = [p.grad for p in model.query_nets[stream].parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(not v.requires_grad for k, v in out.items() if k != "loss") and out["loss"].requires_grad


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_preset_learns_on_a_fixed_batch(method):
    # Crop only: the default Joint Jittering (10 of 16 joints through a random U(-1, 1) matrix) makes
    # 8 synthetic clips too hard to separate in 30 steps; this test checks the losses and gradients.
    # m = 0.99 instead of 0.999 so that the keys follow the query encoder within 30 steps.
    history = sgd_steps(make_model(method, momentum=0.99), gaits(), steps=30)
    losses = [h["loss"] for h in history]
    assert all(math.isfinite(v) for v in losses)
    first = sum(losses[4:9]) / 5  # after the 32-entry bank has filled (4 batches of 8 keys)
    last = sum(losses[-5:]) / 5
    assert last < 0.85 * first, f"{method}: loss did not fall ({first:.3f} -> {last:.3f})"


def test_hsmb_enqueues_the_ambiguity_features_beside_the_keys():
    x, ids = gaits(), torch.arange(8)
    for enqueue, expected_count in (("all", 8), (3, 3)):
        model = make_model("hsmb", ambiguity_enqueue=enqueue)
        generator = torch.Generator().manual_seed(5)
        replay = torch.Generator()
        replay.set_state(generator.get_state())
        out = model(x, generator, ids)
        bank = model.memory_banks["cartesian"]
        unknown = bank.sample_ids == UNKNOWN
        assert int((bank.sample_ids >= 0).sum()) == 8 and int(unknown.sum()) == expected_count
        # the same random draws: two views, then the ambiguity view, embedded by the momentum encoder
        model.augment(x, replay), model.augment(x, replay)
        ambiguity_view = model.ambiguity(x, replay)
        with torch.no_grad():
            z_tilde = model.momentum_nets["cartesian"](ambiguity_view)
        assert torch.allclose(bank.features[unknown], z_tilde[:expected_count], atol=1e-5)
        assert out["negatives"].item() == 8  # first step: the bank was empty, only this batch's z~
        assert model(x, generator, ids)["negatives"].item() == 7 + expected_count + 8  # own key masked


def test_asmb_negatives_are_the_batch_ambiguity_features():
    model = make_model("asmb")
    assert len(model.memory_banks) == 0
    generator = torch.Generator().manual_seed(0)
    for n in (8, 5):
        out = model(gaits(n=n), generator, torch.arange(n))
        assert out["negatives"].item() == n and "loss_base" not in out
        assert torch.equal(out["loss"].detach(), out["loss_positive"])


def test_mask_own_keys_removes_stale_copies_of_the_sample():
    x, ids = gaits(), torch.arange(8)
    for mask_own, expected in ((True, 32 - 4), (False, 32)):
        model = make_model("geclr", mask_own_keys=mask_own)
        generator = torch.Generator().manual_seed(0)
        for _ in range(4):  # the 32-entry bank now holds 4 stale keys of each of the 8 samples
            model(x, generator, ids)
        assert model(x, generator, ids)["negatives"].item() == expected
    model = make_model("geclr")  # without ids nothing can be masked
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        model(x, generator)
    assert model(x, generator)["negatives"].item() == 32


def test_losses_combine_as_eq_8_and_eq_11():
    model = make_model("cage", lambda_cartesian=0.5, lambda_spherical=2.0)
    generator, x, ids = torch.Generator().manual_seed(0), gaits(), torch.arange(8)
    model(x, generator, ids)
    out = model(x, generator, ids)
    expected = 0.5 * out["loss_cartesian"] + 2.0 * out["loss_spherical"] + out["loss_cross"]
    assert torch.allclose(out["loss"].detach(), expected, atol=1e-5)
    assert torch.allclose(out["loss_cartesian"] + out["loss_spherical"], out["loss_base"] + out["loss_positive"],
                          atol=1e-5)


@pytest.mark.parametrize("mode", CROSS_MODES)
def test_cross_coordinate_loss_matches_eq_10(mode):
    model = make_model("c3l" if mode != "none" else "custom", cross_coordinate=mode,
                       streams=("cartesian", "spherical"), bank_mode="none")  # C3L without C<->S is not C3L
    x, ids = gaits(), torch.arange(8)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        model(x, generator, ids)  # fill the banks
    model.eval()  # BN uses running statistics: a replay gives identical embeddings
    banks_before = {s: b.features.clone() for s, b in model.memory_banks.items()}
    replay = torch.Generator()
    replay.set_state(generator.get_state())
    out = model(x, generator, ids)
    if mode == "none":
        assert "loss_cross" not in out
        return
    for stream, bank in model.memory_banks.items():  # eval mode leaves the banks alone
        assert torch.equal(bank.features, banks_before[stream])
    view_query, view_key = model.augment(x, replay), model.augment(x, replay)
    spherical = lambda v: spherical_coordinates(v, phi_mode="unwrapped")
    with torch.no_grad():
        q = {"cartesian": model.query_nets["cartesian"](view_query),
             "spherical": model.query_nets["spherical"](spherical(view_query))}
        k = {"cartesian": model.momentum_nets["cartesian"](view_key),
             "spherical": model.momentum_nets["spherical"](spherical(view_key))}
    banks = model.memory_banks
    term = lambda qs, ks, bs: info_nce(q[qs], k[ks], banks[bs].features, 0.07, banks[bs].negative_mask(ids))
    expected = {
        "cartesian_guides_spherical": term("spherical", "cartesian", "cartesian"),
        "paper_literal": term("spherical", "cartesian", "spherical"),
        "symmetric": 0.5 * (term("spherical", "cartesian", "cartesian") + term("cartesian", "spherical", "spherical")),
    }[mode]
    assert torch.allclose(out["loss_cross"], expected, atol=1e-5)


def test_spherical_stream_is_finite_with_the_root_at_the_origin():
    x = gaits(t=16)
    x = x - x[:, :, :1]  # root exactly at the origin: r = 0 for joint 0
    x[:, :, 5] = 0.0  # another joint on the root
    x[:, 12:] = 0.0  # zero padding: every joint at the origin
    model = make_model("cage")
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        out = model(x, generator, torch.arange(8))
        out["loss"].backward()
        assert all(torch.isfinite(v).all() for v in out.values())
        assert all(torch.isfinite(p.grad).all() for p in model.query_nets["spherical"].parameters())


def test_encoders_maps_each_stream_to_its_query_encoder():
    model = make_model("cage")
    encoders = model.encoders()
    assert list(encoders) == ["cartesian", "spherical"]
    assert encoders["spherical"] is model.query_nets["spherical"].encoder
    assert encoders["cartesian"].out_dim == 16  # TINY: 64 * 0.25
    assert list(make_model("geclr").encoders()) == ["cartesian"]
