"""NaN / inf in loaded motion: rejected by default, or short gaps filled by linear interpolation.

The loaders (``read_bvh``, ``load_user_data``, ``load_egait``) take ``nan_policy``:

- ``"reject"`` (default): the first non-finite frame is an error (``NonFiniteError`` naming the file,
  the clip and the frame);
- ``"interpolate"``: every run of at most ``max_gap`` consecutive non-finite frames of one coordinate
  (one channel for BVH) that has finite frames on both sides is filled by linear interpolation in
  time; a longer run, or one at the start or end of the clip, is still an error (trim the clip, or
  raise ``max_gap`` knowingly).

Nothing non-finite ever leaves a loader.
"""
from __future__ import annotations

import numpy as np

from ..errors import NonFiniteError

NAN_POLICIES = ("reject", "interpolate")
DEFAULT_MAX_GAP = 5  # frames: a sixth of a second at 30 fps


def check_nan_policy(nan_policy: str, max_gap: int) -> None:
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if int(max_gap) != max_gap or max_gap < 1:
        raise ValueError(f"max_gap must be a positive number of frames, got {max_gap!r}")


def apply_nan_policy(x: np.ndarray, nan_policy: str, max_gap: int, source, item: str | None) -> np.ndarray:
    """``x: (T, ...)`` float, finite, with gaps filled (``"interpolate"``) or unchanged; see the module."""
    check_nan_policy(nan_policy, max_gap)
    flat = np.asarray(x).reshape(len(x), -1)  # (T, D)
    finite = np.isfinite(flat)
    if finite.all():
        return x
    prefix = f"{item}, " if item else ""
    if nan_policy == "reject":
        frame = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise NonFiniteError(source, f"{prefix}frame {frame}", "contains NaN or inf",
                             f"pass nan_policy='interpolate' to fill gaps of up to {max_gap} frames")
    out = flat.astype(np.float64)  # a copy
    T = len(out)
    frames = np.arange(T)
    for d in np.flatnonzero(~finite.all(axis=0)):
        bad = ~finite[:, d]
        edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs [start, end)
        for start, end in zip(starts, ends):
            where = f"{prefix}frames {start}-{end - 1}" if end - start > 1 else f"{prefix}frame {start}"
            if start == 0 or end == T:
                raise NonFiniteError(source, where, "NaN or inf at the start or end of the clip cannot be "
                                     "interpolated", "trim the clip")
            if end - start > max_gap:
                raise NonFiniteError(source, where, f"a gap of {end - start} non-finite frames is longer than "
                                     f"max_gap={max_gap}")
        good = ~bad
        out[bad, d] = np.interp(frames[bad], frames[good], out[good, d])
    return out.reshape(np.shape(x)).astype(np.asarray(x).dtype, copy=False)
