"""GaitSet: validation, subset/padded/summary, save/load, and users' own .npz files."""
from __future__ import annotations

import numpy as np
import pytest

from cagelib.data import GaitSet, load_user_data


def make_set(lengths=(5, 3, 7), seed=0) -> GaitSet:
    rng = np.random.default_rng(seed)
    clips = [rng.normal(size=(t, 16, 3)).astype(np.float32) for t in lengths]
    n = len(lengths)
    return GaitSet(
        clips, np.arange(n) % 3 - 1, ("a", "b"),
        {"clip_id": np.array([f"c{i}" for i in range(n)]), "group": np.arange(n) // 2}, fps=25.0, units="m",
    )


def assert_same(a: GaitSet, b: GaitSet) -> None:
    assert len(a) == len(b)
    for p, q in zip(a.positions, b.positions):
        assert p.dtype == q.dtype == np.float32
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.labels.dtype == b.labels.dtype == np.int64
    assert a.label_names == b.label_names and a.fps == b.fps and a.units == b.units
    assert sorted(a.meta) == sorted(b.meta)
    for k in a.meta:
        np.testing.assert_array_equal(a.meta[k], b.meta[k])


def test_basic_properties():
    gs = make_set()
    assert len(gs) == 3
    np.testing.assert_array_equal(gs.lengths, [5, 3, 7])
    assert gs.lengths.dtype == np.int64
    np.testing.assert_array_equal(gs.labels, [-1, 0, 1])
    s = gs.summary()
    assert s["clips"] == 3 and s["frames"] == 15
    assert s["labels"] == {"a": 1, "b": 1, "unlabelled": 1}
    assert s["length_min_median_max"] == (3, 5.0, 7)
    assert repr(gs) == ("GaitSet(3 clips, 15 frames, labels {'a': 1, 'b': 1, 'unlabelled': 1}, "
                        "meta ['clip_id', 'group'], fps=25, units='m')")


def test_padded_zero_pads_and_crops():
    gs = make_set()
    x = gs.padded()
    assert x.shape == (3, 7, 16, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1, :3], gs.positions[1])
    assert not x[1, 3:].any()
    y = gs.padded(4)
    assert y.shape == (3, 4, 16, 3)
    np.testing.assert_array_equal(y[2], gs.positions[2][:4])


def test_subset_keeps_metadata_in_step():
    gs = make_set(lengths=(2, 3, 4, 5))
    sub = gs.subset([3, 1])
    np.testing.assert_array_equal(sub.lengths, [5, 3])
    np.testing.assert_array_equal(sub.meta["clip_id"], ["c3", "c1"])
    np.testing.assert_array_equal(sub.labels, gs.labels[[3, 1]])
    labelled = gs.subset(gs.labels >= 0)
    assert len(labelled) == 2 and (labelled.labels >= 0).all()
    np.testing.assert_array_equal(labelled.meta["clip_id"], ["c1", "c2"])
    assert len(gs.subset([])) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda kw: kw["positions"].__setitem__(1, np.zeros((4, 15, 3))), r"clip 1: positions must be \(T, 16, 3\)"),
        (lambda kw: kw["positions"][0].__setitem__((2, 3, 1), np.nan), "clip 0: positions contain NaN"),
        (lambda kw: kw["positions"][2].__setitem__((0, 0, 0), np.inf), "clip 2: positions contain NaN or inf"),
        (lambda kw: kw.__setitem__("labels", np.array([0, 1, 2])), "label 2 of clip 2 is out of range"),
        (lambda kw: kw.__setitem__("labels", np.array([0, -3, 1])), "label -3 of clip 1 is out of range"),
        (lambda kw: kw.__setitem__("labels", np.array([0, 1])), r"labels must have shape \(3,\)"),
        (lambda kw: kw.__setitem__("labels", np.array([0.0, 1.0, 1.0])), "labels must be integers"),
        (lambda kw: kw.__setitem__("meta", {"clip_id": np.array(["a", "b"])}),
         r"meta\['clip_id'\] has length 2, expected 3"),
        (lambda kw: kw["positions"].__setitem__(0, np.zeros((0, 16, 3))), "clip 0: has no frames"),
    ],
)
def test_validation_errors_name_the_problem(change, message):
    rng = np.random.default_rng(1)
    kw = dict(positions=[rng.normal(size=(t, 16, 3)) for t in (4, 5, 6)], labels=np.array([0, 1, -1]),
              label_names=("x", "y"), meta={})
    change(kw)
    with pytest.raises(ValueError, match=message):
        GaitSet(**kw)


