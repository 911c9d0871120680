"""Body-frame augmentations (``cagelib.methods.body_augment``): shapes, padding, seeding, exact invariances,
and a property of the default views on real windows: they keep a gait a gait (bone lengths bounded),
which the paper's literal views do not on first-frame-centred windows."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from cagelib.data.tasks import DataConfig, gait_task
from cagelib.methods.augment import Compose, Crop, JointJitter, Shear, make_generator, valid_lengths
from cagelib.methods.body_augment import (VIEWS, BodyFrame, BoundedJitter, Rotate, Scale, ambiguity_transform,
                                          contrastive_views)
from cagelib.methods.cage import CAGE, ContrastConfig
from cagelib.methods.encoders import AGCN, AGCNConfig
from cagelib.representation import REPRESENTATIONS
from cagelib.skeleton import EDGES, ROOT, UP_AXIS

SPATIAL = [Rotate(), Scale(), BoundedJitter(), *(BodyFrame(Shear(0.3, 1.0), r) for r in REPRESENTATIONS)]
ALL = SPATIAL + [contrastive_views(v, r) for v in VIEWS for r in REPRESENTATIONS] + \
    [ambiguity_transform(v, r) for v in VIEWS for r in REPRESENTATIONS]
# The bound on the per-frame median over bones of |view bone length / original - 1| (see the property test).
# Measured on 256 corpus windows (root_relative and first_frame alike, seed 0): body views median 0.088,
# p99 0.19, max 0.26; the paper's views on first_frame windows median 0.51, p90 4.1, max 15.6.
BONE_DISTORTION_BOUND = 0.35


def walker(n=3, t=20, lengths=None, seed=0) -> torch.Tensor:
    """Random poses plus a root trajectory that walks away from the origin (first_frame-like input)."""
    g = make_generator(seed)
    x = torch.rand(n, t, 16, 3, generator=g) - 0.5  # (N, T, V, 3)
    x[:, :, ROOT] = 0
    trajectory = torch.cumsum(torch.rand(n, t, 1, 3, generator=g), dim=1)  # (N, T, 1, 3) metres along
    x = x + trajectory
    if lengths is not None:
        x[torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]] = 0
    return x


def bones(x: torch.Tensor) -> torch.Tensor:
    """Bone lengths ``(N, T, V, 3) -> (N, T, len(EDGES))``."""
    parents, children = [p for p, _ in EDGES], [c for _, c in EDGES]
    return (x[:, :, children] - x[:, :, parents]).norm(dim=-1)


@pytest.mark.parametrize("aug", ALL, ids=[repr(a)[:50] for a in ALL])
def test_shape_padding_and_generator_determinism(aug):
    x = walker(lengths=[20, 13, 7])
    a, b = aug(x, make_generator(3)), aug(x, make_generator(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, aug(x, make_generator(4)))
    lengths = valid_lengths(a)
    assert (lengths <= torch.tensor([20, 13, 7])).all()  # padding stays zero (speed-up may shorten)
    assert (a[torch.arange(20)[None, :] >= lengths[:, None]] == 0).all()


def test_rotate_preserves_bone_lengths_and_height_exactly():
    x = walker().double()
    y = Rotate(180)(x, make_generator(0))
    assert torch.allclose(bones(y), bones(x), atol=1e-12)
    assert torch.equal(y[..., UP_AXIS], x[..., UP_AXIS])  # a rotation about the up axis
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("transform", [Rotate(), Scale(), BoundedJitter(), Shear(0.3, 1.0)], ids=repr)
def test_body_frame_on_first_frame_input_transforms_the_pose_and_keeps_the_trajectory(transform):
    x = walker(lengths=[20, 15, 20]).double()
    root = x[:, :, ROOT : ROOT + 1]  # (N, T, 1, 3)
    expected = transform(x - root, make_generator(5)) + root
    assert torch.allclose(BodyFrame(transform, "first_frame")(x, make_generator(5)), expected)
    relative = x - root
    assert torch.equal(BodyFrame(transform, "root_relative")(relative, make_generator(5)),
                       transform(relative, make_generator(5)))  # root 0: a shift by zero
    assert torch.equal(BodyFrame(transform, "root_velocity")(x, make_generator(5)),
                       transform(x, make_generator(5)))  # the map acts on the velocity too


def test_views_and_ambiguity_by_name():
    paper = contrastive_views("paper", "first_frame")
    assert [type(t) for t in paper.transforms] == [Crop, JointJitter] and paper.transforms[1].num_joints == 10
    assert [type(t) for t in contrastive_views("crop").transforms] == [Crop]
    body = contrastive_views("body", "first_frame")
    assert type(body.transforms[0]) is Crop and all(isinstance(t, BodyFrame) for t in body.transforms[1:])
    assert isinstance(ambiguity_transform("paper").shear, Shear)  # literal Eq. 4
    assert isinstance(ambiguity_transform("body", "first_frame").shear, BodyFrame)
    for bad in (lambda: contrastive_views("mixup"), lambda: contrastive_views("body", "polar"),
                lambda: ContrastConfig(views="mixup")):
        with pytest.raises(ValueError):
            bad()


def test_cage_builds_its_views_from_the_config_and_representation():
    tiny = AGCNConfig.small(widths=(8, 8), strides=(1, 2))
    model = CAGE(ContrastConfig.preset("cage", queue_size=8, views="paper"), lambda: AGCN(tiny),
                 representation="first_frame")
    assert [type(t) for t in model.augment.transforms] == [Crop, JointJitter]
    assert isinstance(model.ambiguity.shear, Shear)
    model = CAGE(ContrastConfig.preset("cage", queue_size=8), lambda: AGCN(tiny), representation="root_velocity")
    assert all(t.representation == "root_velocity" for t in model.augment.transforms[1:])
    assert model.ambiguity.shear.representation == "root_velocity"


def test_spherical_stream_of_root_velocity_input_holds_the_velocity_in_spherical_coordinates():
    tiny = AGCNConfig.small(widths=(8, 8), strides=(1, 2))
    model = CAGE(ContrastConfig.preset("cage", queue_size=8), lambda: AGCN(tiny), representation="root_velocity")
    x = walker().double()
    x[:, :, ROOT] = torch.tensor([0.0, 0.0, 2.0], dtype=x.dtype)  # walking at 2 m/s along +z (horizontal)
    s = model.stream_input(x, "spherical")  # (N, T, V, 3)
    assert torch.allclose(s[:, :, ROOT], torch.tensor([2.0, torch.pi / 2, 0.0], dtype=x.dtype))
    assert torch.allclose(s[:, :, 1:, 0], x[:, :, 1:].norm(dim=-1))  # joints: distance from the root
    first = CAGE(ContrastConfig.preset("cage", queue_size=8), lambda: AGCN(tiny), representation="first_frame")
    assert (first.stream_input(x, "spherical")[:, :, ROOT] == 0).all()


@functools.lru_cache(maxsize=None)
def corpus(representation: str) -> torch.Tensor:
    """128 real corpus windows of the embedded Bandai set, ``(128, 48, 16, 3)``."""
    task = gait_task(DataConfig(representation=representation, max_pretrain_windows=128))
    return torch.as_tensor(task.pretrain_x)


def bone_distortion(x: torch.Tensor, views: Compose, seed: int = 0) -> torch.Tensor:
    """Per valid frame, the median over bones of ``|view bone length / original - 1|``, ``(frames,)``.
    The views' spatial part (everything after the Crop, which only picks frames) is compared frame by frame."""
    assert type(views.transforms[0]) is Crop
    y = Compose(views.transforms[1:])(x, make_generator(seed))
    ratio = bones(y) / bones(x).clamp_min(1e-6)  # (N, T, B)
    valid = torch.arange(x.shape[1])[None, :] < valid_lengths(x)[:, None]  # (N, T)
    return (ratio - 1).abs().median(dim=-1).values[valid]


@pytest.mark.parametrize("representation", ["root_relative", "first_frame"])
def test_default_views_keep_bone_lengths_on_real_windows(representation):
    x = corpus(representation)
    distortion = bone_distortion(x, contrastive_views("body", representation))
    assert distortion.numel() > 1000
    assert distortion.max() < BONE_DISTORTION_BOUND
    assert distortion.median() < 0.15


def test_the_papers_literal_views_break_the_bound_on_first_frame_windows():
    distortion = bone_distortion(corpus("first_frame"), contrastive_views("paper", "first_frame"))
    assert (distortion > BONE_DISTORTION_BOUND).float().mean() > 0.5
    assert np.quantile(distortion.numpy(), 0.9) > 10 * BONE_DISTORTION_BOUND
