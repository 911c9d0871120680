"""Emotion-Gait (E-Gait) / STEP HDF5 files -> ``GaitSet``.

Layout (the STEP / E-Gait release): a features file with one dataset per gait, keyed by a name such
as ``"002_Sad_positions.csv"``, value ``T x 48`` (16 joints x xyz in ``cagelib.skeleton`` order,
float64), and a labels file with one scalar integer per gait under the same key. Part I is
``features.h5`` / ``labels.h5`` (342 gaits), Part II ``features_ELMD.h5`` / ``labels_ELMD.h5`` (1,835).
Gaits have different lengths; the files store the root at the origin in every frame. A gait stored
the other way round is an error naming it: ``(48, T)`` by its shape, a square ``(48, 48)`` one when
its columns, not its rows, form a rigid skeleton (bone lengths constant over the frames).

Label names: the files store only integers 0..3. Which emotion each integer means is not recorded in
the files and the public releases disagree (STEP issue 11), so the mapping is the ``label_names``
argument. The default ``STEP_LABEL_NAMES`` is the order in the STEP code
(``emotions = ['Angry', 'Neutral', 'Happy', 'Sad']``). See ``data/README.md`` for what the gait names
in ``labels.h5`` suggest (a different order); check it against your release before reporting
per-class results.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from ..errors import CagelibError, DataFileError, NonFiniteError, first_nonfinite
from ..skeleton import NUM_JOINTS, bone_lengths
from .files import require_file
from .gaps import DEFAULT_MAX_GAP, apply_nan_policy, check_nan_policy
from .gaitset import GaitSet

# The STEP code's order (classifier scripts: emotions = ['Angry', 'Neutral', 'Happy', 'Sad']).
STEP_LABEL_NAMES: tuple[str, ...] = ("angry", "neutral", "happy", "sad")
# The order that the emotion words in labels.h5's gait names point to (data/README.md): an alternative.
FILENAME_LABEL_NAMES: tuple[str, ...] = ("happy", "angry", "sad", "neutral")


def _read_h5(path: Path) -> dict[str, np.ndarray]:
    require_file(path, "an HDF5 file (.h5)")
    key = None
    try:
        with h5py.File(path, "r") as f:
            out = {}
            for key in f.keys():
                if not isinstance(f[key], h5py.Dataset):
                    raise DataFileError(path, None, f"entry {key!r} is a group; expected one dataset per gait")
                out[key] = f[key][()]
            return out
    except (OSError, TypeError, ValueError, KeyError, RuntimeError) as err:
        if isinstance(err, CagelibError):
            raise
        where = None if key is None else f"entry {key!r}"
        raise DataFileError(path, where, f"cannot be read as HDF5 ({type(err).__name__}: {err})") from None


def _gait(value: np.ndarray, key: str, path: Path, nan_policy: str, max_gap: int) -> np.ndarray:
    x = np.asarray(value)
    if x.dtype.kind not in "iuf":
        raise DataFileError(path, None, f"gait {key!r} must hold real numbers, got dtype {x.dtype}")
    row = NUM_JOINTS * 3
    if x.ndim == 2 and x.shape[0] == row and x.shape[1] not in (0, row):
        raise DataFileError(path, None, f"gait {key!r} has shape {x.shape}: it looks transposed ({row} rows = 16 "
                            f"joints x xyz, {x.shape[1]} columns); expected (T, {row}), one row per frame",
                            "store the transpose (frames along the first axis)")
    if x.shape == (row, row) and _looks_transposed(x):
        raise DataFileError(path, None, f"gait {key!r} is stored transposed: a {row} x {row} array whose bone "
                            f"lengths are consistent down its columns (median variation "
                            f"{_bone_variation(x.T):.1%}) but not along its rows ({_bone_variation(x):.0%}); "
                            f"expected (T, {row}), one row per frame", "store the transpose")
    if x.ndim == 2 and x.shape[1] == row:
        x = x.reshape(len(x), NUM_JOINTS, 3)  # (T, 48) -> (T, 16, 3)
    if x.ndim != 3 or x.shape[1:] != (NUM_JOINTS, 3) or len(x) == 0:
        raise DataFileError(path, None, f"gait {key!r} has shape {np.shape(value)}, expected (T, 48) with T >= 1")
    frame = first_nonfinite(x)
    if frame is not None and nan_policy == "reject":
        raise NonFiniteError(path, None, f"gait {key!r} contains NaN or inf (frame {frame})",
                             f"pass nan_policy='interpolate' to fill gaps of up to {max_gap} frames")
    x = apply_nan_policy(x, nan_policy, max_gap, path, f"gait {key!r}")
    with np.errstate(over="ignore"):
        out = x.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataFileError(path, None, f"gait {key!r} has values too large for float32")
    return out


def _bone_variation(rows: np.ndarray) -> float:
    """Median over the skeleton's bones of (std / mean) of the bone's length over the frames of a
    ``(T, 48)`` array: 0.1-0.3 % for the real E-Gait samples, ~40 % for noise, >100 % for a transposed gait."""
    with np.errstate(all="ignore"):
        lengths = bone_lengths(np.asarray(rows, dtype=np.float64).reshape(len(rows), NUM_JOINTS, 3))
        variation = lengths.std(axis=0) / lengths.mean(axis=0)
    variation = variation[np.isfinite(variation)]
    return float(np.median(variation)) if variation.size else float("inf")


def _looks_transposed(x: np.ndarray) -> bool:
    """A square (48, 48) gait is ambiguous by shape: it is transposed when its columns, read as frames,
    form a rigid skeleton (bones vary < 10 %) and its rows do not (bones vary 4 x more)."""
    if not np.isfinite(x).all():
        return False
    as_columns = _bone_variation(x.T)
    return as_columns < 0.1 and _bone_variation(x) > 4 * as_columns


def _label(value: np.ndarray, key: str, path: Path, n_names: int) -> int:
    v = np.asarray(value)
    first = v.ravel()[0] if v.size == 1 else None
    if first is None or v.dtype.kind not in "iuf" or not np.isfinite(first) or first != np.round(first):
        shown = repr(first.item()) if first is not None else f"{v.dtype} of shape {v.shape}"
        raise DataFileError(path, None, f"label of {key!r} is {shown}, expected one integer")
    label = int(first)
    if not 0 <= label < n_names:
        raise DataFileError(path, None, f"label of {key!r} is {label}, outside 0..{n_names - 1} (label_names "
                            f"has {n_names})")
    return label


def load_egait(
    features_path: str | Path,
    labels_path: str | Path | None = None,
    label_names: Sequence[str] = STEP_LABEL_NAMES,
    extra_labels: str = "error",
    fps: float = 30.0,
    nan_policy: str = "reject",
    max_gap: int = DEFAULT_MAX_GAP,
) -> GaitSet:
    """Read an E-Gait/STEP features file (and its labels file) into a ``GaitSet``.

    - ``labels_path=None``: every gait unlabelled (``-1``).
    - ``label_names``: name of label 0, 1, ...; the default is the STEP code's order. WARNING: the
      E-Gait releases disagree on this order (SPEC, data/README.md); pass the mapping that matches
      your files.
    - A gait without a label is always an error (naming the keys). Labels for gaits absent from the
      features file raise too unless ``extra_labels="ignore"`` (e.g. the full ``labels.h5`` with a
      sample of the features).

    ``meta``: ``clip_id`` (the HDF5 key), ``dataset`` (the features file name), ``group`` (= clip_id).
    Values are kept as stored (``units="as stored"``); gaits are sorted by key. The files do not
    record a frame rate: ``fps`` is what the ``GaitSet`` will say. NaN / inf frames are an error unless
    ``nan_policy="interpolate"`` (gaps of up to ``max_gap`` frames, ``cagelib.data.gaps``). Problems
    raise ``DataFileError`` naming the file, the gait's key and the problem.
    """
    if extra_labels not in ("error", "ignore"):
        raise ValueError(f"extra_labels must be 'error' or 'ignore', got {extra_labels!r}")
    check_nan_policy(nan_policy, max_gap)
    features_path = Path(features_path)
    features = _read_h5(features_path)
    if not features:
        raise DataFileError(features_path, None, "holds no gaits")
    keys = sorted(features)
    label_names = tuple(label_names)
    labels = np.full(len(keys), -1, dtype=np.int64)
    if labels_path is not None:
        labels_path = Path(labels_path)
        stored = _read_h5(labels_path)
        missing = [k for k in keys if k not in stored]
        if missing:
            raise DataFileError(
                labels_path, None, f"no label for {len(missing)} gait(s) of {features_path.name}: "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        extra = sorted(set(stored) - set(features))
        if extra and extra_labels == "error":
            raise DataFileError(
                labels_path, None, f"{len(extra)} label key(s) have no gait in {features_path.name}: "
                f"{extra[:5]}{' ...' if len(extra) > 5 else ''} (pass extra_labels='ignore' to allow)"
            )
        labels = np.array([_label(stored[k], k, labels_path, len(label_names)) for k in keys], dtype=np.int64)
    positions = [_gait(features[k], k, features_path, nan_policy, max_gap) for k in keys]
    clip_id = np.array(keys, dtype=str)
    meta = {"clip_id": clip_id, "dataset": np.full(len(keys), features_path.name), "group": clip_id.copy()}
    try:
        return GaitSet(positions, labels, label_names, meta, fps=fps, units="as stored")
    except CagelibError as err:
        raise err.located(features_path) from None
