"""E-Gait / STEP HDF5 loader: the real sample files and files written here in the same layout."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from cagelib.data import STEP_LABEL_NAMES, load_egait


def write_pair(folder, gaits: dict[str, np.ndarray], labels: dict[str, int], dtype=np.int32):
    features, label_file = folder / "features.h5", folder / "labels.h5"
    with h5py.File(features, "w") as f:
        for key, value in gaits.items():
            f.create_dataset(key, data=value)
    with h5py.File(label_file, "w") as f:
        for key, value in labels.items():
            f.create_dataset(key, data=np.array(value, dtype=dtype))
    return features, label_file


def random_gaits(lengths=(12, 30, 7), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{i:03d}_x_positions.csv": rng.normal(size=(t, 48)) for i, t in enumerate(lengths)}


def test_real_sample_files(shared_data):
    folder = shared_data / "egait-samples"
    gs = load_egait(folder / "sample_features.h5", folder / "sample_lables.h5")
    assert len(gs) == 3
    assert list(gs.meta["clip_id"]) == ["002_Sad_positions.csv", "004_Angry_positions.csv", "008_Happy_positions.csv"]
    np.testing.assert_array_equal(gs.lengths, [32, 26, 30])
    np.testing.assert_array_equal(gs.labels, [3, 1, 1])  # as stored in sample_lables.h5
    assert gs.label_names == STEP_LABEL_NAMES == ("angry", "neutral", "happy", "sad")
    assert gs.units == "as stored"
    with h5py.File(folder / "sample_features.h5", "r") as f:  # row layout: 16 joints x xyz
        raw = f["004_Angry_positions.csv"][()]
    np.testing.assert_allclose(gs.positions[1], raw.reshape(26, 16, 3).astype(np.float32))
    for clip in gs.positions:
        assert clip.dtype == np.float32 and np.isfinite(clip).all()
        np.testing.assert_array_equal(clip[:, 0], 0.0)  # the files store the root at the origin
        assert (clip[:, 3, 1] > clip[:, 12, 1]).all()  # head above the foot: y is up


def test_real_sample_labels_agree_with_full_label_file(shared_data):
    folder = shared_data / "egait-samples"
    with pytest.raises(ValueError, match=r"labels\.h5: 339 label key\(s\) have no gait"):
        load_egait(folder / "sample_features.h5", folder / "labels.h5")
    full = load_egait(folder / "sample_features.h5", folder / "labels.h5", extra_labels="ignore")
    sample = load_egait(folder / "sample_features.h5", folder / "sample_lables.h5")
    np.testing.assert_array_equal(full.labels, sample.labels)


def test_written_files_variable_length_and_label_names(tmp_path):
    gaits = random_gaits()
    keys = sorted(gaits)
    features, labels = write_pair(tmp_path, gaits, dict(zip(keys, [2, 0, 3])))
    gs = load_egait(features, labels, label_names=("happy", "angry", "sad", "neutral"))
    np.testing.assert_array_equal(gs.lengths, [12, 30, 7])
    np.testing.assert_array_equal(gs.labels, [2, 0, 3])
    assert [gs.label_names[k] for k in gs.labels] == ["sad", "happy", "neutral"]
    np.testing.assert_allclose(gs.positions[2], gaits[keys[2]].reshape(7, 16, 3), rtol=1e-6)
    unlabelled = load_egait(features)
    np.testing.assert_array_equal(unlabelled.labels, [-1, -1, -1])


def test_missing_label_is_a_clear_error(tmp_path):
    gaits = random_gaits()
    keys = sorted(gaits)
    features, labels = write_pair(tmp_path, gaits, {keys[0]: 1, keys[2]: 0})
    with pytest.raises(ValueError, match=r"labels\.h5: no label for 1 gait\(s\) of features\.h5: \['001_x"):
        load_egait(features, labels)


def test_extra_label_is_an_error_unless_ignored(tmp_path):
    gaits = random_gaits()
    features, labels = write_pair(tmp_path, gaits, {**{k: 1 for k in gaits}, "999_extra": 2})
    with pytest.raises(ValueError, match=r"1 label key\(s\) have no gait in features\.h5: \['999_extra'\]"):
        load_egait(features, labels)
    assert len(load_egait(features, labels, extra_labels="ignore")) == 3


@pytest.mark.parametrize(
    "gait, label, message",
    [
        (np.zeros((10, 47)), 0, r"features\.h5: gait 'bad' has shape \(10, 47\)"),
        (np.full((10, 48), np.nan), 0, r"features\.h5: gait 'bad' contains NaN"),
        (np.zeros((10, 48)), 4, r"labels\.h5: label of 'bad' is 4, outside 0\.\.3"),
        (np.zeros((10, 48)), -1, r"labels\.h5: label of 'bad' is -1"),
    ],
)
def test_bad_content_is_named(tmp_path, gait, label, message):
    features, labels = write_pair(tmp_path, {"bad": gait}, {"bad": label})
    with pytest.raises(ValueError, match=message):
        load_egait(features, labels)


def test_missing_or_non_hdf5_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        load_egait(tmp_path / "nothere.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match=r"text\.h5: cannot be read as HDF5"):
        load_egait(tmp_path / "text.h5")
