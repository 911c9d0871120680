"""``GaitSet``: variable-length skeleton clips with labels and metadata, and its ``.npz`` file format.

One format serves ``GaitSet.save`` / ``GaitSet.load`` and users' own data (``load_user_data``):
an ``.npz`` with

- ``positions``: ``(N, T, 16, 3)`` (zero-padded; give ``lengths`` if clips are shorter than ``T``),
  or ``(sum T_i, 16, 3)`` clips concatenated along time together with ``lengths`` (what ``save``
  writes), or an object array of ``(T_i, 16, 3)`` arrays (needs ``allow_pickle=True``: trusted files
  only). A last axis of 48 (16 joints x xyz, the E-Gait row layout) is accepted for ``16, 3``.
- ``lengths``: ``(N,)`` int, frames per clip (optional for the padded form).
- ``labels``: ``(N,)`` int, ``-1`` = unlabelled (optional: all unlabelled).
- ``label_names``: ``(K,)`` str, name of label ``k`` (optional: ``"0" .. "K-1"``).
- ``fps`` (scalar, default 30) and ``units`` (scalar str, default ``"unknown"``), optional.
- any other array with first dimension ``N``: a metadata column (a ``meta_`` prefix is stripped).

Joints follow ``cagelib.skeleton`` (16 joints, E-Gait order, y up).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_savez
from ..skeleton import NUM_JOINTS

_RESERVED = ("positions", "lengths", "labels", "label_names", "fps", "units")


@dataclass(repr=False, eq=False)
class GaitSet:
    """Clips ``positions[i]: float32 (T_i, 16, 3)`` with ``labels`` and per-clip ``meta``.

    Construction validates everything and raises ``ValueError`` naming the problem.
    """

    positions: list[np.ndarray]  # N clips, float32 (T_i, 16, 3), y up
    labels: np.ndarray  # int64 (N,), -1 = unlabelled
    label_names: tuple[str, ...]  # name of each label value
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # per-clip columns, each of length N
    fps: float = 30.0  # frames per second
    units: str = "m"  # unit of the coordinates ("m", or "unknown" when a file does not say)

    def __post_init__(self) -> None:
        self.positions = [np.asarray(p, dtype=np.float32) for p in self.positions]
        self.labels = np.asarray(self.labels)
        self.label_names = tuple(str(n) for n in self.label_names)
        self.meta = {str(k): _as_column(v) for k, v in self.meta.items()}
        self.fps = float(self.fps)
        self.units = str(self.units)
        self.validate()

    def validate(self) -> None:
        """Check shapes, finiteness, label range and metadata lengths; raise ``ValueError``."""
        n = len(self.positions)
        for i, p in enumerate(self.positions):
            if p.ndim != 3 or p.shape[1:] != (NUM_JOINTS, 3):
                raise ValueError(f"clip {i}: positions must be (T, {NUM_JOINTS}, 3), got {p.shape}")
            if p.shape[0] == 0:
                raise ValueError(f"clip {i}: has no frames")
            if not np.isfinite(p).all():
                raise ValueError(f"clip {i}: positions contain NaN or inf")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) for {n} clips, got {self.labels.shape}")
        if n and not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {self.labels.dtype}")
        self.labels = self.labels.astype(np.int64)
        bad = (self.labels < -1) | (self.labels >= len(self.label_names))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"label {self.labels[i]} of clip {i} is out of range: expected -1 (unlabelled) or "
                f"0..{len(self.label_names) - 1} for label_names {self.label_names}"
            )
        for key, column in self.meta.items():
            if len(column) != n:
                raise ValueError(f"meta[{key!r}] has length {len(column)}, expected {n} (one per clip)")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    def __len__(self) -> int:
        return len(self.positions)

    def __repr__(self) -> str:
        s = self.summary()
        return (f"GaitSet({s['clips']} clips, {s['frames']} frames, labels {s['labels']}, "
                f"meta {s['meta']}, fps={self.fps:g}, units={self.units!r})")

    @property
    def lengths(self) -> np.ndarray:
        """Frames per clip, int64 ``(N,)``."""
        return np.array([p.shape[0] for p in self.positions], dtype=np.int64)

    def subset(self, indices) -> "GaitSet":
        """The clips at ``indices`` (ints or a boolean mask), metadata included."""
        indices = np.asarray(indices)
        idx = np.arange(len(self))[indices if indices.dtype == bool else indices.astype(np.int64)]
        return GaitSet(
            [self.positions[i] for i in idx], self.labels[idx], self.label_names,
            {k: v[idx] for k, v in self.meta.items()}, self.fps, self.units,
        )

    def padded(self, T: int | None = None) -> np.ndarray:
        """All clips as one float32 ``(N, T, 16, 3)`` array: zero-padded, longer clips cut to ``T``.

        ``T`` defaults to the longest clip.
        """
        T = int(self.lengths.max(initial=0)) if T is None else int(T)
        out = np.zeros((len(self), T, NUM_JOINTS, 3), dtype=np.float32)  # (N, T, V, C)
        for i, p in enumerate(self.positions):
            out[i, : min(T, len(p))] = p[:T]
        return out

    def summary(self) -> dict:
        """Counts: clips, frames, clips per label (and unlabelled), clip length range, fps, units."""
        lengths = self.lengths
        per_label = {name: int((self.labels == k).sum()) for k, name in enumerate(self.label_names)}
        per_label["unlabelled"] = int((self.labels == -1).sum())
        return {
            "clips": len(self),
            "frames": int(lengths.sum()),
            "labels": per_label,
            "length_min_median_max": (
                (int(lengths.min()), float(np.median(lengths)), int(lengths.max())) if len(self) else None
            ),
            "fps": self.fps,
            "units": self.units,
            "meta": sorted(self.meta),
        }

    def save(self, path: str | Path, compress: bool = True) -> Path:
        """Write the set as an ``.npz`` (the format of this module's docstring), atomically."""
        arrays = {
            "positions": np.concatenate(self.positions) if len(self) else np.zeros((0, NUM_JOINTS, 3), np.float32),
            "lengths": self.lengths,
            "labels": self.labels,
            "label_names": np.array(self.label_names, dtype=str),
            "fps": np.array(self.fps),
            "units": np.array(self.units),
        }
        arrays.update({f"meta_{k}": v for k, v in self.meta.items()})
        return atomic_savez(path, arrays, compress)

    @classmethod
    def load(cls, path: str | Path) -> "GaitSet":
        """Read a file written by :meth:`save` (or any file :func:`load_user_data` accepts)."""
        return load_user_data(path)


def _as_column(values) -> np.ndarray:
    column = np.asarray(values)
    if column.dtype == object and all(isinstance(v, str) for v in column.ravel()):
        column = column.astype(str)  # so that the set saves without pickle
    return column


def split_clips(frames: np.ndarray, lengths: Sequence[int]) -> list[np.ndarray]:
    """Cut ``(sum T_i, ...)`` into clips of ``lengths`` frames."""
    return np.split(frames, np.cumsum(lengths)[:-1]) if len(lengths) else []


def load_user_data(path: str | Path, allow_pickle: bool = False) -> GaitSet:
    """Load a user's ``.npz`` (format in this module's docstring) as a validated ``GaitSet``.

    Errors are ``ValueError`` naming ``path`` and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: cannot be read as .npz (not a zip archive)")
    try:
        with np.load(path, allow_pickle=allow_pickle) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as err:
        if "Object arrays" in str(err):
            raise ValueError(
                f"{path}: holds object arrays; store positions as (N, T, 16, 3) + lengths, or pass "
                "allow_pickle=True if you trust the file"
            ) from None
        raise ValueError(f"{path}: cannot be read as .npz ({err})") from None
    except Exception as err:  # zipfile.BadZipFile, OSError, ...
        raise ValueError(f"{path}: cannot be read as .npz ({err})") from None
    try:
        return _gaitset_from_arrays(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _gaitset_from_arrays(data: dict[str, np.ndarray]) -> GaitSet:
    if "positions" not in data:
        raise ValueError(f"no 'positions' array (found {sorted(data)})")
    pos = data["positions"]
    lengths = data.get("lengths")
    if pos.dtype == object:
        clips = [np.asarray(p) for p in pos]
    else:
        if pos.shape[-1:] == (NUM_JOINTS * 3,):
            pos = pos.reshape(*pos.shape[:-1], NUM_JOINTS, 3)
        if pos.ndim == 4:  # (N, T, 16, 3), zero-padded
            if lengths is None:
                lengths = np.full(len(pos), pos.shape[1])
            lengths = np.asarray(lengths)
            if len(lengths) != len(pos) or (lengths > pos.shape[1]).any() or (lengths < 1).any():
                raise ValueError(f"lengths must be {len(pos)} values in 1..{pos.shape[1]}, got {lengths}")
            clips = [pos[i, : int(n)] for i, n in enumerate(lengths)]
        elif pos.ndim == 3:  # (sum T_i, 16, 3) + lengths
            if lengths is None:
                raise ValueError("positions of shape (frames, 16, 3) need a 'lengths' array (one clip per entry)")
            if int(np.sum(lengths)) != len(pos) or (np.asarray(lengths) < 1).any():
                raise ValueError(f"lengths sum to {int(np.sum(lengths))}, but positions has {len(pos)} frames")
            clips = split_clips(pos, np.asarray(lengths, dtype=np.int64))
        else:
            raise ValueError(f"positions must be (N, T, 16, 3) or (frames, 16, 3) with lengths, got {pos.shape}")
    n = len(clips)
    labels = data.get("labels", np.full(n, -1, dtype=np.int64))
    if "label_names" in data:
        label_names = tuple(str(s) for s in np.atleast_1d(data["label_names"]))
    else:
        label_names = tuple(str(k) for k in range(int(np.max(labels, initial=-1)) + 1))
    meta = {}
    for key, value in data.items():
        if key in _RESERVED:
            continue
        if value.ndim == 0 or len(value) != n:
            raise ValueError(f"array {key!r} of shape {value.shape} is not a per-clip column of length {n}")
        meta[key[5:] if key.startswith("meta_") else key] = value
    fps = float(data["fps"]) if "fps" in data else 30.0
    units = str(data["units"]) if "units" in data else "unknown"
    return GaitSet(clips, labels, label_names, meta, fps, units)
