"""Bad input to the data layer (issue 19's hostile-input suite): each gives a cagelib error naming the file,
the item and the problem, raised before anything is written; the valid neighbour of each case still loads.

Joint maps (indices out of range, unknown joint names, map files that are truncated, a list, incomplete),
E-Gait gaits stored transposed, ``.npz`` positions of a wrong shape, a directory given as a file. The real
files come from tests/data (fixture ``shared_data``).
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cagelib.data import BANDAI_JOINT_MAP, load_egait, load_user_data, read_bvh
from cagelib.data.bvh import check_joint_map, read_joint_map
from cagelib.errors import DataFileError, JointMapError
from cagelib.skeleton import JOINT_NAMES

VALID_NAMES = ", ".join(JOINT_NAMES)


@pytest.fixture
def walk(shared_data):
    """A real Bandai clip (tests/data)."""
    return shared_data / "bandai-motion" / "dataset-1" / "data" / "dataset-1_walk_normal_002.bvh"


@pytest.fixture(scope="module")
def sad_gait(shared_data):
    """A real E-Gait gait (T x 48, T = 32) from the sample file in tests/data."""
    with h5py.File(shared_data / "egait-samples" / "sample_features.h5", "r") as f:
        return f["002_Sad_positions.csv"][()]


def write_h5(path, key: str, value: np.ndarray):
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=value)
    return path


# ---------------------------------------------------------------- joint maps


@pytest.mark.parametrize("index", [16, 99, -1])
def test_joint_index_out_of_range_is_named(walk, index):
    with pytest.raises(DataFileError) as err:
        read_bvh(walk, {**BANDAI_JOINT_MAP, "Head": index})
    assert str(err.value).startswith(f"{walk}: joint map entry 'Head': joint index {index} is out of range: "
                                     "cagelib joints are 0..15 (0 root, 1 spine, 2 neck, 3 head, ")
    assert not isinstance(err.value, IndexError)


def test_unknown_joint_name_names_the_key_the_name_and_the_valid_names(walk):
    with pytest.raises(JointMapError) as err:
        read_bvh(walk, {**BANDAI_JOINT_MAP, "Head": "hed"})
    assert str(err.value) == (f"{walk}: joint map entry 'Head': 'hed' is not a cagelib joint; the valid names are "
                              f"{VALID_NAMES} (or an index 0..15)")
    assert isinstance(err.value, KeyError)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"Head": 1.5}, "joint map entry 'Head': 1.5 (float) is neither a cagelib joint name nor an index 0..15"),
        ({"Head": True}, "joint map entry 'Head': True (bool) is neither a cagelib joint name nor an index 0..15"),
        ({"Head": "neck"}, "joint map sends two BVH joints to 'neck': 'Neck' and 'Head'"),
        ({"Head": None}, "joint map entry 'Head': None (NoneType) is neither"),
    ],
)
def test_other_bad_joint_map_values(walk, change, message):
    with pytest.raises(DataFileError, match=f"^{walk}: " + message.replace("(", r"\(").replace(")", r"\)")):
        read_bvh(walk, {**BANDAI_JOINT_MAP, **change})


def test_valid_joint_maps_by_name_and_by_index_agree(walk):
    by_index = {bvh: JOINT_NAMES.index(name) for bvh, name in BANDAI_JOINT_MAP.items()}
    np.testing.assert_array_equal(read_bvh(walk, by_index)[0], read_bvh(walk)[0])
    assert check_joint_map(BANDAI_JOINT_MAP) == by_index


def write_map(tmp_path, text: str):
    path = tmp_path / "my_map.json"
    path.write_text(text)
    return path


def test_truncated_joint_map_file_names_the_file_and_the_place(tmp_path):
    full = json.dumps(BANDAI_JOINT_MAP, indent=1)
    path = write_map(tmp_path, full[: full.index('"Hand_L"') + 8])  # cut after a key
    with pytest.raises(DataFileError) as err:
        read_joint_map(path)
    assert str(err.value) == (f"{path}: line 8 column 10: not valid JSON (Expecting ':' delimiter; the file ends "
                              'early: truncated?); a joint map is a JSON object {"<BVH joint>": "<cagelib joint '
                              'name or index 0..15>", ...}')
    path = write_map(tmp_path, '{"Hips": "root",, }')
    with pytest.raises(DataFileError, match=r"my_map\.json: line 1 column 17: not valid JSON \(Expecting property "
                       r"name enclosed in double quotes\); a joint map is a JSON object"):
        read_joint_map(path)


@pytest.mark.parametrize("value, shown", [(list(BANDAI_JOINT_MAP), "an array"), ("Hips", "a string"), (3, "a number"),
                                          (None, "null")])
def test_joint_map_file_that_is_not_an_object(tmp_path, value, shown):
    path = write_map(tmp_path, json.dumps(value))
    with pytest.raises(DataFileError) as err:
        read_joint_map(path)
    assert str(err.value) == (f"{path}: holds {shown}, expected a JSON object; a joint map is a JSON object "
                              '{"<BVH joint>": "<cagelib joint name or index 0..15>", ...}')


def test_joint_map_file_contents_are_checked(tmp_path):
    path = write_map(tmp_path, json.dumps({**BANDAI_JOINT_MAP, "Foot_R": "rigth_foot"}))
    with pytest.raises(JointMapError, match=rf"^{path}: joint map entry 'Foot_R': 'rigth_foot' is not a cagelib "
                       rf"joint; the valid names are {VALID_NAMES} \(or an index 0\.\.15\)$"):
        read_joint_map(path)
    path = write_map(tmp_path, json.dumps({k: v for k, v in BANDAI_JOINT_MAP.items() if k != "Neck"}))
    with pytest.raises(DataFileError, match=rf"^{path}: joint map leaves cagelib joints unmapped: \['neck'\]$"):
        read_joint_map(path)
    path = write_map(tmp_path, json.dumps({**BANDAI_JOINT_MAP, "Head": 99}))
    with pytest.raises(DataFileError, match=rf"^{path}: joint map entry 'Head': joint index 99 is out of range"):
        read_joint_map(path)
    good = write_map(tmp_path, json.dumps(BANDAI_JOINT_MAP))
    assert read_joint_map(good) == BANDAI_JOINT_MAP


def test_joint_map_file_missing_or_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.json: no such file"):
        read_joint_map(tmp_path / "absent.json")
    (tmp_path / "maps").mkdir()
    with pytest.raises(DataFileError, match=r"maps: is a directory, not a file; give the path of a JSON joint map"):
        read_joint_map(tmp_path / "maps")


def test_command_line_names_the_bad_joint_map_before_fitting_a_probe(tmp_path, walk, capsys):
    """`python -m cagelib your-gait RUN walk.bvh --joint-map bad.json`: the map file's error, exit 1,
    and no probe written into the run."""
    import torch

    from cagelib.cli import main
    from cagelib.experiment import load
    from cagelib.lab.workbench import pretrain_run

    torch.set_num_threads(1)
    exp = load("notebook", ["pretrain.epochs=1", "data.max_pretrain_windows=64"])
    run = pretrain_run(exp, outputs=tmp_path / "outputs", progress=False).run_dir
    before = sorted(p.name for p in run.rglob("*"))
    for text, message in [('{"Hips": "root", "Spine": ', "line 1 column 27: not valid JSON"),
                          (json.dumps(list(BANDAI_JOINT_MAP)), "holds an array, expected a JSON object")]:
        path = write_map(tmp_path, text)
        with pytest.raises(SystemExit) as exit_:
            main(["your-gait", str(run), str(walk), "--joint-map", str(path)])
        assert exit_.value.code == 1
        assert f"{path}: {message}" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written: no probe.pt / probe.json


# ---------------------------------------------------------------- a directory given as a file


def test_directory_given_as_a_file_says_so(tmp_path):
    folder = tmp_path / "walk.bvh"
    folder.mkdir()
    with pytest.raises(DataFileError) as err:
        read_bvh(folder)
    assert str(err.value) == f"{folder}: is a directory, not a file; give the path of a .bvh file"
    with pytest.raises(DataFileError, match=r"walk\.bvh: is a directory, not a file; give the path of an \.npz file"):
        load_user_data(folder)
    with pytest.raises(DataFileError, match=r"walk\.bvh: is a directory, not a file; give the path of an HDF5 file"):
        load_egait(folder)
    with pytest.raises(FileNotFoundError, match=r"absent\.bvh: no such file"):
        read_bvh(tmp_path / "absent.bvh")


def test_directory_as_the_recording_of_your_gait(tmp_path):
    from cagelib.lab.your_gait import load_recording

    folder = tmp_path / "walk.bvh"
    folder.mkdir()
    with pytest.raises(DataFileError, match=r"walk\.bvh: is a directory, not a file; give the path of a \.bvh"):
        load_recording(folder)


# ---------------------------------------------------------------- E-Gait layout


def stretch(gait: np.ndarray, frames: int) -> np.ndarray:
    """A real gait resampled (linear interpolation) to ``frames`` frames: still a rigid skeleton."""
    t = np.linspace(0, len(gait) - 1, frames)
    return np.stack([np.interp(t, np.arange(len(gait)), gait[:, c]) for c in range(gait.shape[1])], axis=1)


def test_egait_gait_stored_transposed_is_named(tmp_path, sad_gait):
    path = write_h5(tmp_path / "features.h5", "002_Sad_positions.csv", sad_gait.T)  # (48, 32)
    with pytest.raises(DataFileError) as err:
        load_egait(path)
    assert str(err.value) == (f"{path}: gait '002_Sad_positions.csv' has shape (48, 32): it looks transposed (48 "
                              "rows = 16 joints x xyz, 32 columns); expected (T, 48), one row per frame; store the "
                              "transpose (frames along the first axis)")


def test_square_egait_gait_stored_transposed_is_named(tmp_path, sad_gait):
    square = stretch(sad_gait, 48)  # 48 frames x 48: the shape alone cannot tell
    path = write_h5(tmp_path / "features.h5", "002_Sad_positions.csv", square.T)
    with pytest.raises(DataFileError, match=r"features\.h5: gait '002_Sad_positions\.csv' is stored transposed: a "
                       r"48 x 48 array whose bone lengths are consistent down its columns \(median variation "
                       r"0\.\d%\) but not along its rows \(\d+%\); expected \(T, 48\), one row per frame; store the "
                       r"transpose$"):
        load_egait(path)
    # the same gait the right way round loads, as does a 48 x 48 array that is not a skeleton either way
    ok = load_egait(write_h5(tmp_path / "ok.h5", "002_Sad_positions.csv", square))
    np.testing.assert_allclose(ok.positions[0], square.reshape(48, 16, 3).astype(np.float32))
    noise = np.random.default_rng(0).normal(size=(48, 48))
    assert load_egait(write_h5(tmp_path / "noise.h5", "n", noise)).lengths.tolist() == [48]


# ---------------------------------------------------------------- .npz positions


@pytest.mark.parametrize("shape, extra", [((100, 17, 3), {}), ((2, 5, 3, 16), {}), ((100, 3, 16), {"lengths": [100]}),
                                          ((5,), {}), ((2, 5, 47), {})])
def test_npz_positions_of_a_wrong_shape_say_the_shape_and_the_layouts(tmp_path, shape, extra):
    path = tmp_path / "mine.npz"
    np.savez(path, positions=np.zeros(shape), **{k: np.array(v) for k, v in extra.items()})
    with pytest.raises(DataFileError) as err:
        load_user_data(path)
    assert str(err.value) == (f"{path}: positions: has shape {shape}; expected (N, T, 16, 3) zero-padded clips (with "
                              "an optional 'lengths'), (frames, 16, 3) clips concatenated along time with 'lengths', "
                              "or either with the last two axes as 48 (16 joints x xyz)")


def test_npz_frames_without_lengths_says_what_is_missing(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, positions=np.zeros((100, 16, 3)))
    with pytest.raises(DataFileError) as err:
        load_user_data(path)
    assert str(err.value) == (f"{path}: positions: has shape (100, 16, 3): (frames, 16, 3) positions need a 'lengths' "
                              "array saying where each clip ends; add lengths (frames per clip), or store positions "
                              "as (N, T, 16, 3)")
    np.savez(path, positions=np.zeros((100, 16, 3)), lengths=np.array([60, 40]))
    assert load_user_data(path).lengths.tolist() == [60, 40]
