"""The compact format, the build script, and the committed embedded file."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cagelib.data import GaitSet, load_bandai, load_compact, load_embedded, read_bvh, save_compact
from cagelib.data.bandai import DEFAULT_QUANTUM, EMBEDDED_PATH
from cagelib.data.build import build, main

REPO = Path(__file__).resolve().parents[1]

MAX_ERROR = DEFAULT_QUANTUM / 2 + 1e-6  # half a quantisation step, plus float32 rounding of ~10 m values


def random_walks(seed=0) -> GaitSet:
    rng = np.random.default_rng(seed)
    clips = []
    for t in (40, 1, 17):
        root = np.cumsum(rng.normal(0, 0.02, size=(t, 1, 3)), axis=0) + rng.uniform(-8, 8, size=3)
        clips.append(root + np.concatenate([np.zeros((t, 1, 3)), rng.normal(0, 0.5, size=(t, 15, 3))], axis=1))
    return GaitSet(clips, np.array([1, -1, 0]), ("p", "q"), {"clip_id": np.array(["a", "b", "c"])}, 30.0, "m")


def test_compact_round_trip_error_is_half_a_step(tmp_path):
    gs = random_walks()
    path = save_compact(gs, tmp_path / "set.npz")
    back = load_compact(path)
    np.testing.assert_array_equal(back.lengths, gs.lengths)
    np.testing.assert_array_equal(back.labels, gs.labels)
    np.testing.assert_array_equal(back.meta["clip_id"], gs.meta["clip_id"])
    assert back.label_names == gs.label_names and back.units == "m" and back.fps == 30.0
    errors = [np.abs(a - b).max() for a, b in zip(gs.positions, back.positions)]
    assert max(errors) <= MAX_ERROR
    coarse = load_compact(save_compact(gs, tmp_path / "coarse.npz", quantum=1e-2))
    assert 1e-3 < max(np.abs(a - b).max() for a, b in zip(gs.positions, coarse.positions)) <= 5e-3 + 1e-6


def test_compact_rejects_jumps_and_foreign_files(tmp_path):
    gs = random_walks()
    gs.positions[0][20:] += 5.0  # a 5 m step between two frames does not fit int16 at 0.1 mm
    with pytest.raises(ValueError, match="frame-to-frame step exceeds"):
        save_compact(gs, tmp_path / "jump.npz")
    GaitSet([np.zeros((2, 16, 3))], np.array([-1]), ()).save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match=r"plain\.npz: not a cagelib-compact-1 file"):
        load_compact(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError, match="python -m cagelib data"):
        load_embedded(tmp_path / "absent.npz")


def test_build_on_three_clips(bandai_subset, tmp_path, capsys):
    root = bandai_subset({"dataset-1": ["dash_sad_001", "byebye_angry_001"],
                          "dataset-2": ["walk-turn-left_exhausted_038"]})
    report = build(root, tmp_path / "out" / "mini.npz")
    assert report["clips"] == 3 and report["max_abs_error_m"] <= MAX_ERROR
    built = load_embedded(tmp_path / "out" / "mini.npz")
    direct = load_bandai(root)
    for key in direct.meta:
        np.testing.assert_array_equal(built.meta[key], direct.meta[key])
    np.testing.assert_array_equal(built.labels, direct.labels)
    for a, b in zip(built.positions, direct.positions):
        assert a.dtype == np.float32 and np.abs(a - b).max() <= MAX_ERROR
    main(["--source", str(root), "--out", str(tmp_path / "again.npz"), "--quiet"])
    assert "clips: 3" in capsys.readouterr().out
    # same input -> byte-identical file (no timestamps), so a rebuild does not change the committed file
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "out" / "mini.npz").read_bytes()


def test_embedded_file_contents():
    assert EMBEDDED_PATH.is_file() and EMBEDDED_PATH.stat().st_size < 25e6
    gs = load_embedded()
    s = gs.summary()
    assert s["clips"] == 819 and s["frames"] == 148_900
    assert s["labels"] == {"neutral": 20, "happy": 11, "sad": 11, "angry": 11, "unlabelled": 766}
    datasets = gs.meta["dataset"]
    assert (datasets == "dataset-1").sum() == 174 and (datasets == "dataset-2").sum() == 645
    assert set(gs.meta["content"][datasets == "dataset-2"]) == {"walk", "walk-turn-left", "walk-turn-right"}
    assert gs.units == "m" and gs.fps == 30.0
    assert all(p.dtype == np.float32 and np.isfinite(p).all() for p in gs.positions)


def test_embedded_file_matches_the_bvh(shared_data):
    gs = load_embedded()
    for dataset, clip_id in (("dataset-1", "walk_normal_002"), ("dataset-2", "walk-turn-right_normal_001")):
        i = int(np.flatnonzero(gs.meta["group"] == f"{dataset}/{clip_id}")[0])
        x, _ = read_bvh(shared_data / "bandai-motion" / dataset / "data" / f"{dataset}_{clip_id}.bvh")
        assert np.abs(gs.positions[i] - x).max() <= MAX_ERROR


def test_test_data_is_an_unmodified_copy_of_the_release(shared_data, release_folder):
    """Every real file in tests/data (unpacked) has the SHA-256 its original has in the release
    (tests/data/SHA256SUMS, written from the release); where the release is at hand (../shared/data or
    CAGELIB_SHARED_DATA), the originals are checked against the same sums. Never skips."""
    sums = dict(line.split("  ")[::-1] for line in (REPO / "tests" / "data" / "SHA256SUMS").read_text().splitlines())
    files = {str(p.relative_to(shared_data)) for p in shared_data.rglob("*") if p.is_file() and p.name != "LICENSE"}
    assert files == set(sums) and len(files) >= 12
    for name, digest in sums.items():
        assert hashlib.sha256((shared_data / name).read_bytes()).hexdigest() == digest, name
        if (release_folder / name).is_file():  # the release itself, when present
            assert hashlib.sha256((release_folder / name).read_bytes()).hexdigest() == digest, release_folder / name