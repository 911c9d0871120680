"""BVH reader and forward kinematics: a hand-written clip with known answers, and real Bandai clips."""
from __future__ import annotations

import numpy as np
import pytest

from cagelib.data import BANDAI_JOINT_MAP, forward_kinematics, read_bvh, read_bvh_clip
from cagelib.data.bvh import euler_to_matrix, parse_bvh
from cagelib.skeleton import JOINT_NAMES, UP_AXIS

# Hips (6 channels, Z-X-Y) -> Chest (6 channels) -> Arm (3 channels, X-Y-Z) -> End Site.
TINY = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Chest
  {
    OFFSET 0 10 0
    CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
    JOINT Arm
    {
      OFFSET 5 0 0
      CHANNELS 3 Xrotation Yrotation Zrotation
      End Site
      {
        OFFSET 0 0 3
      }
    }
  }
}
MOTION
Frames: 4
Frame Time: 0.04
1 2 3 0 0 0   0 10 0 0 0 0     0 0 0
1 2 3 0 0 90  0 10 0 90 0 0    90 0 0
0 0 0 0 0 0   0 10 0 90 90 0   0 0 0
0 0 0 0 0 0   0 20 0 0 0 0     0 -90 0
"""
# Worked by hand (right-handed rotations, R = R_first @ R_second @ R_third of the CHANNELS order):
TINY_EXPECTED = np.array([
    # frame 0: rest pose, Hips at (1, 2, 3)
    [[1, 2, 3], [1, 12, 3], [6, 12, 3], [6, 12, 6]],
    # frame 1: Hips yaw +90 (x -> -z), Chest roll +90 about z (x -> y), Arm +90 about x (z -> -y):
    # Arm = Chest + Ry Rz (5,0,0) = (1,17,3); End = Arm + Ry Rz Rx (0,0,3) = Arm + (0,0,-3)
    [[1, 2, 3], [1, 12, 3], [1, 17, 3], [1, 17, 0]],
    # frame 2: Chest Z=90 then X=90: Rz @ Rx sends (5,0,0) to (0,5,0) and (0,0,3) to (3,0,0)
    # (the other order, Rx @ Rz, would put the Arm at (0,10,5))
    [[0, 0, 0], [0, 10, 0], [0, 15, 0], [3, 15, 0]],
    # frame 3: Chest position channel (0,20,0) replaces its OFFSET; Arm yaw -90 sends (0,0,3) to (-3,0,0)
    [[0, 0, 0], [0, 20, 0], [5, 20, 0], [2, 20, 0]],
], dtype=float)

# Parent-child pairs among the 16 joints that are parent and child in the Bandai BVH tree too.
RIGID_BONES = [(0, 1), (0, 10), (0, 13), (2, 3), (4, 5), (5, 6), (7, 8), (8, 9), (10, 11), (11, 12), (13, 14), (14, 15)]


def test_tiny_clip_gives_hand_computed_positions():
    clip = parse_bvh(TINY)
    assert clip.names == ["Hips", "Chest", "Arm"]
    np.testing.assert_array_equal(clip.parents, [-1, 0, 1])
    assert clip.channels[2] == ("Xrotation", "Yrotation", "Zrotation")
    assert clip.fps == pytest.approx(25.0)
    positions = forward_kinematics(clip, end_sites=True)
    assert positions.shape == (4, 4, 3)
    np.testing.assert_allclose(positions, TINY_EXPECTED, atol=1e-9)
    np.testing.assert_allclose(forward_kinematics(clip), TINY_EXPECTED[:, :3], atol=1e-9)


def test_euler_matrices_are_rotations_in_declared_order():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-180, 180, size=(5, 3))
    for order in ("ZXY", "XYZ", "YZX"):
        r = euler_to_matrix(angles, order)
        np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
        singles = [euler_to_matrix(angles[:, k : k + 1], axis) for k, axis in enumerate(order)]
        np.testing.assert_allclose(r, singles[0] @ singles[1] @ singles[2], atol=1e-12)
    quarter = euler_to_matrix(np.array([[90.0]]), "Z")[0]
    np.testing.assert_allclose(quarter @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # right-handed: x -> y


def test_custom_joint_map_and_scale(tmp_path):
    lines = ["HIERARCHY", "ROOT J0", "{", "  OFFSET 0 0 0", "  CHANNELS 3 Xposition Yposition Zposition"]
    for j in range(1, 16):
        lines += [f"  JOINT J{j}", "  {", f"    OFFSET {j} 0 0", "    CHANNELS 3 Zrotation Yrotation Xrotation",
                  "    End Site", "    {", "      OFFSET 0 1 0", "    }", "  }"]
    lines += ["}", "MOTION", "Frames: 2", "Frame Time: 0.1"]
    lines += [" ".join(["1 2 3"] + ["0 0 0"] * 15), " ".join(["4 5 6"] + ["0 0 0"] * 15)]
    path = tmp_path / "star.bvh"
    path.write_text("\n".join(lines) + "\n")
    joint_map = {"J0": "root", **{f"J{j}": JOINT_NAMES[16 - j] for j in range(1, 16)}}
    x, fps = read_bvh(path, joint_map, scale=2.0)
    assert x.shape == (2, 16, 3) and x.dtype == np.float32 and fps == pytest.approx(10.0)
    np.testing.assert_allclose(x[1, 0], [8, 10, 12])
    for j in range(1, 16):
        np.testing.assert_allclose(x[0, 16 - j], 2.0 * np.array([1 + j, 2, 3]))
    with pytest.raises(ValueError, match=r"star\.bvh: joint map leaves cagelib joints unmapped: \['spine'\]"):
        read_bvh(path, {k: v for k, v in joint_map.items() if v != "spine"})
    with pytest.raises(KeyError, match="Hips"):
        read_bvh(path)  # the Bandai map does not fit this skeleton


@pytest.mark.parametrize(
    "text, message",
    [
        (TINY.replace("0 0 0 0 0 0   0 20 0 0 0 0     0 -90 0\n", ""),
         "MOTION has 45 values, expected 4 frames x 15 channels"),
        (TINY[: TINY.index("MOTION")], "no MOTION section"),
        (TINY.replace("CHANNELS 3 Xrotation", "CHANNELS 3 Wrotation"), "bad CHANNELS line"),
        (TINY.replace("OFFSET 5 0 0", "OFFSET 5 0"), "OFFSET needs 3 numbers"),
        ("ROOT Hips\n", "not a BVH file"),
        (TINY.replace("0 10 0 90 90 0", "0 10 0 nan 90 0"), "NaN or inf"),
    ],
)
def test_malformed_files_are_named(text, message):
    with pytest.raises(ValueError, match=f"broken.bvh: .*{message}"):
        parse_bvh(text, "broken.bvh")


# Real clips in tests/data (tests/data/README.md): forward, backward, running, non-locomotion; both data sets.
SAMPLE_CLIPS = {
    "dataset-1": ["walk_normal_002", "walk-back_normal_001", "run_normal_001", "dash_normal_001", "dash_sad_001",
                  "byebye_angry_001"],
    "dataset-2": ["walk-turn-right_normal_001", "walk-turn-left_exhausted_038"],
}


def sample_clips(shared_data, n_per_dataset=None):
    root = shared_data / "bandai-motion"
    return [root / dataset / "data" / f"{dataset}_{name}.bvh"
            for dataset, names in SAMPLE_CLIPS.items() for name in names[:n_per_dataset]]


def test_bandai_clips_have_rigid_bones(shared_data):
    clips = sample_clips(shared_data)
    assert len(clips) == 8
    for path in clips:
        x, fps = read_bvh(path)
        assert x.shape[1:] == (16, 3) and x.dtype == np.float32 and np.isfinite(x).all()
        assert fps == pytest.approx(30.0, abs=1e-3)
        for parent, child in RIGID_BONES:
            length = np.linalg.norm(x[:, child].astype(np.float64) - x[:, parent], axis=-1)
            relative = np.abs(length - length.mean()).max() / length.mean()
            bone = f"{JOINT_NAMES[parent]}-{JOINT_NAMES[child]}"
            assert relative < 1e-5, f"{path.name}: bone {bone} varies by {relative:.2e}"
        head_over_ankle = x[:, 3, UP_AXIS] - np.minimum(x[:, 12, UP_AXIS], x[:, 15, UP_AXIS])
        assert 0.8 < np.median(head_over_ankle) < 2.0  # metres, not centimetres


def test_bandai_left_is_the_performer_left(shared_data):
    x, _ = read_bvh(shared_data / "bandai-motion/dataset-1/data/dataset-1_walk_normal_002.bvh")
    travel = x[-1, 0] - x[0, 0]  # a forward walk: the direction the performer faces
    travel[UP_AXIS] = 0
    left = np.cross(np.eye(3)[UP_AXIS], travel)  # y up, right-handed: left = up x forward
    hips = x[:, JOINT_NAMES.index("left_hip")] - x[:, JOINT_NAMES.index("right_hip")]
    shoulders = x[:, JOINT_NAMES.index("left_shoulder")] - x[:, JOINT_NAMES.index("right_shoulder")]
    assert (hips @ left > 0).mean() > 0.95 and (shoulders @ left > 0).mean() > 0.95
    assert BANDAI_JOINT_MAP["UpperLeg_L"] == "left_hip" == JOINT_NAMES[10]


def test_agrees_with_bvhio(shared_data):
    bvhio = pytest.importorskip("bvhio")
    for path in sample_clips(shared_data, 1):
        ours = forward_kinematics(read_bvh_clip(path))
        root = bvhio.readAsHierarchy(str(path))
        names = [joint.Name for joint, _, _ in root.layout()]
        assert names == read_bvh_clip(path).names
        for frame in (0, len(ours) // 2, len(ours) - 1):
            root.loadPose(frame)
            reference = np.array([list(joint.PositionWorld) for joint, _, _ in root.layout()])
            np.testing.assert_allclose(ours[frame], reference, atol=1e-3)  # cm; bvhio computes in float32
