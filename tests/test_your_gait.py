"""A new person's gait (cagelib.lab.your_gait): a recording as an array, a .npy or a BVH file -> the run's
windows -> per-window and per-clip emotion probabilities from the run's encoder and its saved probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cagelib import cli
from cagelib.errors import CagelibError, CheckpointError
from cagelib.lab import your_gait as yg
from cagelib.experiment import load
from cagelib.lab.workbench import pretrain_run

PARENTS = {"Hips": None, "Spine": "Hips", "Neck": "Spine", "Head": "Neck",
           "UpperArm_L": "Spine", "LowerArm_L": "UpperArm_L", "Hand_L": "LowerArm_L",
           "UpperArm_R": "Spine", "LowerArm_R": "UpperArm_R", "Hand_R": "LowerArm_R",
           "UpperLeg_L": "Hips", "LowerLeg_L": "UpperLeg_L", "Foot_L": "LowerLeg_L",
           "UpperLeg_R": "Hips", "LowerLeg_R": "UpperLeg_R", "Foot_R": "LowerLeg_R"}


def bandai_bvh(positions: np.ndarray, fps: float = 30.0) -> str:
    """A BVH with the Bandai joint names whose joints carry position channels (centimetres, relative to
    the parent) and zero rotations, so its forward kinematics gives back ``positions`` (T, 16, 3) metres."""
    from cagelib.data.bvh import BANDAI_JOINT_MAP
    from cagelib.skeleton import JOINT_NAMES

    index = {bvh: JOINT_NAMES.index(name) for bvh, name in BANDAI_JOINT_MAP.items()}
    order, lines = [], ["HIERARCHY"]

    def block(name: str, depth: int) -> None:
        pad = "  " * depth
        lines.extend([f"{pad}{'ROOT' if depth == 0 else 'JOINT'} {name}", f"{pad}{{", f"{pad}  OFFSET 0 0 0",
                      f"{pad}  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"])
        order.append(name)
        children = [c for c, p in PARENTS.items() if p == name]
        for child in children:
            block(child, depth + 1)
        if not children:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0 1 0", f"{pad}  }}"])
        lines.append(f"{pad}}}")

    block("Hips", 0)
    lines += ["MOTION", f"Frames: {len(positions)}", f"Frame Time: {1.0 / fps:.8f}"]
    cm = positions.astype(np.float64) * 100.0  # (T, 16, 3)
    for frame in cm:
        values = []
        for name in order:
            parent = PARENTS[name]
            local = frame[index[name]] - (frame[index[parent]] if parent else 0.0)
            values += [f"{v:.6f}" for v in local] + ["0", "0", "0"]
        lines.append(" ".join(values))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    outputs = tmp_path_factory.mktemp("outputs")
    exp = load("notebook", ["pretrain.epochs=1", "data.max_pretrain_windows=64"])
    run = pretrain_run(exp, outputs=outputs, progress=False).run_dir
    yg.train_probe(run, epochs=20)
    return run


def test_array_gives_one_probability_row_per_window(run_dir, clip):
    window_probs, clip_probs, names = yg.predict_gait(run_dir, clip)
    stride, window = 8, 32  # the notebook preset: windows of 32 frames, task stride window // 4
    assert window_probs.shape == (len(range(0, len(clip) - window + 1, stride)), 4)
    np.testing.assert_allclose(window_probs.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(clip_probs, window_probs.mean(axis=0))
    assert names == ("neutral", "happy", "sad", "angry") and np.all(window_probs >= 0)


def test_bvh_and_npy_give_what_the_array_gives(run_dir, clip, tmp_path):
    (tmp_path / "walk.bvh").write_text(bandai_bvh(clip))
    np.save(tmp_path / "walk.npy", clip)
    expected = yg.predict_gait(run_dir, clip)
    for recording in (tmp_path / "walk.bvh", str(tmp_path / "walk.npy")):
        got = yg.predict_gait(run_dir, recording)
        np.testing.assert_allclose(got.window_probs, expected.window_probs, atol=1e-4)
        assert got.label_names == expected.label_names


def test_another_frame_rate_is_resampled_to_the_runs(run_dir, clip):
    doubled = yg.resample(clip, 30.0, 60.0)  # (2T - 1, 16, 3)
    assert len(doubled) == 2 * len(clip) - 1
    np.testing.assert_allclose(doubled[::2], clip, atol=1e-6)
    np.testing.assert_allclose(yg.resample(doubled, 60.0, 30.0), clip, atol=1e-6)
    at_60 = yg.predict_gait(run_dir, doubled, fps=60.0)
    np.testing.assert_allclose(at_60.window_probs, yg.predict_gait(run_dir, clip).window_probs, atol=1e-4)


def test_a_clip_shorter_than_a_window_is_one_padded_window(run_dir, clip):
    report = yg.analyse_gait(run_dir, clip[:20])
    assert report.prediction.window_probs.shape == (1, 4) and list(report.window_starts) == [0]
    np.testing.assert_allclose(report.prediction.clip_probs.sum(), 1.0, atol=1e-9)
    x, _ = yg.recording_windows(clip[:20], 32, 8, "root_relative", 30.0)
    assert x.shape == (1, 32, 16, 3) and np.all(x[0, 20:] == 0)  # zero padding, as in training


@pytest.mark.parametrize("recording, message", [
    (np.zeros((0, 16, 3)), "recording: has no frames"),
    (np.zeros((40, 17, 3)), r"positions must be \(T, 16, 3\), got \(40, 17, 3\)"),
    (np.full((40, 16, 3), np.nan), "recording: frame 0: contains NaN or inf"),
    ("walk.txt", "walk.txt: unknown recording type; give a .bvh or .npy file"),
])
def test_bad_recordings_are_named(run_dir, recording, message):
    with pytest.raises(CagelibError, match=message):  # DataFileError, NonFiniteError
        yg.predict_gait(run_dir, recording)


def test_a_missing_or_stale_probe_says_how_to_fit_it(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / yg.PROBE_WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="has no emotion probe.*train_probe"):
        yg.load_probe(copy)
    shutil.copy(run_dir / yg.PROBE_WEIGHTS, copy / yg.PROBE_WEIGHTS)
    with open(copy / "metrics.jsonl", "a") as f:  # the run trained one more epoch since
        f.write((run_dir / "metrics.jsonl").read_text().splitlines()[-1] + "\n")
    with pytest.raises(CheckpointError, match="fitted on the encoder after 1 epochs, the run now has 2"):
        yg.load_probe(copy)


def test_command_line_prints_the_table(run_dir, clip, tmp_path, capsys):
    np.save(tmp_path / "walk.npy", clip)
    assert cli.main(["your-gait", str(run_dir), str(tmp_path / "walk.npy")]) == 0
    out = capsys.readouterr().out
    assert "start (s)" in out and "top class" in out and "angry" in out
    assert out.strip().splitlines()[-1].split()[0] == "clip"
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == len(
        range(0, len(clip) - 31, 8))