def test_save_load_round_trip_is_exact_and_atomic(tmp_path):
    gs = make_set()
    path = gs.save(tmp_path / "sub" / "set.npz")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["set.npz"]  # no temporary file left behind
    assert_same(gs, GaitSet.load(path))
    with np.load(path) as z:  # readable by plain numpy, no pickle
        assert z["positions"].shape == (15, 16, 3)


def test_user_format_padded_with_lengths(tmp_path):
    gs = make_set()
    path = tmp_path / "mine.npz"
    np.savez(path, positions=gs.padded(9), lengths=gs.lengths, labels=gs.labels,
             label_names=np.array(gs.label_names), clip_id=gs.meta["clip_id"], group=gs.meta["group"],
             fps=25.0, units="m")
    assert_same(gs, load_user_data(path))


def test_user_format_minimal_and_flat_48(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 10, 48))
    np.savez(tmp_path / "flat.npz", positions=x, labels=np.array([0, 2, 1, -1]))
    gs = load_user_data(tmp_path / "flat.npz")
    assert len(gs) == 4 and gs.label_names == ("0", "1", "2") and gs.units == "unknown" and gs.fps == 30.0
    np.testing.assert_allclose(gs.positions[1], x[1].reshape(10, 16, 3), rtol=1e-6)


def test_user_format_object_array_needs_allow_pickle(tmp_path):
    gs = make_set()
    clips = np.empty(3, dtype=object)
    clips[:] = gs.positions
    path = tmp_path / "ragged.npz"
    np.savez(path, positions=clips)
    with pytest.raises(ValueError, match=r"ragged\.npz: holds object arrays.*allow_pickle=True"):
        load_user_data(path)
    loaded = load_user_data(path, allow_pickle=True)
    np.testing.assert_array_equal(loaded.lengths, gs.lengths)
    np.testing.assert_array_equal(loaded.labels, [-1, -1, -1])


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"data": np.zeros((2, 5, 16, 3))}, "no 'positions' array"),
        ({"positions": np.zeros((7, 16, 3))}, "need a 'lengths' array"),
        ({"positions": np.zeros((7, 16, 3)), "lengths": np.array([3, 3])}, "lengths sum to 6, but positions has 7"),
        ({"positions": np.zeros((2, 5, 16, 3)), "lengths": np.array([3, 6])}, "lengths must be 2 values in 1..5"),
        ({"positions": np.zeros((2, 5, 17, 3))}, r"positions: has shape \(2, 5, 17, 3\); expected \(N, T, 16, 3\)"),
        ({"positions": np.full((2, 5, 16, 3), np.nan)}, "NaN"),
        ({"positions": np.zeros((2, 5, 16, 3)), "labels": np.array([0, 4]), "label_names": np.array(["a", "b"])},
         "label 4 of clip 1 is out of range"),
        ({"positions": np.zeros((2, 5, 16, 3)), "subject": np.array([1, 2, 3])}, "'subject'.*not a per-clip column"),
    ],
)
def test_user_format_errors_name_the_file(tmp_path, arrays, message):
    path = tmp_path / "bad_input.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=f"bad_input.npz: .*{message}"):
        load_user_data(path)


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="junk.npz: cannot be read"):
        load_user_data(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        load_user_data(tmp_path / "nothere.npz")
