"""3s-CrosSCLR (cagelib.methods.crossclr): joint, motion and bone streams, cross-view knowledge mining, as a
registered method of the shared loop."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cagelib.methods.cage import ContrastConfig
from cagelib.typed import from_mapping
from cagelib.methods.crossclr import STREAMS, CrossCLR, CrossCLRConfig, bone_stream, mine_topk, motion_stream
from cagelib.methods.encoders import AGCN, AGCNConfig
from cagelib.methods.registry import available_methods, build_method
from cagelib.pretrain.config import PretrainConfig
from cagelib.pretrain.loop import pretrain, train_step
from cagelib.skeleton import PARENTS, ROOT

from test_methods_cage import gaits  # the shared synthetic walks

TINY = AGCNConfig.small(widths=(16, 32), strides=(1, 2))




def make_model(cross_epoch: int = 100, queue_size: int = 32, momentum: float = 0.99, seed: int = 0,
               **overrides) -> CrossCLR:
    config = CrossCLRConfig(cross_epoch=cross_epoch, **overrides)
    contrast = ContrastConfig(method="crossclr", queue_size=queue_size, momentum=momentum)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CrossCLR(config, contrast, lambda: AGCN(TINY))


def crossclr_config(tmp_path=None, **overrides) -> PretrainConfig:
    base = dict(contrast=ContrastConfig(method="crossclr", queue_size=16), model=TINY, batch_size=4, epochs=2,
                milestones=(), device="cpu", progress=False,
                run_dir=str(tmp_path / "run") if tmp_path is not None else "outputs/pretrain")
    return PretrainConfig(**{**base, **overrides})


def test_registered_selectable_and_the_config_round_trips():
    assert "crossclr" in available_methods()
    config = crossclr_config(options=CrossCLRConfig(cross_epoch=3, topk=2))
    model = build_method(config)
    assert isinstance(model, CrossCLR) and model.cross_epoch == 3
    again = PretrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.options.topk == 2
    assert build_method(crossclr_config(epochs=10)).cross_epoch == 5  # None: half the run
    paper = PretrainConfig.paper("crossclr")
    assert (paper.epochs, paper.milestones, paper.batch_size, paper.options.cross_epoch) == (300, (250,), 128, 150)
    for bad in (dict(topk=0), dict(cross_epoch=-1), dict(views="nope")):
        with pytest.raises(ValueError, match="CrossCLRConfig"):
            CrossCLRConfig(**bad)
    with pytest.raises(ValueError, match="unknown fields"):
        from_mapping(CrossCLRConfig, {"top_k": 1})


def joints_from_bones(bones: torch.Tensor, root_position: torch.Tensor) -> torch.Tensor:
    """Walk the tree from the root: ``x_v = x_parent(v) + bone_v`` (parents come before children in
    cagelib.skeleton's order is not assumed: repeat until every joint is placed)."""
    joints = torch.zeros_like(bones)
    joints[:, :, ROOT] = root_position
    placed = {ROOT}
    while len(placed) < len(PARENTS):
        for v, p in enumerate(PARENTS):
            if v not in placed and p in placed:
                joints[:, :, v] = joints[:, :, p] + bones[:, :, v]
                placed.add(v)
    return joints


@pytest.mark.parametrize("representation", ["first_frame", "root_relative"])
def test_bone_vectors_sum_back_to_the_joints_along_the_tree(representation):
    x = gaits(n=3, t=5) + torch.randn(3, 5, 1, 3)  # the root away from the origin
    if representation == "root_relative":
        x = x - x[:, :, ROOT:ROOT + 1]
    bones = bone_stream(x, representation)
    assert bones.shape == x.shape
    for v, p in enumerate(PARENTS):
        if p >= 0:  # a bone is child minus parent
            assert torch.allclose(bones[:, :, v], x[:, :, v] - x[:, :, p])
    assert torch.equal(bones[:, :, ROOT], x[:, :, ROOT])  # the root's bone is the root itself
    assert torch.allclose(joints_from_bones(bones, bones[:, :, ROOT]), x, atol=1e-6)


def test_root_velocity_bones_hang_from_the_origin_and_keep_the_velocity():
    x = gaits(n=2, t=4)
    x[:, :, ROOT] = torch.tensor([1.5, 0.0, -0.5])  # a velocity, not a position
    bones = bone_stream(x, "root_velocity")
    assert torch.equal(bones[:, :, ROOT], x[:, :, ROOT])
    rebuilt = joints_from_bones(bones, torch.zeros(2, 4, 3))  # the other joints are root-relative
    assert torch.allclose(rebuilt[:, :, ROOT + 1:], x[:, :, ROOT + 1:], atol=1e-6)


def test_the_motion_stream_is_the_frame_difference_and_stops_at_padding():
    x = gaits(n=2, t=6)
    m = motion_stream(x)
    assert torch.allclose(m[:, :-1], x[:, 1:] - x[:, :-1]) and torch.equal(m[:, -1], torch.zeros_like(m[:, -1]))
    padded = x.clone()
    padded[1, 4:] = 0  # sample 1 has 4 valid frames
    m = motion_stream(padded)
    assert torch.allclose(m[1, :3], x[1, 1:4] - x[1, :3]) and not m[1, 3:].any()  # no jump into the padding
    model = make_model()
    assert torch.equal(model.stream_input(x, "motion"), motion_stream(x))
    assert torch.equal(model.stream_input(x, "bone"), bone_stream(x, model.representation))
    assert model.stream_input(x, "joint") is x


def test_mined_neighbours_are_the_top_k_of_the_other_streams_bank():
    similarities = torch.tensor([[0.1, 0.9, 0.5, 0.95], [0.3, -0.2, 0.8, 0.7]])
    mask = torch.tensor([[False, False, False, True]])  # entry 3 empty (or the sample's own): never mined
    mined = mine_topk(similarities, mask, 2)
    assert mined.tolist() == [[False, True, True, False], [True, False, True, False]]  # the next best instead

    # in the model: the positives of L_u<-v are the top-k of s_v = z_v M_v^T, mined in v's bank
    model = make_model(cross_epoch=0, topk=2).eval()  # eval: no momentum update, no enqueue
    x, ids = gaits(), torch.arange(8)
    g = torch.Generator().manual_seed(5)
    for stream in STREAMS:  # banks of 32 entries of known features, ids 100.. (never a query's own)
        model.memory_banks[stream].enqueue(F.normalize(torch.randn(32, 128, generator=g), dim=1),
                                           torch.arange(100, 132))
    model.set_epoch(0)
    out = model(x, torch.Generator().manual_seed(0), ids)
    generator = torch.Generator().manual_seed(0)  # the same views again
    view_q, view_k = model.augment(x, generator), model.augment(x, generator)
    with torch.no_grad():
        q = {s: model.query_nets[s](model.stream_input(view_q, s)) for s in STREAMS}
        k = {s: model.momentum_nets[s](model.stream_input(view_k, s)) for s in STREAMS}
    tau = model.contrast.temperature
    for u in STREAMS:
        s_u = q[u] @ model.memory_banks[u].features.T  # (N, K)
        terms = []
        for v in (s for s in STREAMS if s != u):
            s_v = q[v] @ model.memory_banks[v].features.T
            top = s_v.topk(2, dim=1).indices  # (N, 2) the mined entries, in v's space
            logits = torch.cat([(q[u] * k[u]).sum(1, keepdim=True), s_u, s_u * s_v], dim=1) / tau  # (N, 1 + 2K)
            log_p = F.log_softmax(logits, dim=1)
            positives = torch.cat([log_p[:, :1], log_p[:, 1:33].gather(1, top), log_p[:, 33:].gather(1, top)], dim=1)
            terms.append(-positives.mean(dim=1).mean())
        assert torch.allclose(out[f"loss_{u}"], torch.stack(terms).mean(), atol=1e-5), u
    assert float(out["mined"]) == 2.0 and float(out["cross"]) == 1.0

    # before the switch: no mined positives, no context, each stream's loss is SkeletonCLR's InfoNCE
    model.set_epoch(-1)
    out = model(x, torch.Generator().manual_seed(0), ids)
    for u in STREAMS:
        logits = torch.cat([(q[u] * k[u]).sum(1, keepdim=True), q[u] @ model.memory_banks[u].features.T], 1) / tau
        assert torch.allclose(out[f"loss_{u}"], F.cross_entropy(logits, torch.zeros(8, dtype=torch.long)), atol=1e-5)
    assert float(out["mined"]) == 0.0 and float(out["cross"]) == 0.0


def test_heads_are_not_shared_and_every_key_encoder_moves_in_cross_training():
    model = make_model(cross_epoch=0)
    pointers = [{p.data_ptr() for p in model.query_nets[s].parameters()} for s in STREAMS]
    assert all(not (a & b) for i, a in enumerate(pointers) for b in pointers[i + 1:])  # no parameter shared
    heads = [model.query_nets[s].head for s in STREAMS]
    assert heads[0] is not heads[1] and heads[1] is not heads[2]
    model.set_epoch(0)  # cross-view training
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {s: [p.clone() for p in model.momentum_nets[s].parameters()] for s in STREAMS}
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # the first step fills the banks; the mined positives act from the second on
        out = train_step(model, optimizer, gaits(), generator, torch.arange(8))
    assert float(out["cross"]) == 1.0 and float(out["mined"]) == 1.0
    for s in STREAMS:
        moved = [not torch.equal(a, b) for a, b in zip(before[s], model.momentum_nets[s].parameters())]
        assert any(moved), f"the {s} key encoder did not move"
        assert all(p.grad is None for p in model.momentum_nets[s].parameters())


def fixed_batch_losses(model: CrossCLR, steps: int, switch_at: int | None = None) -> list[float]:
    """Losses of ``steps`` SGD steps on one fixed batch; cross-view training from step ``switch_at`` on."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator, losses = torch.Generator().manual_seed(0), []
    for step in range(steps):
        model.set_epoch(1 if switch_at is not None and step >= switch_at else 0)
        losses.append(float(train_step(model, optimizer, gaits(), generator, torch.arange(8))["loss"]))
    assert all(np.isfinite(losses))
    return losses


def test_loss_falls_on_a_fixed_batch_single_view_then_cross_view():
    losses = fixed_batch_losses(make_model(cross_epoch=1), 30)  # SkeletonCLR in every stream
    first, last = np.mean(losses[4:9]), np.mean(losses[-5:])  # after the 32-entry banks have filled
    assert last < 0.85 * first, f"single-view: loss did not fall ({first:.3f} -> {last:.3f})"
    # cross-view training after a single-view start, as in a run (crop views: 8 synthetic clips under the
    # shear are too hard to tell apart in a few steps; this checks the mined loss and its gradients)
    losses = fixed_batch_losses(make_model(cross_epoch=1, views="crop"), 45, switch_at=15)[15:]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.85 * first, f"cross-view: loss did not fall ({first:.3f} -> {last:.3f})"


def test_encoders_embed_and_the_fused_three_stream_encoder():
    model = make_model().eval()
    x = gaits(n=5)
    encoders = model.encoders()
    assert list(encoders) == list(STREAMS)
    features = [encoders[s](model.stream_input(x, s)) for s in STREAMS]
    fused = model.fused_encoder()
    assert fused.out_dim == 3 * encoders["joint"].out_dim
    assert torch.allclose(fused(x), torch.cat(features, dim=1))
    for s in STREAMS:
        z = model.embed(x, s)
        assert z.shape == (5, 128) and torch.allclose(z.norm(dim=1), torch.ones(5))


def test_a_short_pretraining_with_health_switches_to_cross_training(tmp_path):
    result = pretrain(crossclr_config(tmp_path, epochs=2), gaits(n=12, t=16).numpy())
    history = result.history
    assert len(history) == 2 and all(np.isfinite(m["loss"]) for m in history)
    assert [m["cross"] for m in history] == [0.0, 1.0]  # cross-view training from half the run
    for s in STREAMS:
        for key in (f"retrieval_{s}", f"uniformity_{s}", f"loss_{s}"):
            assert key in history[-1]
        assert f"spread_{s}" in result.health_init
    assert isinstance(result.model, CrossCLR)
    resumed = pretrain(crossclr_config(tmp_path, epochs=3), gaits(n=12, t=16).numpy(), resume=True)
    assert resumed.history[-1]["cross"] == 1.0 and resumed.history[:2] == history


def test_the_lab_evaluates_each_stream_on_its_own_input(tmp_path):
    from cagelib.lab.evaluation import run_encoder

    result = pretrain(crossclr_config(tmp_path, epochs=1), gaits(n=8, t=16).numpy())
    x = gaits(n=3)
    encoder, transform, stream = run_encoder(result.run_dir)  # auto: the first stream
    assert (stream, transform) == ("joint", "cartesian")
    model = result.model.eval()
    for name in STREAMS:
        encoder, transform, _ = run_encoder(result.run_dir, name)
        expected = model.encoders()[name](model.stream_input(x, name))
        assert transform == "cartesian" and torch.allclose(encoder(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="two-stream"):
        run_encoder(result.run_dir, "both")
