"""Batched skeleton augmentations: contrastive views (Crop, Joint Jittering, Eq. 1) and the ambiguity
transform (speed change, Eq. 3, and shear, Eq. 4).

Every augmentation is a callable ``aug(x, generator) -> x`` on a batch ``x: (N, T, V, C)``. It runs on
``x``'s device, draws all randomness from the explicit ``generator`` (which must live on the same device
type) and never touches the global RNG. Each sample gets its own random draw; there are no per-sample
Python loops (frame selection is index arithmetic plus ``gather``, joint transforms a batched einsum).

Variable length: a sequence's valid length is inferred from its trailing all-zero frames
(:func:`valid_lengths`), the padding convention of E-Gait. Temporal augmentations work inside the valid
part and leave zeros after the (new) valid length, so zero padding stays the marker of a shorter
sequence. Spatial ones are linear maps, so zero frames stay zero.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

SPEED_UP_RATE, SPEED_DOWN_RATE = 4, 0.3  # the ambiguity transform's r (paper: 4 of 2 / 4 / 8; 0.3 of (0, 1))

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
SPEEDS = ("up", "down")
FILLS = ("zeros", "repeat")


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _check(x: torch.Tensor, generator: torch.Generator, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor of shape (N, T, V, C), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if x.shape[1] < 1:
        raise ValueError(f"{name}: the sequence has no frames (T = 0)")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name}: pass an explicit torch.Generator, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(f"{name}: the generator is on {generator.device} but the batch is on {x.device}; "
                         "create the generator on the batch's device (make_generator(seed, x.device))")


def valid_lengths(x: torch.Tensor) -> torch.Tensor:
    """Valid length of every sequence in ``(N, T, V, C)``: index of the last non-zero frame + 1, ``(N,)`` int64.

    An all-zero sequence has length 0. Zero frames inside the valid part do not shorten it.
    """
    if x.dim() != 4:
        raise ValueError(f"valid_lengths: expected (N, T, V, C), got {tuple(x.shape)}")
    nonzero = x.ne(0).flatten(2).any(dim=-1)  # (N, T)
    position = torch.arange(1, x.shape[1] + 1, device=x.device)  # (T,)
    return (nonzero * position).amax(dim=1)  # (N,)


def _randint_below(upper: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One uniform integer in ``[0, upper_i)`` per entry (0 where ``upper_i <= 0``): ``(N,) -> (N,)`` int64."""
    u = torch.rand(upper.shape, generator=generator, device=upper.device)  # (N,) in [0, 1)
    value = (u * upper.clamp_min(0).float()).floor().long()
    return torch.minimum(value, (upper - 1).clamp_min(0))


