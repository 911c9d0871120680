"""ISC (cagelib.methods.isc): inter-skeleton contrast of a graph (A-GCN) and a sequence (bi-GRU) encoder, its
augmentations, as a registered method of the shared loop."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cagelib.methods.cage import ContrastConfig
from cagelib.methods.encoders import AGCN, AGCNConfig
from cagelib.methods.isc import ISC, STREAMS, ISCConfig, ISCViews, SequenceEncoder, crop_resize, joint_corruption
from cagelib.methods.registry import available_methods, build_method
from cagelib.pretrain.config import PretrainConfig
from cagelib.pretrain.loop import pretrain, train_step

from test_methods_cage import gaits  # the shared synthetic walks

TINY = AGCNConfig.small(widths=(16, 32), strides=(1, 2))




def make_model(queue_size: int = 32, momentum: float = 0.99, seed: int = 0, **overrides) -> ISC:
    contrast = ContrastConfig(method="isc", queue_size=queue_size, momentum=momentum)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ISC(ISCConfig(**overrides), contrast, TINY)


def isc_config(tmp_path=None, **overrides) -> PretrainConfig:
    base = dict(contrast=ContrastConfig(method="isc", queue_size=16), model=TINY, batch_size=4, epochs=2,
                milestones=(), device="cpu", progress=False,
                run_dir=str(tmp_path / "run") if tmp_path is not None else "outputs/pretrain")
    return PretrainConfig(**{**base, **overrides})


def test_registered_selectable_and_the_config_round_trips():
    assert "isc" in available_methods()
    config = isc_config(options=ISCConfig(gru_hidden=8, intra_weight=0.5))
    model = build_method(config)
    assert isinstance(model, ISC) and model.encoders()["sequence"].out_dim == 16
    again = PretrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.options.crop_ratio == (0.1, 1.0)
    paper = PretrainConfig.paper("isc")
    assert (paper.epochs, paper.milestones, paper.lr, paper.batch_size) == (451, (351,), 0.01, 64)
    assert (paper.options.gru_hidden, paper.options.gru_layers) == (1024, 3)
    for bad in (dict(crop_ratio=(0.5, 0.2)), dict(inter_weight=0.0), dict(pose_p=2.0), dict(views="nope")):
        with pytest.raises(ValueError, match="ISCConfig"):
            ISCConfig(**bad)


def test_crop_resize_has_the_right_length_and_stays_within_the_source_frames():
    t = 20
    ramp = torch.arange(1, t + 1, dtype=torch.float32).view(1, t, 1, 1).expand(64, t, 16, 3).clone()  # frame + 1
    ramp[32:, 12:] = 0  # the second half has 12 valid frames, then zero padding
    out = crop_resize(ramp, torch.Generator().manual_seed(0), (0.1, 1.0), min_frames=4) - 1.0  # frame numbers
    assert out.shape == (64, t, 16, 3)
    position = out[:, :, 0, 0]  # (N, T) the source position each output frame samples
    assert (position[:32] >= 0).all() and (position[:32] <= t - 1).all()
    assert (position[32:] >= 0).all() and (position[32:] <= 11).all()  # never reads the padding
    assert (position.diff(dim=1) >= -1e-5).all()  # in order: a resized crop, not a shuffle
    span = position[:, -1] - position[:, 0]
    assert span.min() >= 4 - 1 - 1e-5 - (4 / t) and span.max() > 10  # crops of different lengths, >= 4 frames
    assert len({round(float(s), 3) for s in span}) > 10
    # a crop of the whole sequence resized to its own length is the identity
    whole = crop_resize(gaits(n=3), torch.Generator().manual_seed(1), (1.0, 1.0), min_frames=1)
    assert torch.allclose(whole, gaits(n=3), atol=1e-6)
    # it matches F.interpolate(bilinear, align_corners=False) of the crop
    x = gaits(n=1, t=16)
    for frames in (16, 7):
        out = crop_resize(x, torch.Generator().manual_seed(2), (1.0, 1.0), min_frames=1, frames=frames)
        reference = F.interpolate(x.permute(0, 2, 3, 1).reshape(1, 48, 16, 1), size=(frames, 1), mode="bilinear",
                                  align_corners=False).reshape(1, 16, 3, frames).permute(0, 3, 1, 2)
        assert torch.allclose(out, reference, atol=1e-5)


def test_joint_corruption_touches_only_the_selected_joints():
    x = gaits(n=32) + 1.0  # no coordinate is 0
    out, mask = joint_corruption(x, torch.Generator().manual_seed(0), num_joints=10, zero_p=0.5, return_mask=True)
    assert mask.shape == (32, 16) and (mask.sum(dim=1) == 10).all()
    untouched = ~mask[:, None, :, None].expand_as(x)
    assert torch.equal(out[untouched], x[untouched])  # the other joints exactly as they were
    changed = (out != x).any(dim=(1, 3))  # (N, V)
    assert (changed == mask).all()  # every selected joint changed
    zeroed = (out == 0).all(dim=(1, 3))  # (N, V) joints zeroed in every frame
    by_sample = zeroed.any(dim=1)
    assert by_sample.any() and (~by_sample).any()  # some samples zeroed, the others got the random matrix
    assert torch.equal(zeroed[by_sample], mask[by_sample])
    # the matrix branch: the selected joints of a sample share one 3 x 3 matrix, in every frame
    i = int((~by_sample).nonzero()[0])
    joints = mask[i].nonzero().flatten()
    source, target = x[i][:, joints].reshape(-1, 3), out[i][:, joints].reshape(-1, 3)
    matrix = torch.linalg.lstsq(source, target).solution  # (3, 3)
    assert torch.allclose(source @ matrix, target, atol=1e-4) and matrix.abs().max() <= 1.0 + 1e-4


def test_isc_views_are_batched_and_mix_both_spatial_augmentations():
    views = ISCViews(ISCConfig(), "root_relative")
    x = gaits(n=64, t=24)
    x = x - x[:, :, :1]  # root-relative
    out = views(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    zero_joints = (out == 0).all(dim=(1, 3))[:, 1:].any(dim=1)  # a zeroed joint besides the root
    assert zero_joints.any() and (~zero_joints).any()
    again = views(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator alone decides


def test_the_inter_skeleton_loss_pairs_the_graph_query_with_the_same_samples_sequence_key():
    model = make_model().eval()
    g = torch.Generator().manual_seed(0)
    for s in STREAMS:  # known queues, ids 100.. (never a query's own)
        model.memory_banks[s].enqueue(F.normalize(torch.randn(32, 128, generator=g), dim=1), torch.arange(100, 132))
    queries = {s: F.normalize(torch.randn(4, 128, generator=g), dim=1) for s in STREAMS}
    keys = {"graph": F.normalize(torch.randn(4, 128, generator=g), dim=1), "sequence": queries["graph"].clone()}
    logits = model.contrast_logits(queries, keys, torch.arange(4))
    tau = model.contrast.temperature
    # the graph query's positive is the sequence key of the same sample; its negatives the sequence queue
    assert torch.allclose(logits["inter_graph"][:, 0], torch.full((4,), 1 / tau), atol=1e-5)
    assert torch.allclose(logits["inter_graph"][:, 1:], queries["graph"] @ model.memory_banks["sequence"].features.T
                          / tau, atol=1e-5)
    assert torch.allclose(logits["inter_sequence"][:, 0], (queries["sequence"] * keys["graph"]).sum(1) / tau)
    assert torch.allclose(logits["inter_sequence"][:, 1:], queries["sequence"] @ model.memory_banks["graph"].features.T
                          / tau, atol=1e-5)
    assert "intra_graph" not in logits  # the paper's method: inter only
    # a shuffled sequence key breaks the pair: the graph-side loss rises
    shuffled = {**keys, "sequence": keys["sequence"][[1, 2, 3, 0]]}
    loss = F.cross_entropy(logits["inter_graph"], torch.zeros(4, dtype=torch.long))
    worse = F.cross_entropy(model.contrast_logits(queries, shuffled)["inter_graph"], torch.zeros(4, dtype=torch.long))
    assert worse > loss + 1.0
    intra = make_model(intra_weight=1.0).contrast_logits(queries, keys)
    assert torch.allclose(intra["intra_graph"][:, 0], (queries["graph"] * keys["graph"]).sum(1) / tau)


def test_the_sequence_encoder_reads_the_whole_window_in_both_directions():
    encoder = SequenceEncoder(16, hidden=8, layers=2).eval()
    x = gaits(n=3, t=12)
    h = encoder(x)
    assert h.shape == (3, 16) == (3, encoder.out_dim)
    early, late = x.clone(), x.clone()
    early[:, 0] += 1.0  # the first frame: seen last by the backward direction
    late[:, -1] += 1.0  # the last frame: seen last by the forward direction
    assert not torch.allclose(encoder(early)[:, 8:], h[:, 8:]) and not torch.allclose(encoder(late)[:, :8], h[:, :8])


def test_loss_falls_on_a_fixed_batch_and_both_key_encoders_move():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {s: [p.clone() for p in model.momentum_nets[s].parameters()] for s in STREAMS}
    generator, losses = torch.Generator().manual_seed(0), []
    for _ in range(30):
        losses.append(float(train_step(model, optimizer, gaits(), generator, torch.arange(8))["loss"]))
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[4:9]), np.mean(losses[-5:])  # after the 32-entry queues have filled
    assert last < 0.85 * first, f"loss did not fall ({first:.3f} -> {last:.3f})"
    for s in STREAMS:
        assert any(not torch.equal(a, b) for a, b in zip(before[s], model.momentum_nets[s].parameters()))


def test_encoders_take_the_cartesian_window(tmp_path):
    model = make_model().eval()
    x = gaits(n=5)
    encoders = model.encoders()
    assert list(encoders) == ["graph", "sequence"] and isinstance(encoders["graph"], AGCN)
    assert not hasattr(model, "stream_input")  # both read the window as it is
    for s, encoder in encoders.items():
        assert encoder(x).shape == (5, encoder.out_dim)
        z = model.embed(x, s)
        assert z.shape == (5, 128) and torch.allclose(z.norm(dim=1), torch.ones(5))


def test_a_short_pretraining_with_health(tmp_path):
    result = pretrain(isc_config(tmp_path, epochs=2), gaits(n=12, t=16).numpy())
    history = result.history
    assert len(history) == 2 and all(np.isfinite(m["loss"]) for m in history)
    for s in STREAMS:
        for key in (f"retrieval_{s}", f"uniformity_{s}", f"acc_{s}"):
            assert key in history[-1]
        assert f"spread_{s}" in result.health_init
    assert "loss_inter" in history[-1] and "loss_intra" not in history[-1]
    assert isinstance(result.model, ISC)


def test_the_lab_maps_its_settings_to_iscs_optimizer_and_encoder_size():
    from cagelib.experiment import load

    small = load("notebook", ["pretrain.contrast.method=isc", "pretrain.lr=0.1"]).pretrain_config(0, "run")
    assert small.lr == pytest.approx(0.01) and small.options == ISCConfig()  # ISC's SGD lr: x0.1 of CAGE's scale
    paper = load("paper", ["pretrain=paper:isc"]).pretrain_config(0, "run")
    assert paper.options.gru_hidden == 1024 and (paper.epochs, paper.milestones) == (451, (351,))
    assert paper.lr == pytest.approx(0.01)  # the paper's recipe is ISC's own lr: not scaled x0.1 again
