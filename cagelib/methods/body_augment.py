"""Augmentations that keep a gait a gait: bounded spatial transforms applied in a body-centred frame.

The paper's Joint Jittering (Eq. 1, ``augment.JointJitter``) multiplies 10 of 16 joints by a 3 x 3
matrix with entries in U(-1, 1). On windows centred on the *first* frame's root, the positions grow
with the distance walked, so the distortion grows along the window (on ``walk_normal_001``, the median
bone length of a jittered view goes from 0.24 m at frame 0 to 2.05 m at frame 47): the two views of a
window are no longer people. The transforms here are the alternative (``docs/decisions.md``,
"Contrastive views"):

- every spatial transform acts on the pose relative to each frame's root (:class:`BodyFrame`), so a
  walker 3 m down the room is transformed like one at the origin. How depends on the input
  representation (``cagelib.representation``): ``"first_frame"`` (the root joint holds the trajectory):
  subtract each frame's root, transform, add the root back; ``"root_relative"`` (the root joint is 0):
  the same code, a shift by zero; ``"root_velocity"`` (the root joint holds the root velocity): the
  linear map acts on every joint, the velocity included (a rotated walker walks in the rotated
  direction);
- every strength is bounded: rotation about the up axis, per-axis scaling near 1, whole-body shear with
  small factors, and joint jittering with matrices near the identity (``I + U(-a, a)``) on a few joints.

``contrastive_views(name, representation)`` builds GE-CLR's view transform T by name (``VIEWS``):
``"paper"`` = Crop + Joint Jittering (Eq. 1, literal), ``"crop"`` = Crop alone, ``"body"`` (default) =
Crop, then in the body frame Shear (whole body, factors U(-0.3, 0.3)), Rotate (30 deg), Scale (0.9-1.1),
BoundedJitter (4 joints, I + U(-0.2, 0.2)). ``ambiguity_transform(views, representation, ...)`` builds
the ambiguity transform T~ (Eq. 3-4) with its shear in the body frame unless ``views == "paper"``.

Each is a callable ``aug(x, generator) -> x`` on ``(N, T, V, 3)``, batched, device-agnostic, drawing
from the explicit generator only, like ``augment``. Linear maps keep zero padding frames zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..skeleton import ROOT, UP_AXIS
from ..representation import DEFAULT_REPRESENTATION, REPRESENTATIONS
from . import augment
from .augment import (SPEED_DOWN_RATE, SPEED_UP_RATE, AmbiguityTransform, Augmentation, Compose, Crop, Shear, _check,
                      _uniform, jitter_joints)

VIEWS = ("paper", "crop", "body")  # GE-CLR's view transform T, see contrastive_views
DEFAULT_VIEWS = "body"  # the one default of every views setting (ContrastConfig, MAMPConfig, the lab's players)


def _axis_rotation(angle: torch.Tensor, axis: int) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` by ``angle`` (N,) radians about coordinate ``axis`` (row-vector form)."""
    n = angle.shape[0]
    c, s = torch.cos(angle), torch.sin(angle)
    m = torch.zeros(n, 3, 3, device=angle.device, dtype=angle.dtype)
    m[:, axis, axis] = 1.0
    a, b = [i for i in range(3) if i != axis]
    m[:, a, a], m[:, a, b], m[:, b, a], m[:, b, b] = c, s, -s, c
    return m


@dataclass
class Rotate:
    """Rotation about the up axis by ``U(-max_degrees, max_degrees)`` per sample (a change of heading)."""

    max_degrees: float = 30.0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check(x, generator, "Rotate")
        limit = math.radians(self.max_degrees)
        angle = _uniform((x.shape[0],), -limit, limit, generator, x)  # (N,)
        return torch.einsum("ntvc,ncd->ntvd", x, _axis_rotation(angle, UP_AXIS))  # (N, T, V, 3)


