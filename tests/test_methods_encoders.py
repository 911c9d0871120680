"""A-GCN encoder, projection head and classifier: shapes, graph, gradients, learning, determinism, speed."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from cagelib.methods.encoders import AGCN, AGCNConfig, Classifier, ProjectionHead, adjacency_subsets
from cagelib.skeleton import EDGES, NUM_JOINTS


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and 2 threads on a busy 2-core machine are ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(n: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, t, NUM_JOINTS, 3, generator=torch.Generator().manual_seed(seed))


def test_full_config_matches_the_paper_and_outputs_256():
    torch.manual_seed(0)
    config = AGCNConfig()
    assert config.scaled_widths == (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)
    model = AGCN(config)
    assert len(model.units) == 10 and model.out_dim == 256
    seen = []
    model.units[-1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    y = model(batch(2, 12))
    assert y.shape == (2, 256) and torch.isfinite(y).all()
    assert seen[0] == (2, 256, 3, NUM_JOINTS)  # the temporal strides 2, 2 reduce 12 frames to 3


@pytest.mark.parametrize("t", [1, 37, 250])
def test_small_config_shapes_and_odd_lengths(t):
    torch.manual_seed(0)
    model = AGCN(AGCNConfig.small())
    assert model.out_dim == 64
    y = model(batch(3, t))
    assert y.shape == (3, model.out_dim) and torch.isfinite(y).all()


def test_width_multiplier_scales_widths_and_out_dim():
    config = AGCNConfig(width_multiplier=0.5)
    assert config.scaled_widths == (32, 32, 32, 32, 64, 64, 64, 128, 128, 128)
    assert AGCN(config).out_dim == 128


def test_bad_configs_and_inputs_raise():
    with pytest.raises(ValueError, match="equally long"):
        AGCNConfig(widths=(64, 64), strides=(1,))
    with pytest.raises(ValueError, match="odd"):
        AGCNConfig(temporal_kernel=4)
    with pytest.raises(ValueError, match="num_joints"):
        AGCN(AGCNConfig.small(num_joints=25))
    with pytest.raises(ValueError, match=r"\(N, T, 16, 3\)"):
        AGCN(AGCNConfig.small())(torch.zeros(2, 10, 25, 3))


def test_adjacency_subsets_are_identity_inward_outward_column_normalised():
    a = adjacency_subsets()
    assert a.shape == (3, NUM_JOINTS, NUM_JOINTS)
    assert torch.equal(a[0], torch.eye(NUM_JOINTS))
    inward, outward = a[1], a[2]
    # every non-zero entry is a skeleton edge, in the stated direction; together they cover all edges
    assert {(int(v), int(w)) for v, w in inward.nonzero()} == {(c, p) for p, c in EDGES}
    assert {(int(v), int(w)) for v, w in outward.nonzero()} == {(p, c) for p, c in EDGES}
    for sub in (inward, outward):  # columns sum to 1 where a joint receives messages, else 0
        sums = sub.sum(dim=0)
        receives = (sub > 0).any(dim=0)
        assert torch.allclose(sums[receives], torch.ones(int(receives.sum())))
        assert (sums[~receives] == 0).all()
    # the root (0) gathers from its three children equally; a child gets all of its parent's message
    assert torch.allclose(inward[[1, 10, 13], 0], torch.full((3,), 1 / 3))
    assert outward[0, 1] == 1 and outward[2, 4] == 1
    assert inward[:, 0].sum() == 1 and (inward[:, 3] == 0).all()  # joint 3 (head) has no child


def test_gradients_reach_learned_b_and_data_dependent_c():
    torch.manual_seed(0)
    model = AGCN(AGCNConfig.small())
    model(batch(2, 8)).pow(2).sum().backward()
    for unit in model.units:
        gcn = unit.gcn
        assert gcn.B.grad is not None and gcn.B.grad.abs().sum() > 0
        for emb in list(gcn.theta) + list(gcn.phi):
            assert emb.weight.grad is not None and emb.weight.grad.abs().sum() > 0
    # B starts small, around the fixed A
    assert torch.allclose(model.units[0].gcn.B.detach(), torch.full_like(model.units[0].gcn.B, 1e-6))


def test_ablation_flags_remove_b_and_c():
    model = AGCN(AGCNConfig.small(adaptive=False, data_dependent=False))
    gcn = model.units[0].gcn
    assert gcn.B is None and not hasattr(gcn, "theta")
    assert model(batch(2, 12)).shape == (2, model.out_dim)
    names = {name for name, _ in AGCN(AGCNConfig.small()).named_parameters()}
    assert "units.0.gcn.B" in names and "units.0.gcn.theta.0.weight" in names


def test_data_dependent_graph_differs_per_sample():
    torch.manual_seed(0)
    gcn = AGCN(AGCNConfig.small()).units[1].gcn
    seen = []
    gcn.theta[0].register_forward_hook(lambda m, i, o: seen.append(o))
    gcn(torch.randn(2, gcn.W[0].in_channels, 8, NUM_JOINTS))
    assert not torch.allclose(seen[0][0], seen[0][1])


def test_projection_head_is_an_unnormalised_mlp():
    head = ProjectionHead(64, 32, 16)
    assert [type(m) for m in head.net] == [nn.Linear, nn.ReLU, nn.Linear]
    z = head(torch.randn(5, 64))
    assert z.shape == (5, 16) and head.out_dim == 16
    assert not torch.allclose(z.norm(dim=1), torch.ones(5))
    assert ProjectionHead()(torch.randn(2, 256)).shape == (2, 128)


def test_classifier_overfits_a_tiny_labelled_batch():
    torch.manual_seed(0)
    tiny = AGCNConfig.small(widths=(64, 128), strides=(1, 2))  # 2 units of 16, 32 channels
    model = Classifier(AGCN(tiny), num_classes=4)
    x, y = batch(8, 16, seed=1), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert model(x).shape == (8, 4)
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(dim=1) == y).float().mean() >= 0.75


def test_same_seed_same_model_and_output():
    def build_and_run():
        torch.manual_seed(123)
        model = Classifier(AGCN(AGCNConfig.small(dropout=0.1)), 4)
        out = model(batch(4, 30))
        out.sum().backward()
        return out, model.encoder.units[0].gcn.B.grad
    (a, ga), (b, gb) = build_and_run(), build_and_run()
    assert torch.equal(a, b) and torch.equal(ga, gb)
    torch.manual_seed(124)
    other = Classifier(AGCN(AGCNConfig.small(dropout=0.1)), 4)(batch(4, 30))
    assert not torch.equal(a, other)


def test_small_forward_is_fast_on_cpu():
    torch.manual_seed(0)
    model = AGCN(AGCNConfig.small()).eval()
    x = batch(8, 250)
    with torch.no_grad():
        model(x)  # warm-up
        start = time.perf_counter()
        model(x)
        elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"small A-GCN forward of (8, 250, 16, 3) took {elapsed:.2f}s on CPU"


def test_the_2s_agcn_embedding_init_is_kaiming_fan_out_and_the_default_is_unchanged():
    import math

    from cagelib.methods.encoders import AGCN, AGCNConfig

    torch.manual_seed(0)
    default = AGCN(AGCNConfig())
    torch.manual_seed(0)
    again = AGCN(AGCNConfig(embedding_init="pytorch"))
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), again.state_dict().values()))
    torch.manual_seed(0)
    original = AGCN(AGCNConfig(embedding_init="2s-agcn"))
    unit = [m for m in original.modules() if hasattr(m, "theta")][1]  # a 64 -> 64 unit: theta has 16 outputs
    theta = unit.theta[0].weight.detach()  # (16, 64, 1, 1): fan_out = 16, Kaiming std sqrt(2 / 16)
    assert abs(float(theta.std()) - math.sqrt(2 / theta.shape[0])) < 0.05 and not unit.theta[0].bias.any()
    downs = [m for m in original.modules() if hasattr(m, "down") and not isinstance(m.down, torch.nn.Identity)]
    conv = downs[0].down[0]
    assert abs(float(conv.weight.detach().std()) - math.sqrt(2 / conv.weight.shape[0])) < 0.05 and not conv.bias.any()
    with pytest.raises(ValueError, match="embedding_init"):
        AGCNConfig(embedding_init="xavier")
