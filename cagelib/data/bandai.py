"""Bandai-Namco-Research-Motiondataset (Kobayashi et al. 2023, arXiv 2306.08861) -> ``GaitSet``.

Layout of a release folder (``root/dataset-N/``): ``data/dataset-N_{content}_{style}_{id}.bvh`` with a
``.json`` beside each (``{"content": c, "style": s}``, 0-based line indices into
``cfg/content_label.txt`` and ``cfg/style_label.txt``, whose lines read ``dataset-N_{name}``). When a
``cfg`` folder is missing, names come from the file name; when both exist they must agree.

Emotion labels: dataset-1 performs 15 styles, four of which are emotions. ``load_bandai`` labels a
clip with ``EMOTION_LABEL_NAMES`` = (neutral, happy, sad, angry) when its style is normal, happy, sad
or angry (the order of dataset-1's style file, so label = style index) and its dataset is in
``emotion_datasets`` (default dataset-1 only: dataset-2's "normal" is one of seven walking styles,
not an acted emotion); every other clip gets ``-1``.

The compact format of the embedded file (``format = "cagelib-compact-1"``, lossless up to one
quantisation step): positions are rounded to integers of ``quantum`` metres (default 0.1 mm: error <= 0.05 mm per
coordinate); joints 1..15 are made root-relative (integer subtraction, exact); per clip the first
frame is stored as int32 (``first``, ``(N, 16, 3)``) and every later frame as the int16 difference
to the frame before (``deltas``, channel-major ``(48, sum T_i)``, zero at each clip's first frame).
Differences of smooth motion are small numbers that deflate compresses well (~8 MB for 149 k frames,
against 26 MB for float32). Labels, label names, fps, units and metadata columns are stored as in
``GaitSet.save``.

Caveat (SPEC): each style was recorded within one take group, so style and performer are
confounded; four of the seven dataset-1 "normal" locomotion clips are short (20-31 frames).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_savez
from ..skeleton import NUM_JOINTS, ROOT
from .bvh import BANDAI_JOINT_MAP, read_bvh
from .gaitset import GaitSet

DATASETS = ("dataset-1", "dataset-2")
EMOTION_LABEL_NAMES: tuple[str, ...] = ("neutral", "happy", "sad", "angry")
# Bandai style -> emotion label name.
EMOTION_STYLES: dict[str, str] = {"normal": "neutral", "happy": "happy", "sad": "sad", "angry": "angry"}
# Contents of the emotion task (dataset-1 locomotion); "walk" includes the second take walk_*_002.
EMOTION_CONTENTS: tuple[str, ...] = ("walk", "walk-back", "walk-left", "walk-right", "run", "dash")
DATASET2_WALKING: tuple[str, ...] = ("walk", "walk-turn-left", "walk-turn-right")
# What the embedded data set holds: every dataset-1 clip and the dataset-2 walking clips.
EMBEDDED_CONTENTS: dict[str, tuple[str, ...] | None] = {"dataset-1": None, "dataset-2": DATASET2_WALKING}
EMBEDDED_PATH = Path(__file__).resolve().parents[2] / "data" / "bandai.npz"  # the repository's data/
# A regular install (`pip install .`, a wheel) carries a copy inside the package (setup.py's build_py).
PACKAGED_PATH = Path(__file__).resolve().parents[1] / "_data" / "bandai.npz"


def embedded_path() -> Path:
    """Where the embedded set is: the installed package's copy, else the repository's ``data/bandai.npz``
    (an editable install or a checkout on ``sys.path``). Raises FileNotFoundError naming both places."""
    for path in (PACKAGED_PATH, EMBEDDED_PATH):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no embedded data file: looked for {PACKAGED_PATH} (installed package) and {EMBEDDED_PATH} "
        "(repository checkout). Reinstall the package from the repository (`pip install .` copies data/bandai.npz "
        "into it) or rebuild the file with `python -m cagelib data` (needs the Bandai BVH release; "
        "see data/README.md)"
    )
FORMAT = "cagelib-compact-1"
DEFAULT_QUANTUM = 1e-4  # metres per integer step of the compact format (0.1 mm)


def _names_from_cfg(folder: Path, kind: str, dataset: str) -> list[str] | None:
    path = folder / "cfg" / f"{kind}_label.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [n[len(dataset) + 1 :] if n.startswith(dataset + "_") else n for n in names]


def parse_clip_name(stem: str, dataset: str) -> tuple[str, str, str]:
    """``"dataset-1_walk-back_happy_001"`` -> ``("walk-back_happy_001", "walk-back", "happy")``."""
    clip_id = stem[len(dataset) + 1 :] if stem.startswith(dataset + "_") else stem
    parts = clip_id.split("_")
    if len(parts) != 3:
        raise ValueError(f"{stem}: expected a name {dataset}_<content>_<style>_<id>")
    return clip_id, parts[0], parts[1]


def list_clips(root: str | Path, dataset: str, contents: Sequence[str] | None = None) -> list[Path]:
    """Sorted ``.bvh`` paths of one dataset, optionally only the given contents."""
    folder = Path(root) / dataset / "data"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected <root>/{dataset}/data/*.bvh)")
    paths = sorted(folder.glob("*.bvh"))
    if contents is not None:
        paths = [p for p in paths if parse_clip_name(p.stem, dataset)[1] in set(contents)]
    return paths


def load_bandai(
    root: str | Path,
    datasets: Sequence[str] = DATASETS,
    contents: Mapping[str, Sequence[str] | None] | Sequence[str] | None = None,
    emotion_datasets: Sequence[str] = ("dataset-1",),
    progress: bool = False,
) -> GaitSet:
    """Read Bandai clips as a ``GaitSet`` in metres (16 joints via ``BANDAI_JOINT_MAP``).

    ``contents``: ``None`` = every clip; a sequence of content names for all datasets; or a dict
    ``{dataset: contents or None}`` (``EMBEDDED_CONTENTS`` is what the embedded file holds).
    ``meta``: ``clip_id`` (name without the ``dataset-N_`` prefix), ``content``, ``style``,
    ``dataset``, ``group`` (``"dataset-N/clip_id"``, unique per clip: split on it).
    """
    root = Path(root)
    positions, labels, fps_seen = [], [], set()
    meta: dict[str, list[str]] = {k: [] for k in ("clip_id", "content", "style", "dataset", "group")}
    for dataset in datasets:
        wanted = contents.get(dataset) if isinstance(contents, Mapping) else contents
        folder = root / dataset
        content_names = _names_from_cfg(folder, "content", dataset)
        style_names = _names_from_cfg(folder, "style", dataset)
        paths = list_clips(root, dataset, wanted)
        if not paths:
            raise FileNotFoundError(f"{folder / 'data'}: no matching .bvh clips")
        if progress:
            paths = tqdm(paths, desc=dataset)
        for path in paths:
            clip_id, content, style = parse_clip_name(path.stem, dataset)
            annotation = path.with_suffix(".json")
            if annotation.is_file() and content_names is not None and style_names is not None:
                try:
                    tags = json.loads(annotation.read_text())
                    c, s = content_names[int(tags["content"])], style_names[int(tags["style"])]
                except (ValueError, KeyError, IndexError, TypeError) as err:
                    raise ValueError(f"{annotation}: bad annotation ({err!r})") from None
                if (c, s) != (content, style):
                    raise ValueError(
                        f"{annotation}: says content={c!r}, style={s!r}; file name says {content!r}, {style!r}"
                    )
            x, fps = read_bvh(path, BANDAI_JOINT_MAP)
            positions.append(x)
            fps_seen.add(round(fps, 3))
            emotional = dataset in emotion_datasets and style in EMOTION_STYLES
            labels.append(EMOTION_LABEL_NAMES.index(EMOTION_STYLES[style]) if emotional else -1)
            for key, value in zip(meta, (clip_id, content, style, dataset, f"{dataset}/{clip_id}")):
                meta[key].append(value)
    if len(fps_seen) > 1:
        raise ValueError(f"{root}: clips have different frame rates {sorted(fps_seen)}")
    return GaitSet(
        positions, np.array(labels, dtype=np.int64), EMOTION_LABEL_NAMES,
        {k: np.array(v, dtype=str) for k, v in meta.items()}, fps=fps_seen.pop(), units="m",
    )


def emotion_clips(gs: GaitSet, contents: Sequence[str] = EMOTION_CONTENTS) -> GaitSet:
    """The emotion task: dataset-1 clips with an emotion label and a locomotion content.

    On the full release: 4 classes x 7 clips (walk x 2 takes, walk-back, walk-left, walk-right, run,
    dash). Split it by clip with ``repeated_grouped_kfold``: one clip is a big share of a test fold.
    """
    for key in ("dataset", "content"):
        if key not in gs.meta:
            raise ValueError(f"emotion_clips needs meta[{key!r}] (a set from load_bandai / load_embedded)")
    keep = (gs.meta["dataset"] == "dataset-1") & (gs.labels >= 0) & np.isin(gs.meta["content"], list(contents))
    return gs.subset(np.flatnonzero(keep))


def save_compact(gs: GaitSet, path: str | Path, quantum: float = DEFAULT_QUANTUM) -> Path:
    """Write ``gs`` in the compact format (module docstring), atomically."""
    if len(gs) == 0:
        raise ValueError("save_compact: the GaitSet is empty")
    lengths = gs.lengths
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    q = np.round(np.concatenate(gs.positions).astype(np.float64) / quantum).astype(np.int64)  # (F, V, 3)
    if np.abs(q).max() >= 2**31:
        raise ValueError(f"save_compact: positions exceed the int32 range at quantum {quantum}")
    q[:, ROOT + 1 :] -= q[:, ROOT : ROOT + 1]  # root-relative joints; the root stays absolute
    deltas = np.diff(q, axis=0, prepend=q[:1])  # (F, V, 3)
    deltas[starts] = 0
    if np.abs(deltas).max() > np.iinfo(np.int16).max:
        raise ValueError(f"save_compact: a frame-to-frame step exceeds {np.iinfo(np.int16).max * quantum:.2f} m")
    arrays = {
        "format": np.array(FORMAT),
        "quantum": np.array(quantum),
        "first": q[starts].astype(np.int32),  # (N, V, 3)
        "deltas": np.ascontiguousarray(deltas.reshape(len(q), -1).T.astype(np.int16)),  # (V*3, F)
        "lengths": lengths,
        "labels": gs.labels,
        "label_names": np.array(gs.label_names, dtype=str),
        "fps": np.array(gs.fps),
        "units": np.array(gs.units),
    }
    arrays.update({f"meta_{k}": v for k, v in gs.meta.items()})
    return atomic_savez(path, arrays, compress=True)


def load_compact(path: str | Path) -> GaitSet:
    """Read a compact file back into a float32 ``GaitSet``. Errors name the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path}: cannot be read as .npz ({err})") from None
    if str(data.get("format", "")) != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={data.get('format')!r})")
    lengths = data["lengths"].astype(np.int64)
    deltas = data["deltas"].T.reshape(-1, NUM_JOINTS, 3).astype(np.int64)  # (F, V, 3)
    if len(deltas) != lengths.sum() or len(data["first"]) != len(lengths):
        raise ValueError(f"{path}: lengths sum to {lengths.sum()} but deltas hold {len(deltas)} frames")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    deltas[starts] = data["first"]
    q = np.cumsum(deltas, axis=0)  # running sum over all frames ...
    before = np.concatenate([np.zeros((1, NUM_JOINTS, 3), np.int64), q[starts[1:] - 1]])  # (N, V, 3)
    q -= np.repeat(before, lengths, axis=0)  # ... restarted at every clip
    q[:, ROOT + 1 :] += q[:, ROOT : ROOT + 1]
    frames = (q * float(data["quantum"])).astype(np.float32)  # (F, V, 3)
    meta = {k[5:]: v for k, v in data.items() if k.startswith("meta_")}
    try:
        return GaitSet(
            np.split(frames, np.cumsum(lengths)[:-1]), data["labels"], tuple(data["label_names"].tolist()),
            meta, float(data["fps"]), str(data["units"]),
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_embedded(path: str | Path | None = None) -> GaitSet:
    """The embedded Bandai walking set (``data/bandai.npz`` of the repository, carried inside an installed
    package as ``cagelib/_data/bandai.npz``; see ``embedded_path``) as a ``GaitSet``.

    Labels: emotion (neutral, happy, sad, angry) for dataset-1's four emotion styles, else -1; see
    ``cagelib.data.bandai`` and ``data/README.md`` (including the style/performer confound).
    """
    path = embedded_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no embedded data file. Rebuild it with `python -m cagelib data` "
            "(needs the Bandai BVH release; see data/README.md)"
        )
    return load_compact(path)