@dataclass
class Scale:
    """Per-sample, per-axis scaling by ``U(low, high)``: body size and proportions within bounds."""

    low: float = 0.9
    high: float = 1.1

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"Scale: need 0 < low <= high, got {self.low}, {self.high}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check(x, generator, "Scale")
        factors = _uniform((x.shape[0], 1, 1, x.shape[-1]), self.low, self.high, generator, x)  # (N, 1, 1, C)
        return x * factors


@dataclass
class BoundedJitter:
    """Joint Jittering with bounded strength: ``S[:, j] @ (I + U(-amplitude, amplitude))`` on
    ``num_joints`` random joints per sample (the paper's Eq. 1 with the matrix kept near the identity)."""

    num_joints: int = 4
    amplitude: float = 0.2

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return jitter_joints(x, generator, self.num_joints, -self.amplitude, self.amplitude, "BoundedJitter",
                             around_identity=True)


@dataclass
class BodyFrame:
    """Apply a spatial augmentation (a linear map per sample) to the pose relative to each frame's root.

    ``representation`` (``cagelib.representation.REPRESENTATIONS``) says what the root joint holds:
    ``"first_frame"``: the trajectory, which is subtracted before and added back after the transform, so
    the transform does not grow with the distance walked; ``"root_relative"``: zero, the same code is a
    shift by zero; ``"root_velocity"``: the root velocity, and the map acts on every joint directly (a
    rotation / scale / shear of the velocity is the consistent change of the walk). Zero padding frames
    stay zero in all three.
    """

    transform: Augmentation
    representation: str = DEFAULT_REPRESENTATION

    def __post_init__(self) -> None:
        _check_representation(self.representation)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.representation == "root_velocity":
            return self.transform(x, generator)
        root = x[:, :, ROOT : ROOT + 1, :]  # (N, T, 1, 3) trajectory (first_frame) or 0 (root_relative)
        return self.transform(x - root, generator) + root


def _check_representation(representation: str) -> None:
    if representation not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {representation!r}; choose from {REPRESENTATIONS}")


def contrastive_views(name: str = "body", representation: str = DEFAULT_REPRESENTATION) -> Compose:
    """GE-CLR's view transform T by name (``VIEWS``), for input in ``representation``.

    ``"paper"``: Crop (gamma = 6) + Joint Jittering (j = 10, entries U(-1, 1)), Eq. 1, literal
    (``augment.contrastive_views``); ``"crop"``: Crop alone; ``"body"``: Crop, then in the body frame
    whole-body Shear (0.3), Rotate (30 deg), Scale (0.9, 1.1), BoundedJitter (4 joints, 0.2).
    """
    _check_representation(representation)
    if name == "paper":
        return augment.contrastive_views()
    if name == "crop":
        return Compose([Crop(6)])
    if name == "body":
        body = [Shear(0.3, joint_fraction=1.0), Rotate(30.0), Scale(0.9, 1.1), BoundedJitter(4, 0.2)]
        return Compose([Crop(6), *(BodyFrame(t, representation) for t in body)])
    raise ValueError(f"unknown views {name!r}; choose from {VIEWS}")


def ambiguity_transform(views: str = DEFAULT_VIEWS, representation: str = DEFAULT_REPRESENTATION, speed: str = "up",
                        speed_up_rate: int = SPEED_UP_RATE, speed_down_rate: float = SPEED_DOWN_RATE) -> AmbiguityTransform:
    """The ambiguity transform T~: speed change (Eq. 3) then shear (Eq. 4, ``augment.Shear()``: half the
    joints, factors U(-0.5, 0.5)). With ``views == "paper"`` literal, as the paper; otherwise the shear
    acts in the body frame (:class:`BodyFrame`), like the contrastive views."""
    if views not in VIEWS:
        raise ValueError(f"unknown views {views!r}; choose from {VIEWS}")
    shear = Shear() if views == "paper" else BodyFrame(Shear(), representation)
    return AmbiguityTransform(speed=speed, speed_up_rate=speed_up_rate, speed_down_rate=speed_down_rate,
                              shear=shear)
