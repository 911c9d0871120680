"""``GaitSet``: variable-length skeleton clips with labels and metadata, and its ``.npz`` file format.

One format serves ``GaitSet.save`` / ``GaitSet.load`` and users' own data (``load_user_data``):
an ``.npz`` with

- ``positions``: ``(N, T, 16, 3)`` (zero-padded; give ``lengths`` if clips are shorter than ``T``),
  or ``(sum T_i, 16, 3)`` clips concatenated along time together with ``lengths`` (what ``save``
  writes), or an object array of ``(T_i, 16, 3)`` arrays (needs ``allow_pickle=True``: trusted files
  only). A last axis of 48 (16 joints x xyz, the E-Gait row layout) is accepted for ``16, 3``.
- ``lengths``: ``(N,)`` int, frames per clip (optional for the padded form).
- ``labels``: ``(N,)`` int, ``-1`` = unlabelled (optional: all unlabelled); or ``(N,)`` str naming
  each clip's label, which needs ``label_names`` (``""`` = unlabelled).
- ``label_names``: ``(K,)`` str, name of label ``k`` (optional: ``"0" .. "K-1"``).
- ``fps`` (scalar, default 30) and ``units`` (scalar str, default ``"unknown"``), optional.
- any other array with first dimension ``N``: a metadata column (a ``meta_`` prefix is stripped).

Joints follow ``cagelib.skeleton`` (16 joints, E-Gait order, y up). Problems raise
``cagelib.errors.DataFileError`` naming the file, the member or clip and the problem; NaN / inf frames
are rejected unless ``nan_policy="interpolate"`` (``cagelib.data.gaps``).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_savez
from ..errors import CagelibError, DataFileError
from ..skeleton import NUM_JOINTS
from .files import require_file
from .gaps import DEFAULT_MAX_GAP, apply_nan_policy, check_nan_policy

_RESERVED = ("positions", "lengths", "labels", "label_names", "fps", "units")
POSITION_LAYOUTS = ("(N, T, 16, 3) zero-padded clips (with an optional 'lengths'), (frames, 16, 3) clips "
                    "concatenated along time with 'lengths', or either with the last two axes as 48 "
                    "(16 joints x xyz)")


@dataclass(repr=False, eq=False)
class GaitSet:
    """Clips ``positions[i]: float32 (T_i, 16, 3)`` with ``labels`` and per-clip ``meta``.

    Construction validates everything and raises ``DataFileError`` (a ``ValueError``) naming the clip
    or field and the problem.
    """

    positions: list[np.ndarray]  # N clips, float32 (T_i, 16, 3), y up
    labels: np.ndarray  # int64 (N,), -1 = unlabelled
    label_names: tuple[str, ...]  # name of each label value
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # per-clip columns, each of length N
    fps: float = 30.0  # frames per second
    units: str = "m"  # unit of the coordinates ("m", or "unknown" when a file does not say)

    def __post_init__(self) -> None:
        self.positions = [_as_positions(p, i) for i, p in enumerate(self.positions)]
        self.labels = np.asarray(self.labels)
        self.label_names = tuple(str(n) for n in self.label_names)
        self.meta = {str(k): _as_column(v) for k, v in self.meta.items()}
        self.fps = _as_scalar(self.fps, "fps", float)
        self.units = _as_scalar(self.units, "units", str)
        self.validate()

    def validate(self) -> None:
        """Check shapes, finiteness, label range and metadata lengths; raise ``DataFileError``."""
        n = len(self.positions)
        for i, p in enumerate(self.positions):
            if p.ndim != 3 or p.shape[1:] != (NUM_JOINTS, 3):
                raise DataFileError(None, f"clip {i}", f"positions must be (T, {NUM_JOINTS}, 3), got {p.shape}")
            if p.shape[0] == 0:
                raise DataFileError(None, f"clip {i}", "has no frames")
            if not np.isfinite(p).all():
                frame = int(np.flatnonzero(~np.isfinite(p.reshape(len(p), -1)).all(axis=1))[0])
                raise DataFileError(None, f"clip {i}", f"positions contain NaN or inf (frame {frame})")
        if self.labels.shape != (n,):
            raise DataFileError(None, "labels", f"labels must have shape ({n},) for {n} clips, got {self.labels.shape}")
        if n and not np.issubdtype(self.labels.dtype, np.integer):
            raise DataFileError(None, "labels", f"labels must be integers, got dtype {self.labels.dtype}")
        self.labels = self.labels.astype(np.int64)
        bad = (self.labels < -1) | (self.labels >= len(self.label_names))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFileError(
                None, "labels", f"label {self.labels[i]} of clip {i} is out of range: expected -1 (unlabelled) or "
                f"0..{len(self.label_names) - 1} for label_names {self.label_names}"
            )
        for key, column in self.meta.items():
            if column.ndim == 0 or len(column) != n:
                raise DataFileError(None, f"meta[{key!r}]", f"meta[{key!r}] has length "
                                    f"{len(column) if column.ndim else 'none (a scalar)'}, expected {n} (one per clip)")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise DataFileError(None, "fps", f"fps must be a finite number > 0, got {self.fps}")

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


def _as_positions(p, i: int) -> np.ndarray:
    """Clip ``i`` as float32; a non-numeric or complex array is an error (never silently converted)."""
    a = p if isinstance(p, np.ndarray) else np.asarray(p) if isinstance(p, (list, tuple)) or hasattr(p, "__array__") else None
    if a is None or a.dtype.kind not in "iuf":
        what = f"dtype {a.dtype}" if a is not None else type(p).__name__
        raise DataFileError(None, f"clip {i}", f"positions must be an array of real numbers, got {what}")
    with np.errstate(over="ignore"):
        out = a.astype(np.float32)
    if a.dtype != np.float32 and np.isfinite(a).all() and not np.isfinite(out).all():
        raise DataFileError(None, f"clip {i}", "positions too large for float32")
    return out


def _as_scalar(value, name: str, kind: type):
    """``fps`` (a real number) or ``units`` (a string), given as a plain value or a 0-d / 1-element array."""
    a = np.asarray(value)
    if a.size != 1 or (kind is float and a.dtype.kind not in "iuf") or (kind is str and a.dtype.kind not in "US"):
        raise DataFileError(None, name, f"{name} must be one {'number' if kind is float else 'string'}, got "
                            f"{a.dtype} of shape {a.shape}")
    return kind(a.reshape(()).item() if kind is float else a.reshape(()).item())


def _as_column(values) -> np.ndarray:
    column = np.asarray(values)
    if column.dtype == object and all(isinstance(v, str) for v in column.ravel()):
        column = column.astype(str)  # so that the set saves without pickle
    return column


def split_clips(frames: np.ndarray, lengths: Sequence[int]) -> list[np.ndarray]:
    """Cut ``(sum T_i, ...)`` into clips of ``lengths`` frames."""
    return np.split(frames, np.cumsum(lengths)[:-1]) if len(lengths) else []


def load_user_data(path: str | Path, allow_pickle: bool = False, nan_policy: str = "reject",
                   max_gap: int = DEFAULT_MAX_GAP) -> GaitSet:
    """Load a user's ``.npz`` (format in this module's docstring) as a validated ``GaitSet``.

    Errors are ``DataFileError`` (a ``ValueError``) naming ``path``, the member or clip and the problem.
    NaN / inf frames: rejected (``nan_policy="reject"``), or gaps of up to ``max_gap`` frames inside a
    clip interpolated (``"interpolate"``, ``cagelib.data.gaps``).
    """
    check_nan_policy(nan_policy, max_gap)
    path = require_file(path, "an .npz file")
    if not zipfile.is_zipfile(path):
        raise DataFileError(path, None, "cannot be read as .npz (not a zip archive)")
    data, member = {}, None
    try:
        with np.load(path, allow_pickle=allow_pickle) as z:
            for member in z.files:
                data[member] = z[member]
    except ValueError as err:
        if "Object arrays" in str(err) or "allow_pickle" in str(err):
            raise DataFileError(
                path, None, f"holds object arrays (member {member!r}); store positions as (N, T, 16, 3) + lengths, "
                "or pass allow_pickle=True if you trust the file") from None
        raise DataFileError(path, member, f"cannot be read as .npz ({err})") from None
    except Exception as err:  # zipfile.BadZipFile, OSError, EOFError, ...
        raise DataFileError(path, member, f"cannot be read as .npz ({type(err).__name__}: {err})") from None
    try:
        return _gaitset_from_arrays(data, nan_policy, max_gap)
    except CagelibError as err:
        raise err.located(path) from None


def _member(data: dict, key: str) -> np.ndarray | None:
    value = data.get(key)
    if value is not None and not isinstance(value, np.ndarray):
        raise DataFileError(None, key, f"member {key!r} is not a .npy array ({type(value).__name__})")
    return value


def _check_lengths(lengths: np.ndarray, n: int | None) -> np.ndarray:
    """``lengths`` as int64 ``(N,)``: whole numbers >= 1 (a fractional length is an error, never truncated)."""
    if lengths.ndim != 1 or lengths.dtype.kind not in "iuf" or (n is not None and len(lengths) != n):
        raise DataFileError(None, "lengths", f"lengths must be {n if n is not None else 'N'} whole numbers, one per "
                            f"clip, got {lengths.dtype} of shape {lengths.shape}")
    bad = ~np.isfinite(lengths) | (lengths != np.round(lengths)) | (lengths < 1) if lengths.size else np.zeros(0, bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFileError(None, "lengths", f"length {lengths[i]} of clip {i} is not a whole number >= 1")
    return lengths.astype(np.int64)


def _labels(data: dict, n: int) -> tuple[np.ndarray, tuple[str, ...]]:
    labels, names = _member(data, "labels"), _member(data, "label_names")
    label_names = None if names is None else tuple(str(s) for s in np.atleast_1d(names))
    if labels is None:
        labels = np.full(n, -1, dtype=np.int64)
    elif labels.dtype.kind in "US":  # names per clip
        if label_names is None:
            raise DataFileError(None, "labels", f"labels are strings ({sorted(set(labels.ravel().tolist()))[:5]}) but "
                                "there is no 'label_names' array to number them", "add label_names (the order "
                                "of the classes) or store integer labels")
        index = {name: k for k, name in enumerate(label_names)}
        unknown = [i for i, v in enumerate(labels.ravel()) if str(v) and str(v) not in index]
        if unknown:
            raise DataFileError(None, "labels", f"label {str(labels.ravel()[unknown[0]])!r} of clip {unknown[0]} is not "
                                f"in label_names {label_names}")
        labels = np.array([index.get(str(v), -1) for v in labels.ravel()], dtype=np.int64).reshape(labels.shape)
    elif labels.dtype.kind not in "iu":
        raise DataFileError(None, "labels", f"labels must be integers, got dtype {labels.dtype}")
    if label_names is None:
        label_names = tuple(str(k) for k in range(int(np.max(labels, initial=-1)) + 1))
    return labels, label_names


def _gaitset_from_arrays(data: dict[str, np.ndarray], nan_policy: str = "reject",
                         max_gap: int = DEFAULT_MAX_GAP) -> GaitSet:
    if "positions" not in data:
        raise DataFileError(None, None, f"no 'positions' array (found {sorted(data)})")
    for key in data:
        _member(data, key)
    pos = data["positions"]
    lengths = data.get("lengths")
    if lengths is not None:
        lengths = _check_lengths(lengths, None)
    if pos.dtype == object:
        clips = [_as_positions(p, i) for i, p in enumerate(pos.ravel())]
    else:
        if pos.dtype.kind not in "iuf":
            raise DataFileError(None, "positions", f"positions must be real numbers, got dtype {pos.dtype}")
        if pos.shape[-1:] == (NUM_JOINTS * 3,):
            pos = pos.reshape(*pos.shape[:-1], NUM_JOINTS, 3)
        if pos.ndim not in (3, 4) or pos.shape[-2:] != (NUM_JOINTS, 3):
            raise DataFileError(None, "positions", f"has shape {data['positions'].shape}; expected "
                                f"{POSITION_LAYOUTS}")
        if pos.ndim == 4:  # (N, T, 16, 3), zero-padded
            if lengths is None:
                lengths = np.full(len(pos), pos.shape[1])
            if len(lengths) != len(pos) or (lengths > pos.shape[1]).any():
                raise DataFileError(None, "lengths", f"lengths must be {len(pos)} values in 1..{pos.shape[1]}, "
                                    f"got {lengths}")
            clips = [pos[i, : int(n)] for i, n in enumerate(lengths)]
        elif pos.ndim == 3:  # (sum T_i, 16, 3) + lengths
            if lengths is None:
                raise DataFileError(None, "positions", f"has shape {data['positions'].shape}: (frames, 16, 3) positions need a "
                                    "'lengths' array saying where each clip ends", "add lengths (frames per clip), "
                                    "or store positions as (N, T, 16, 3)")
            if int(np.sum(lengths)) != len(pos):
                raise DataFileError(None, "lengths", f"lengths sum to {int(np.sum(lengths))}, but positions has "
                                    f"{len(pos)} frames")
            clips = split_clips(pos, lengths)
    n = len(clips)
    labels, label_names = _labels(data, n)
    meta = {}
    for key, value in data.items():
        if key in _RESERVED:
            continue
        if value.ndim == 0 or len(value) != n:
            raise DataFileError(None, key, f"array {key!r} of shape {value.shape} is not a per-clip column of "
                                f"length {n}")
        meta[key[5:] if key.startswith("meta_") else key] = value
    fps = _as_scalar(data["fps"], "fps", float) if "fps" in data else 30.0
    units = _as_scalar(data["units"], "units", str) if "units" in data else "unknown"
    clips = [np.asarray(c) for c in clips]
    clips = [apply_nan_policy(c, nan_policy, max_gap, None, f"clip {i}") if c.ndim == 3 and c.dtype.kind == "f"
             else c for i, c in enumerate(clips)]
    return GaitSet(clips, labels, label_names, meta, fps, units)
