"""The reference-style pretraining loop, written the way the public baselines (AimCLR, CrosSCLR, ISC) are.

What makes it "reference style" (and slow), on purpose:
- every sample is augmented on its own in NumPy (``__getitem__`` of a ``Dataset``), inside DataLoader
  worker processes, then collated, converted and copied to the device with ``.to(device)`` per batch;
- float32, eager mode, a separate kernel stream per op;
- the loss is read with ``.item()`` every step for logging (a host-device sync per step).

The augmentations have the semantics of ``cagelib.methods.augment`` (see that module and docs/design.md):
Crop (symmetric reflection padding of ``L // gamma`` frames, random crop of ``L`` frames inside the
valid length ``L``), Joint Jittering (``j`` distinct joints times one ``U(-1, 1)`` 3x3 matrix), and the
ambiguity transform (speed-up keeping every r-th frame from a random phase, zero-filled; or speed-down
by linear interpolation of a ``round(rL)``-frame window; then a shear of half the joints). The random
numbers differ from cagelib's (NumPy generators, per sample); the distributions are the same.

The views are fed to the *same* ``CAGE`` model as the fast path through its augmentation hooks
(:class:`ViewFeeder`), so both paths run the identical encoders and loss: only the data path, precision
and execution mode differ.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def valid_length(x: np.ndarray) -> int:
    """Index of the last non-zero frame + 1 of one sequence ``(T, V, C)`` (0 if all zero)."""
    nonzero = np.flatnonzero(np.any(x.reshape(x.shape[0], -1) != 0, axis=1))
    return int(nonzero[-1]) + 1 if len(nonzero) else 0


def crop_at(x: np.ndarray, offset: int, padding_ratio: int = 6) -> np.ndarray:
    """Crop with a given offset in ``[0, 2 * (L // padding_ratio)]`` (reflection-padded valid part)."""
    length = valid_length(x)
    out = np.zeros_like(x)
    if length == 0:
        return out
    pad = length // padding_ratio
    padded = np.concatenate([x[:pad][::-1], x[:length], x[length - pad:length][::-1]]) if pad else x[:length]
    out[:length] = padded[offset:offset + length]
    return out


def crop(x: np.ndarray, rng: np.random.Generator, padding_ratio: int = 6) -> np.ndarray:
    pad = valid_length(x) // padding_ratio
    return crop_at(x, int(rng.integers(0, 2 * pad + 1)), padding_ratio)


def transform_joints(x: np.ndarray, matrix: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Row-vector product ``x[:, j] @ matrix`` on the joints ``joints`` of one sequence."""
    out = x.copy()
    out[:, joints] = x[:, joints] @ matrix
    return out


def joint_jitter(x: np.ndarray, rng: np.random.Generator, num_joints: int = 10,
                 low: float = -1.0, high: float = 1.0) -> np.ndarray:
    joints = rng.choice(x.shape[1], size=num_joints, replace=False)
    return transform_joints(x, rng.uniform(low, high, size=(x.shape[2], x.shape[2])), joints)


def speed_up_at(x: np.ndarray, start: int, rate: int = 4) -> np.ndarray:
    """Keep frames ``start, start + rate, ...`` of the valid part; zeros after them."""
    length = valid_length(x)
    kept = x[start:length:rate]
    out = np.zeros_like(x)
    out[:len(kept)] = kept
    return out


def speed_down_at(x: np.ndarray, start: int, rate: float = 0.3) -> np.ndarray:
    """Window of ``max(1, floor(rate * L + 0.5))`` frames at ``start``, linearly resampled to ``L`` frames."""
    length = valid_length(x)
    out = np.zeros_like(x)
    if length == 0:
        return out
    window = min(max(1, math.floor(rate * length + 0.5)), length)
    t = np.arange(length)
    numerator, denominator = t * (window - 1), max(length - 1, 1)
    low = start + numerator // denominator
    high = np.minimum(low + 1, start + window - 1)
    weight = ((numerator % denominator) / denominator).astype(x.dtype)[:, None, None]
    out[:length] = x[low] * (1 - weight) + x[high] * weight
    return out


def shear(x: np.ndarray, rng: np.random.Generator, amplitude: float = 0.5, joint_fraction: float = 0.5) -> np.ndarray:
    c = x.shape[2]
    joints = rng.choice(x.shape[1], size=round(joint_fraction * x.shape[1]), replace=False)
    matrix = rng.uniform(-amplitude, amplitude, size=(c, c))
    np.fill_diagonal(matrix, 1.0)
    return transform_joints(x, matrix, joints)


def ambiguity(x: np.ndarray, rng: np.random.Generator, speed: str = "up", speed_up_rate: int = 4,
              speed_down_rate: float = 0.3) -> np.ndarray:
    """Speed change, then shear (cagelib.methods.augment.AmbiguityTransform with its defaults)."""
    length = valid_length(x)
    if speed == "up":
        x = speed_up_at(x, int(rng.integers(0, max(min(speed_up_rate, length), 1))), speed_up_rate)
    else:
        window = min(max(1, math.floor(speed_down_rate * length + 0.5)), max(length, 1))
        x = speed_down_at(x, int(rng.integers(0, max(length - window, 0) + 1)), speed_down_rate)
    return shear(x, rng)


class ContrastiveViewDataset(Dataset):
    """``(query view, key view, ambiguity view, index)`` of sample ``index``, augmented in NumPy.

    Each worker draws from its own NumPy generator seeded from PyTorch's per-worker seed (distinct per
    worker and per epoch), the pattern of the baselines' ``worker_init_fn``.
    """

    def __init__(self, data: np.ndarray, speed: str = "up", speed_up_rate: int = 4, speed_down_rate: float = 0.3):
        self.data = np.asarray(data, dtype=np.float32)  # (N, T, V, 3)
        self.speed, self.speed_up_rate, self.speed_down_rate = speed, speed_up_rate, speed_down_rate
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        if self._rng is None:
            self._rng = np.random.default_rng(torch.initial_seed() % 2**63)
        x, rng = self.data[index], self._rng
        query = joint_jitter(crop(x, rng), rng)
        key = joint_jitter(crop(x, rng), rng)
        tilde = ambiguity(x, rng, self.speed, self.speed_up_rate, self.speed_down_rate)
        return query.astype(np.float32), key.astype(np.float32), tilde.astype(np.float32), index


class ViewFeeder:
    """Stands in for ``CAGE.augment`` / ``CAGE.ambiguity``: returns the views made by the workers.

    ``CAGE.forward`` calls ``augment`` twice (query, then key) and ``ambiguity`` once per step.
    """

    def __init__(self):
        self._views: list[torch.Tensor] = []
        self._ambiguity: torch.Tensor | None = None

    def load(self, query: torch.Tensor, key: torch.Tensor, tilde: torch.Tensor) -> None:
        self._views, self._ambiguity = [query, key], tilde

    def augment(self, x: torch.Tensor, generator) -> torch.Tensor:
        return self._views.pop(0)

    def ambiguity(self, x: torch.Tensor, generator) -> torch.Tensor:
        return self._ambiguity


def make_loader(data: np.ndarray, contrast, batch_size: int, num_workers: int, seed: int = 0) -> DataLoader:
    """The baselines' DataLoader: shuffled, last batch dropped, non-persistent workers."""
    dataset = ContrastiveViewDataset(data, contrast.ambiguity_speed, contrast.speed_up_rate, contrast.speed_down_rate)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True,
                      generator=generator)


class ReferenceTrainer:
    """The reference loop one step at a time (the benchmark interleaves it with the other paths).

    ``step()`` takes the next batch from the loader (a new epoch, when one ends, restarts the workers as
    the baselines' non-persistent loaders do), copies it to the device, trains one step and reads the loss
    with ``.item()``; it returns that loss.
    """

    def __init__(self, model, optimizer, loader: DataLoader, device: torch.device):
        self.model, self.optimizer, self.loader, self.device = model, optimizer, loader, device
        self.feeder = ViewFeeder()
        model.augment, model.ambiguity = self.feeder.augment, self.feeder.ambiguity
        model.train()
        self._batches = None

    def _next(self):
        if self._batches is not None:
            try:
                return next(self._batches)
            except StopIteration:
                pass
        self._batches = iter(self.loader)  # a new epoch: new workers
        return next(self._batches)

    def step(self) -> float:
        query, key, tilde, index = self._next()
        query, key, tilde = (v.float().to(self.device) for v in (query, key, tilde))
        self.feeder.load(query, key, tilde)
        out = self.model(query, None, index.to(self.device))
        self.optimizer.zero_grad()
        out["loss"].backward()
        self.optimizer.step()
        return out["loss"].item()


def run_reference(model, optimizer, loader: DataLoader, device: torch.device, steps: int, warmup: int) -> dict:
    """Train ``warmup + steps`` steps the reference way; time the last ``steps`` (data waits included).

    Returns ``seconds`` (timed steps), ``warmup_seconds``, ``losses`` (every step's loss, read by
    ``.item()`` as the baselines log it).
    """
    trainer = ReferenceTrainer(model, optimizer, loader, device)
    began = time.perf_counter()
    losses = [trainer.step() for _ in range(warmup)]
    _synchronize(device)
    timed_from = time.perf_counter()
    losses += [trainer.step() for _ in range(steps)]
    _synchronize(device)
    end = time.perf_counter()
    return {"seconds": end - timed_from, "warmup_seconds": timed_from - began, "losses": losses}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