def _uniform(shape: tuple, low: float, high: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def _random_joint_mask(n: int, v: int, k: int, generator: torch.Generator, device) -> torch.Tensor:
    """``(N, V)`` bool mask with exactly ``k`` distinct random joints per sample."""
    scores = torch.rand(n, v, generator=generator, device=device)  # (N, V)
    chosen = scores.argsort(dim=1)[:, :k]  # (N, k)
    return torch.zeros(n, v, dtype=torch.bool, device=device).scatter_(1, chosen, True)


def _gather_frames(x: torch.Tensor, source: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``out[n, t] = x[n, source[n, t]]`` where ``valid[n, t]``, else a zero frame. ``source, valid: (N, T')``."""
    n, _, v, c = x.shape
    source = torch.where(valid, source, torch.zeros_like(source))
    frames = x.gather(1, source[:, :, None, None].expand(n, source.shape[1], v, c))  # (N, T', V, C)
    return torch.where(valid[:, :, None, None], frames, torch.zeros_like(frames))


def _transform_joints(x: torch.Tensor, matrix: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-vector product ``x[:, :, j] @ matrix`` on the joints in ``mask`` (``(N, C, C)``, ``(N, V)``)."""
    transformed = torch.einsum("ntvc,ncd->ntvd", x, matrix)  # (N, T, V, C)
    return torch.where(mask[:, None, :, None], transformed, x)


@dataclass
class Crop:
    """Temporal crop (AimCLR / CrosSCLR): pad ``L // padding_ratio`` frames at both ends by reflection,
    then crop ``L`` frames at a random offset (``L`` = the sequence's valid length).

    Reflection is symmetric (the edge frame is repeated: ``..., x1, x0 | x0, x1, ...``), as AimCLR's
    ``temporal_crop``. It is applied to the valid part only, so a zero-padded sequence is cropped inside
    its own frames, keeps its length, and no padding zeros enter the crop.
    """

    padding_ratio: int = 6  # gamma: pad L // gamma frames at each end

    def __post_init__(self) -> None:
        if int(self.padding_ratio) != self.padding_ratio or self.padding_ratio < 1:
            raise ValueError(f"Crop: padding_ratio must be a positive integer, got {self.padding_ratio}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check(x, generator, "Crop")
        length = valid_lengths(x)  # (N,)
        pad = length // int(self.padding_ratio)  # (N,)
        offset = _randint_below(2 * pad + 1, generator)  # (N,) in [0, 2 * pad]
        frames = torch.arange(x.shape[1], device=x.device)  # (T,)
        source = offset[:, None] - pad[:, None] + frames[None, :]  # (N, T) index into the valid part
        source = torch.where(source < 0, -source - 1, source)  # reflect at the start (pad <= L)
        source = torch.where(source >= length[:, None], 2 * length[:, None] - 1 - source, source)  # and end
        return _gather_frames(x, source, frames[None, :] < length[:, None])


@dataclass
class JointJitter:
    """Joint Jittering (paper Eq. 1, ISC's joint corruption): ``S[:, j] @ R`` for ``num_joints`` distinct
    random joints ``j`` per sample, with one random ``3 x 3`` matrix ``R ~ U(low, high)`` per sample."""

    num_joints: int = 10  # j: joints transformed per sample
    low: float = -1.0  # lower bound of the matrix entries
    high: float = 1.0  # upper bound of the matrix entries

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return jitter_joints(x, generator, self.num_joints, self.low, self.high, "JointJitter")


def jitter_joints(x: torch.Tensor, generator: torch.Generator, num_joints: int, low: float, high: float,
                  name: str, around_identity: bool = False) -> torch.Tensor:
    """``S[:, j] @ R`` on ``num_joints`` random joints per sample, ``R ~ U(low, high)`` per sample (plus the
    identity when ``around_identity``): Joint Jittering (Eq. 1) and its bounded form (``body_augment``)."""
    _check(x, generator, name)
    n, _, v, c = x.shape
    if not 0 <= num_joints <= v:
        raise ValueError(f"{name}: num_joints must be in [0, {v}], got {num_joints}")
    mask = _random_joint_mask(n, v, num_joints, generator, x.device)  # (N, V)
    matrix = _uniform((n, c, c), low, high, generator, x)  # (N, C, C)
    if around_identity:
        matrix = torch.eye(c, device=x.device, dtype=x.dtype) + matrix
    return _transform_joints(x, matrix, mask)


@dataclass
class SpeedUp:
    """Ambiguity speed-up: keep frames ``i, i + r, i + 2r, ...`` of the valid part (paper, Eq. 3's text).

    The start ``i`` is uniform in ``[0, min(r, L) - 1]``: every phase of the subsampling is possible and
    each keeps as many frames as it can (``ceil((L - i) / r)``). The result is shorter; ``fill`` says what
    follows the kept frames: ``"zeros"`` (default) zero-pads to ``T``, the padding convention of the data
    (the sequence *is* shorter, as in the paper's 250-frame zero-padded inputs); ``"repeat"`` cycles the
    kept frames up to the original valid length ``L`` (the length stays a non-cue for the encoder).
    """

    rate: int = 4  # r: keep every r-th frame (paper: 2, 4, 8; chosen 4)
    fill: str = "zeros"  # "zeros" or "repeat", see the class docstring

    def __post_init__(self) -> None:
        if int(self.rate) != self.rate or self.rate < 1:
            raise ValueError(f"SpeedUp: rate must be a positive integer, got {self.rate}")
        if self.fill not in FILLS:
            raise ValueError(f"SpeedUp: fill must be one of {FILLS}, got {self.fill!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check(x, generator, "SpeedUp")
        rate = int(self.rate)
        length = valid_lengths(x)  # (N,)
        start = _randint_below(length.clamp(max=rate), generator)  # (N,) i in [0, min(r, L))
        kept = (length - start + rate - 1) // rate  # (N,) frames kept (0 for an empty sequence)
        frames = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
        if self.fill == "zeros":
            step, valid = frames, frames < kept[:, None]  # (N, T)
        else:
            step, valid = frames % kept.clamp_min(1)[:, None], frames < length[:, None]  # (N, T)
        return _gather_frames(x, start[:, None] + rate * step, valid)


@dataclass
class SpeedDown:
    """Ambiguity slow-down (paper Eq. 3): ``S[l : l + rL]`` linearly interpolated back to ``L`` frames.

    ``L`` is the valid length, the window has ``w = max(1, floor(r * L + 0.5))`` frames and its start
    ``l`` is uniform in ``[0, L - w]``. Output frame ``t`` samples the window at
    ``l + t (w - 1) / (L - 1)``, so the first and last output frames are exactly the window's first and
    last frames. Frames from ``L`` on stay zero.
    """

    rate: float = 0.3  # r in (0, 1]: window fraction (paper: 0.1, 0.3, 0.5; chosen 0.3)

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise ValueError(f"SpeedDown: rate must be in (0, 1], got {self.rate}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check(x, generator, "SpeedDown")
        length = valid_lengths(x)  # (N,)
        window = torch.floor(self.rate * length.float() + 0.5).long()  # (N,)
        window = torch.minimum(window.clamp_min(1), length.clamp_min(1))  # (N,) w in [1, L]
        start = _randint_below(length - window + 1, generator)  # (N,) l in [0, L - w]
        frames = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
        # exact integer position: t (w - 1) = q (L - 1) + rem  ->  sample at l + q + rem / (L - 1)
        numerator = frames * (window - 1)[:, None]  # (N, T)
        denominator = (length - 1).clamp_min(1)[:, None]  # (N, 1)
        low = start[:, None] + numerator // denominator  # (N, T)
        high = torch.minimum(low + 1, (start + window - 1)[:, None])  # (N, T)
        fraction = ((numerator % denominator).float() / denominator.float()).to(x.dtype)  # (N, T)
        valid = frames < length[:, None]  # (N, T)
        a, b = _gather_frames(x, low, valid), _gather_frames(x, high, valid)  # (N, T, V, C) each
        weight = fraction[:, :, None, None]
        return a * (1 - weight) + b * weight


@dataclass
class Shear:
    """Ambiguity shear (paper Eq. 4): ``S[:, j] @ M`` with ``M`` = 1 on the diagonal and off-diagonal
    shear factors ``U(-amplitude, amplitude)``, one matrix per sample.

    The joint subset ``j`` holds ``round(joint_fraction * V)`` distinct random joints per sample (default
    half of them, 8 of 16); ``joint_fraction = 1`` shears the whole body, as AimCLR's shear.
    """

    amplitude: float = 0.5  # off-diagonal shear factors ~ U(-amplitude, amplitude)
    joint_fraction: float = 0.5  # fraction of joints sheared per sample

    def __post_init__(self) -> None:
        if not 0 <= self.joint_fraction <= 1:
            raise ValueError(f"Shear: joint_fraction must be in [0, 1], got {self.joint_fraction}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check(x, generator, "Shear")
        n, _, v, c = x.shape
        mask = _random_joint_mask(n, v, round(self.joint_fraction * v), generator, x.device)  # (N, V)
        off_diagonal = _uniform((n, c, c), -self.amplitude, self.amplitude, generator, x)  # (N, C, C)
        eye = torch.eye(c, device=x.device, dtype=x.dtype)
        matrix = off_diagonal * (1 - eye) + eye  # (N, C, C), 1 on the diagonal
        return _transform_joints(x, matrix, mask)


class Compose:
    """Apply augmentations in order, all drawing from the same generator."""

    def __init__(self, transforms: Iterable[Augmentation]):
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x, generator)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


@dataclass
class AmbiguityTransform:
    """The ambiguity transform T~ (paper, "Ambiguity Transform"): a speed change (Eq. 3) then a shear (Eq. 4)."""

    speed: str = "up"  # "up" (SpeedUp) or "down" (SpeedDown)
    speed_up_rate: int = SPEED_UP_RATE  # r for speed-up
    speed_down_rate: float = SPEED_DOWN_RATE  # r for speed-down
    shear: Shear | None = field(default_factory=Shear)  # None: speed change only
    fill: str = "zeros"  # SpeedUp's fill after the kept frames

    def __post_init__(self) -> None:
        if self.speed not in SPEEDS:
            raise ValueError(f"AmbiguityTransform: speed must be one of {SPEEDS}, got {self.speed!r}")
        self.speed_change()  # validates the rates and the fill

    def speed_change(self) -> Augmentation:
        """The speed-change step alone (``SpeedUp`` or ``SpeedDown``)."""
        if self.speed == "up":
            return SpeedUp(self.speed_up_rate, self.fill)
        return SpeedDown(self.speed_down_rate)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = self.speed_change()(x, generator)
        return x if self.shear is None else self.shear(x, generator)


def ambiguity_transform(x: torch.Tensor, generator: torch.Generator, speed: str = "up",
                        speed_up_rate: int = SPEED_UP_RATE, speed_down_rate: float = SPEED_DOWN_RATE, shear_amplitude: float = 0.5,
                        joint_fraction: float = 0.5, fill: str = "zeros") -> torch.Tensor:
    """Functional form of :class:`AmbiguityTransform`: ``(N, T, V, C) -> (N, T, V, C)``."""
    shear = Shear(shear_amplitude, joint_fraction)
    return AmbiguityTransform(speed, speed_up_rate, speed_down_rate, shear, fill)(x, generator)


def contrastive_views(padding_ratio: int = 6, jitter_joints: int = 10) -> Compose:
    """GE-CLR's augmentation T: Crop (gamma = 6) then Joint Jittering (j = 10), paper Eq. 1."""
    return Compose([Crop(padding_ratio), JointJitter(jitter_joints)])
