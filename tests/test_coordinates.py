"""Cartesian <-> Spherical (Eq. 9): round trips, the root at r = 0, no NaN, continuous unwrapped phi."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cagelib.coordinates import cartesian_coordinates, spherical_coordinates
from cagelib.data import load_embedded
from cagelib.skeleton import ROOT


@pytest.fixture(scope="module")
def turning_walk() -> torch.Tensor:
    """A real clip in which the body turns (dataset-2 walk-turn-left), float64 (T, 16, 3)."""
    gs = load_embedded()
    i = int(np.flatnonzero(gs.meta["content"] == "walk-turn-left")[0])
    return torch.as_tensor(gs.positions[i], dtype=torch.float64)


def round_trip(x: torch.Tensor, phi_mode: str) -> torch.Tensor:
    s = spherical_coordinates(x, phi_mode=phi_mode)
    return cartesian_coordinates(s, root=x[..., ROOT : ROOT + 1, :])


@pytest.mark.parametrize("phi_mode", ["unwrapped", "wrapped"])
def test_round_trip_on_a_real_skeleton(turning_walk, phi_mode):
    back = round_trip(turning_walk, phi_mode)
    torch.testing.assert_close(back, turning_walk, atol=1e-9, rtol=0)


@pytest.mark.parametrize("phi_mode", ["unwrapped", "wrapped"])
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
def test_round_trip_on_random_skeletons(phi_mode, dtype, atol):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 20, 16, 3, generator=g) * 2).to(dtype)  # (N, T, V, C)
    s = spherical_coordinates(x, phi_mode=phi_mode)
    assert s.shape == x.shape and s.dtype == dtype
    torch.testing.assert_close(round_trip(x, phi_mode), x, atol=atol, rtol=0)
    assert (s[..., 0] >= 0).all() and (s[..., 1] >= 0).all() and (s[..., 1] <= math.pi).all()


def test_root_is_r_zero_and_maps_back_exactly(turning_walk):
    s = spherical_coordinates(turning_walk)
    assert (s[:, ROOT] == 0).all()  # r = theta = phi = 0 for the root
    back = cartesian_coordinates(s, root=turning_walk[:, ROOT : ROOT + 1])
    assert torch.equal(back[:, ROOT], turning_walk[:, ROOT])


def test_no_nan_for_degenerate_and_padded_input():
    x = torch.zeros(2, 12, 16, 3)
    x[0, :, 1] = torch.tensor([0.0, 1.0, 0.0])  # straight above the root: theta = 0, phi undefined
    x[0, :, 2] = torch.tensor([0.0, -1.0, 0.0])  # straight below: theta = pi
    t = torch.arange(8) / 8 * 4 * math.pi
    x[1, :8, 3] = torch.stack([torch.sin(t), 0.2 * torch.ones(8), torch.cos(t)], dim=-1)  # circles twice
    for phi_mode in ("unwrapped", "wrapped"):
        s = spherical_coordinates(x, phi_mode=phi_mode)
        assert torch.isfinite(s).all()
        torch.testing.assert_close(s[0, :, 1, 1], torch.zeros(12))
        torch.testing.assert_close(s[0, :, 2, 1], torch.full((12,), math.pi))
        assert not s[1, 8:].any(), "zero-padded frames must stay zero"  # also after unwrapping
        assert not s[:, :, 4:].any()  # joints at the root
        torch.testing.assert_close(cartesian_coordinates(s), x, atol=1e-6, rtol=0)


def test_angle_conventions():
    x = torch.zeros(1, 16, 3)
    x[0, 1] = torch.tensor([0.0, 0.0, 2.0])  # +z: phi = 0
    x[0, 2] = torch.tensor([3.0, 0.0, 0.0])  # +x: phi = +pi/2 (right-handed turn about y from +z)
    x[0, 3] = torch.tensor([0.0, 4.0, 0.0])  # up: theta = 0
    s = spherical_coordinates(x, phi_mode="wrapped")[0]
    torch.testing.assert_close(s[1], torch.tensor([2.0, math.pi / 2, 0.0]))
    torch.testing.assert_close(s[2], torch.tensor([3.0, math.pi / 2, math.pi / 2]))
    torch.testing.assert_close(s[3, :2], torch.tensor([4.0, 0.0]))


def test_unwrapped_phi_is_continuous(turning_walk):
    wrapped = spherical_coordinates(turning_walk, phi_mode="wrapped")[..., 2]  # (T, V)
    unwrapped = spherical_coordinates(turning_walk, phi_mode="unwrapped")[..., 2]
    assert (wrapped.abs() <= math.pi).all()
    assert (unwrapped.diff(dim=0).abs() <= math.pi + 1e-9).all()  # never a step beyond half a turn
    k = (unwrapped - wrapped) / (2 * math.pi)  # they differ by whole turns only
    torch.testing.assert_close(k, k.round(), atol=1e-9, rtol=0)
    # Where phi is well defined (the joint stays > 5 cm from the vertical through the root), the
    # turning body makes the wrapped phi jump by ~2 pi while the unwrapped phi moves smoothly. Joints
    # that pass near that vertical (spine, feet under the hips) have an ill-defined phi: not tested.
    relative = turning_walk - turning_walk[:, ROOT : ROOT + 1]
    horizontal = torch.hypot(relative[..., 0], relative[..., 2]).min(dim=0).values  # (V,)
    clear = horizontal > 0.05
    assert clear.sum() >= 6
    assert wrapped[:, clear].diff(dim=0).abs().max() > 5.0
    assert unwrapped[:, clear].diff(dim=0).abs().max() < 1.0  # 30 fps motion


def test_unwrapped_phi_follows_a_joint_around_the_up_axis():
    t = torch.linspace(0, 6 * math.pi, 90, dtype=torch.float64)  # three turns
    x = torch.zeros(90, 16, 3, dtype=torch.float64)
    x[:, 5] = torch.stack([torch.sin(t), torch.zeros_like(t), torch.cos(t)], dim=-1)
    phi = spherical_coordinates(x)[:, 5, 2]
    torch.testing.assert_close(phi, t, atol=1e-9, rtol=0)  # phi = t, no jumps
    phi_np = spherical_coordinates(x.numpy(), phi_mode="wrapped")[:, 5, 2]  # NumPy input is accepted
    assert isinstance(phi_np, torch.Tensor) and phi_np.abs().max() <= math.pi
