"""Cartesian <-> Spherical joint coordinates for the C3L stream (paper Eq. 9, corrected).

The paper's Eq. 9 has typos (``arccos(x2/x0)``). cagelib uses the standard form with the polar axis
along the skeleton's up axis (``y``, see ``cagelib.skeleton.UP_AXIS``), per joint, relative to the
root joint of the same frame:

    r     = |p|                      p = joint - root
    theta = arccos(p_y / r)          polar angle from the up axis, in [0, pi]
    phi   = atan2(p_x, p_z)          azimuth in the ground plane from +z towards +x (a right-handed
                                     turn about y), in (-pi, pi]

Decisions (named options; ``docs/decisions.md``, "coordinates.py fix" and "Observation for the Spherical
stream (not changed)"):
- ``r = 0`` (the root itself, or any joint that coincides with it, and zero-padded frames) maps to
  ``theta = 0, phi = 0`` (also in unwrapped mode): finite values, no NaN, padding stays zero, and
  the inverse still returns the root exactly.
- ``phi`` wraps at +-pi. ``phi_mode="unwrapped"`` (default) removes the 2*pi jumps along time so that a
  joint circling the up axis gives a continuous signal to the temporal convolutions;
  ``phi_mode="wrapped"`` keeps the raw ``atan2`` value. The inverse accepts either.

All functions take torch tensors of shape ``(..., T, V, 3)`` on any device (NumPy arrays are accepted
and converted); the output has the same shape, with channels ``(r, theta, phi)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .skeleton import ROOT, UP_AXIS

PHI_MODES = ("unwrapped", "wrapped")
DEFAULT_PHI_MODE = "unwrapped"  # the one default of every phi_mode (ContrastConfig, EvalConfig, the transforms)
_EPS = 1e-8
# The two horizontal axes in right-handed order after the up axis: (x, z) for y-up.
_HORIZONTAL = {0: (1, 2), 1: (2, 0), 2: (0, 1)}[UP_AXIS]


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x


def unwrap_phase(phi: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Remove 2*pi jumps along ``dim`` (like ``numpy.unwrap``), vectorised over every other axis."""
    diff = torch.diff(phi, dim=dim)
    wrapped = torch.remainder(diff + math.pi, 2 * math.pi) - math.pi
    correction = torch.cumsum(wrapped - diff, dim=dim)
    first = phi.narrow(dim, 0, 1)
    return torch.cat([first, phi.narrow(dim, 1, phi.shape[dim] - 1) + correction], dim=dim)


def spherical_coordinates(x, phi_mode: str = DEFAULT_PHI_MODE, root_relative: bool = True) -> torch.Tensor:
    """Cartesian joints ``(..., T, V, 3)`` -> spherical ``(r, theta, phi)`` of the same shape (Eq. 9).

    ``phi_mode="unwrapped"`` needs the time axis at ``-3``.
    """
    if phi_mode not in PHI_MODES:
        raise ValueError(f"phi_mode must be one of {PHI_MODES}, got {phi_mode!r}")
    x = _as_tensor(x)
    p = x - x[..., ROOT : ROOT + 1, :] if root_relative else x
    a, b = _HORIZONTAL
    up, ha, hb = p[..., UP_AXIS], p[..., a], p[..., b]  # each (..., T, V)
    r = torch.linalg.vector_norm(p, dim=-1)
    at_origin = r < _EPS
    cos_theta = (up / r.clamp_min(_EPS)).clamp(-1.0, 1.0)
    theta = torch.where(at_origin, torch.zeros_like(r), torch.arccos(cos_theta))
    # (hb, ha) in atan2 gives phi = atan2(x, z) for y-up: the angle from +z towards +x, i.e. a
    # right-handed turn about the up axis.
    phi = torch.atan2(hb, ha)
    if phi_mode == "unwrapped" and phi.dim() >= 2 and phi.shape[-2] > 1:
        phi = unwrap_phase(phi, dim=-2)  # time axis of a (..., T, V) tensor
    # r = 0 -> phi = 0, applied after unwrapping so that zero-padded frames stay exactly zero.
    phi = torch.where(at_origin, torch.zeros_like(phi), phi)
    return torch.stack([r, theta, phi], dim=-1)  # (..., T, V, 3)


def cartesian_coordinates(s, root=None) -> torch.Tensor:
    """Inverse of :func:`spherical_coordinates`: ``(r, theta, phi)`` -> ``(x, y, z)``, same shape.

    ``root`` (``(..., T, 1, 3)`` or broadcastable) is added back when given; otherwise the result is
    root-relative, as the forward transform saw it.
    """
    s = _as_tensor(s)
    r, theta, phi = s.unbind(-1)
    a, b = _HORIZONTAL
    comps = [None, None, None]
    comps[UP_AXIS] = r * torch.cos(theta)
    comps[a] = r * torch.sin(theta) * torch.cos(phi)
    comps[b] = r * torch.sin(theta) * torch.sin(phi)
    out = torch.stack(comps, dim=-1)  # (..., T, V, 3)
    return out if root is None else out + _as_tensor(root)
