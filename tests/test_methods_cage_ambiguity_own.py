"""ContrastConfig.ambiguity_own: a sample's own ambiguity feature z~_i in Eq. 7 (and HSMB's Eq. 5) as a
negative (as read), left out, or the positive; and CAGE's Cartesian stream trained by its own loss alone."""
from __future__ import annotations

import math

import pytest
import torch

from cagelib.methods import augment
from cagelib.methods.cage import CAGE, ContrastConfig
from cagelib.methods.encoders import AGCN, AGCNConfig

TINY = AGCNConfig.small(widths=(32, 64), strides=(1, 2))


def gaits(n: int = 8, t: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(1, 1, 16, 3, generator=g) * 0.3
    phase = torch.rand(n, 1, 1, 1, generator=g) * 2 * math.pi
    amplitude = 0.2 * torch.rand(n, 1, 16, 3, generator=g)
    frames = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1)
    return pose + amplitude * torch.sin(0.4 * frames + phase)


def model_of(method: str, own: str = "negative", seed: int = 0, **overrides) -> CAGE:
    config = ContrastConfig.preset(method, queue_size=32, momentum=0.99, ambiguity_own=own, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CAGE(config, lambda: AGCN(TINY), augment=augment.Crop())


def unit(n: int, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("own", ["negative", "masked", "positive"])
def test_positive_logits_follow_the_mode(own):
    model, t = model_of("csmb", own), 0.07
    q, k, z = unit(5, seed=1), unit(5, seed=2), unit(5, seed=3)
    mask = model._own_ambiguity(torch.arange(5), 5, 5, q.device)
    logits = model._positive_logits("cartesian", {"cartesian": q}, {"cartesian": k}, {"cartesian": z},
                                    {"cartesian": z}, mask)  # (N, 1 + N)
    positive = (q * (z if own == "positive" else k)).sum(1) / t
    assert torch.allclose(logits[:, 0], positive, atol=1e-6)
    expected = (q @ z.T) / t
    if own != "negative":
        expected = expected.masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))
    assert torch.equal(torch.isinf(logits[:, 1:]), torch.isinf(expected))
    finite = torch.isfinite(expected)
    assert torch.allclose(logits[:, 1:][finite], expected[finite], atol=1e-6)


def test_own_feature_found_by_sample_id_without_ids_on_the_diagonal():
    model = model_of("csmb", "masked")
    ids = torch.tensor([7, 3, 9])
    assert torch.equal(model._own_ambiguity(ids, 3, 3, torch.device("cpu")), torch.eye(3, dtype=torch.bool))
    assert torch.equal(model._own_ambiguity(None, 3, 3, torch.device("cpu")), torch.eye(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="sample_ids"):
        model._own_ambiguity(None, 3, 6, torch.device("cpu"))
    assert model_of("csmb")._own_ambiguity(ids, 3, 3, torch.device("cpu")) is None


def test_masked_drops_one_negative_per_query_in_each_ambiguity_mode():
    x, ids = gaits(), torch.arange(8)
    for method, negative_count in (("asmb", 8), ("hsmb", 8)):  # first step: empty bank, the batch's z~ only
        counts = {}
        for own in ("negative", "masked"):
            counts[own] = model_of(method, own)(x, torch.Generator().manual_seed(0), ids)["negatives"].item()
        assert counts == {"negative": negative_count, "masked": negative_count - 1}, method


def test_modes_change_only_the_positive_loss():
    x, ids = gaits(), torch.arange(8)
    out = {own: model_of("csmb", own)(x, torch.Generator().manual_seed(0), ids) for own in
           ("negative", "masked", "positive")}
    for own in ("masked", "positive"):
        assert torch.equal(out[own]["loss_base"], out["negative"]["loss_base"])  # Eq. 2 untouched
        assert not torch.allclose(out[own]["loss_positive"], out["negative"]["loss_positive"])
    # masking a negative can only lower L_Positive (the same positive, fewer terms in the denominator)
    assert out["masked"]["loss_positive"] < out["negative"]["loss_positive"]


@pytest.mark.parametrize("own", ["masked", "positive"])
def test_every_mode_learns(own):
    model = model_of("cage", own)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator, x, ids = torch.Generator().manual_seed(0), gaits(), torch.arange(8)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        out = model(x, generator, ids)
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < 0.9 * sum(losses[4:9])


def test_hsmb_refuses_own_as_positive():
    with pytest.raises(ValueError, match="Eq. 5"):
        ContrastConfig.preset("hsmb", ambiguity_own="positive")
    with pytest.raises(ValueError, match="ambiguity_own"):
        ContrastConfig.preset("csmb", ambiguity_own="sometimes")


def test_cage_cartesian_stream_trains_as_csmb():
    """C<->S in its default direction (Cartesian guides Spherical) has no gradient into the Cartesian stream,
    and l1 = 1: CAGE's Cartesian encoder follows CSMB's step for step (same seed, same draws; two code paths,
    so to float tolerance). Why C3L cannot show in a probe of the Cartesian stream (docs/decisions.md)."""
    x, ids = gaits(), torch.arange(8)
    models = {m: model_of(m) for m in ("csmb", "cage")}
    for m, model in models.items():
        optimizer = torch.optim.SGD(model.query_nets["cartesian"].parameters(), lr=0.1, momentum=0.9)
        other = [p for s, net in model.query_nets.items() if s != "cartesian" for p in net.parameters()]
        generator = torch.Generator().manual_seed(3)
        for _ in range(5):
            optimizer.zero_grad()
            for p in other:
                p.grad = None
            model(x, generator, ids)["loss"].backward()
            optimizer.step()
    a = models["csmb"].query_nets["cartesian"].state_dict()
    b = models["cage"].query_nets["cartesian"].state_dict()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5), name
    moved = models["csmb"].query_nets["cartesian"].state_dict()
    fresh = model_of("csmb").query_nets["cartesian"].state_dict()
    assert any(not torch.allclose(moved[n].float(), fresh[n].float()) for n in moved)  # it did train
