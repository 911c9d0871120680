"""Bad input from the hostile review: each case gives cagelib's error naming the file / item, or a correct result.

Evaluation (NaN inputs, weights, diverging fits), BVH (value counts per MOTION line, frame time, non-numbers,
binary files), user ``.npz`` (fractional lengths, non-array members, string labels, array fps), E-Gait HDF5,
checkpoints (reordered / mirrored data, missing entries, empty / truncated / pickled files, a write killed midway).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from test_pretrain_loop import gaits, losses, tiny_config

from cagelib.data import load_user_data, read_bvh
from cagelib.data.bvh import parse_bvh, read_bvh_clip
from cagelib.data.egait import load_egait
from cagelib.errors import CagelibError, CheckpointError, DataFileError, DivergedError, NonFiniteError
from cagelib.evaluate.classifier import fit_classifier
from cagelib.evaluate.features import knn_predict
from cagelib.evaluate.protocols import EvalConfig, knn_eval, linear_eval
from cagelib.methods.encoders import AGCN, AGCNConfig
from cagelib.pretrain.checkpoint import data_fingerprint, load_pretrained
from cagelib.pretrain.loop import pretrain
from cagelib.skeleton import JOINT_NAMES, LEFT_RIGHT_PAIRS

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- BVH


def star_bvh(rows: list[str], frame_time: str = "0.0333333", frames: int | None = None) -> str:
    """A 16-joint BVH (the cagelib joint names): root with 6 channels, 15 children with 3 rotations each."""
    children = "".join(f"  JOINT {name}\n  {{\n    OFFSET {k} 10 0\n    CHANNELS 3 Zrotation Xrotation Yrotation\n"
                       "    End Site\n    {\n      OFFSET 0 5 0\n    }\n  }\n"
                       for k, name in enumerate(JOINT_NAMES[1:], start=1))
    return (f"HIERARCHY\nROOT {JOINT_NAMES[0]}\n{{\n  OFFSET 0 0 0\n  CHANNELS 6 Xposition Yposition Zposition "
            f"Zrotation Xrotation Yrotation\n{children}}}\nMOTION\nFrames: {len(rows) if frames is None else frames}\n"
            f"Frame Time: {frame_time}\n" + "".join(r + "\n" for r in rows))


N_CHANNELS = 6 + 15 * 3
IDENTITY_MAP = {name: name for name in JOINT_NAMES}
MOTION_LINE = star_bvh(["first frame"]).splitlines().index("first frame") + 1  # 1-based line number


def motion_rows(n: int = 4, seed: int = 0) -> list[list[str]]:
    g = np.random.default_rng(seed)
    return [[f"{v:.4f}" for v in g.uniform(-30, 30, N_CHANNELS)] for _ in range(n)]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_bvh_star_skeleton_loads_and_line_numbers_are_right(tmp_path):
    rows = motion_rows()
    text = star_bvh([" ".join(r) for r in rows])
    assert text.splitlines()[MOTION_LINE - 1] == " ".join(rows[0])
    x, fps = read_bvh(write(tmp_path, "ok.bvh", text), IDENTITY_MAP, scale=1.0)
    assert x.shape == (4, 16, 3) and np.isfinite(x).all() and fps == pytest.approx(30.0, rel=1e-5)


def test_bvh_one_extra_and_one_missing_value_on_consecutive_lines(tmp_path):
    rows = motion_rows()
    rows[1].append("0.5")  # the total count stays right: 4 x 51
    rows[2].pop()
    path = write(tmp_path, "shifted.bvh", star_bvh([" ".join(r) for r in rows]))
    with pytest.raises(DataFileError, match=rf"shifted\.bvh: line {MOTION_LINE + 1}: 52 values, expected 51"):
        read_bvh(path, IDENTITY_MAP)


def test_bvh_missing_frame_line_names_the_counts():
    text = star_bvh([" ".join(r) for r in motion_rows(3)], frames=4)
    with pytest.raises(DataFileError, match=r"a\.bvh: MOTION has 153 values, expected 4 frames x 51 channels"):
        parse_bvh(text, "a.bvh")


@pytest.mark.parametrize("frame_time", ["0", "-0.04", "nan", "inf", "1e-320", "abc", ""])
def test_bvh_frame_time_must_be_finite_and_positive(frame_time):
    text = star_bvh([" ".join(r) for r in motion_rows()], frame_time=frame_time)
    with pytest.raises(DataFileError, match=rf"a\.bvh: line {MOTION_LINE - 1}: .*Frame Time"):
        parse_bvh(text, "a.bvh")


@pytest.mark.parametrize("frames", ["0", "-2", "2.5", "many"])
def test_bvh_frames_must_be_a_positive_integer(frames):
    text = star_bvh([" ".join(r) for r in motion_rows()]).replace("Frames: 4", f"Frames: {frames}")
    with pytest.raises(DataFileError, match=rf"a\.bvh: line {MOTION_LINE - 2}: .*Frames"):
        parse_bvh(text, "a.bvh")


def test_bvh_non_numeric_value_names_file_line_and_token(tmp_path):
    rows = motion_rows()
    rows[3][7] = "12,5"
    path = write(tmp_path, "comma.bvh", star_bvh([" ".join(r) for r in rows]))
    with pytest.raises(DataFileError, match=rf"comma\.bvh: line {MOTION_LINE + 3}: '12,5' is not a number"):
        read_bvh(path, IDENTITY_MAP)


def test_bvh_binary_garbage_names_the_file(tmp_path):
    garbage = bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8))
    with pytest.raises(DataFileError, match=r"garbage\.bvh: is a binary file"):
        read_bvh(write(tmp_path, "garbage.bvh", garbage), IDENTITY_MAP)
    text = star_bvh([" ".join(r) for r in motion_rows()]).encode()
    with pytest.raises(DataFileError, match=r"tail\.bvh: is a binary file"):
        read_bvh_clip(write(tmp_path, "tail.bvh", text[:2000] + b"\x00\x01\x02" + text[2000:]))
    latin1 = star_bvh([" ".join(r) for r in motion_rows()]).replace("JOINT spine", "JOINT spïne").encode("latin-1")
    assert "spïne" in read_bvh_clip(write(tmp_path, "latin1.bvh", latin1)).names  # legacy text still loads


def test_bvh_nan_is_rejected_with_its_line_or_interpolated(tmp_path):
    rows = motion_rows(6)
    rows[3][10] = "nan"
    path = write(tmp_path, "gap.bvh", star_bvh([" ".join(r) for r in rows]))
    with pytest.raises(NonFiniteError, match=rf"gap\.bvh: line {MOTION_LINE + 3} \(frame 3\): contains NaN or inf; "
                                             "pass nan_policy='interpolate'"):
        read_bvh(path, IDENTITY_MAP)
    clip = read_bvh_clip(path, nan_policy="interpolate")
    assert clip.motion[3, 10] == pytest.approx((float(rows[2][10]) + float(rows[4][10])) / 2)
    x, _ = read_bvh(path, IDENTITY_MAP, nan_policy="interpolate")
    assert np.isfinite(x).all()


def test_bvh_huge_values_overflow_into_an_error_not_inf(tmp_path):
    rows = motion_rows()
    rows[1][0] = "1e300"
    path = write(tmp_path, "huge.bvh", star_bvh([" ".join(r) for r in rows]))
    with pytest.raises(DataFileError, match=r"huge\.bvh: frame 1: joint positions overflow"):
        read_bvh(path, IDENTITY_MAP)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace("    CHANNELS 3 Zrotation Xrotation Yrotation\n    End Site\n    {\n      OFFSET 0 5 0\n",
                         "    CHANNELS 3 Zrotation Xrotation Yrotation\n    End Site\n    {\n      OFFSET 0 5 0\n"
                         "      CHANNELS 1 Xrotation\n", 1), "CHANNELS outside a joint"),
    (lambda t: t.replace("MOTION", "}\nMOTION"), "'}' without an open block"),
    (lambda t: t.replace("  JOINT spine\n  {", "  JOINT spine\n  OFFSET 1 2 3\n  {"), "expected '\\{' after"),
    (lambda t: t.replace("OFFSET 1 10 0", "OFFSET 1 nan 0"), "OFFSET contains NaN"),
    (lambda t: t.replace("CHANNELS 6 X", "CHANNELS six X"), "expected a channel count"),
])
def test_bvh_hierarchy_errors_name_the_line(change, message):
    text = change(star_bvh([" ".join(r) for r in motion_rows()]))
    with pytest.raises(DataFileError, match=rf"h\.bvh: line \d+: .*{message}"):
        parse_bvh(text, "h.bvh")


# ---------------------------------------------------------------- user .npz


def clips(n: int = 2, t: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, t, 16, 3))


def npz(tmp_path: Path, name: str = "mine.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_fractional_lengths_are_an_error_whole_floats_are_fine(tmp_path):
    with pytest.raises(DataFileError, match=r"mine\.npz: lengths: length 2\.5 of clip 0 is not a whole number"):
        load_user_data(npz(tmp_path, positions=clips(), lengths=np.array([2.5, 5.0])))
    gs = load_user_data(npz(tmp_path, positions=clips(), lengths=np.array([2.0, 5.0])))
    assert gs.lengths.tolist() == [2, 5]


def test_npz_member_that_is_not_an_array(tmp_path):
    path = npz(tmp_path, positions=clips())
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "recorded on a Tuesday")
    with pytest.raises(DataFileError, match=r"mine\.npz: notes\.txt: member 'notes\.txt' is not a \.npy array"):
        load_user_data(path)


def test_npz_string_labels_need_label_names(tmp_path):
    with pytest.raises(DataFileError, match=r"mine\.npz: labels: labels are strings .* no 'label_names'"):
        load_user_data(npz(tmp_path, positions=clips(3), labels=np.array(["sad", "happy", "sad"])))
    gs = load_user_data(npz(tmp_path, positions=clips(3), labels=np.array(["sad", "", "happy"]),
                            label_names=np.array(["happy", "sad"])))
    assert gs.labels.tolist() == [1, -1, 0] and gs.label_names == ("happy", "sad")
    with pytest.raises(DataFileError, match=r"label 'angry' of clip 1 is not in label_names"):
        load_user_data(npz(tmp_path, positions=clips(), labels=np.array(["sad", "angry"]),
                           label_names=np.array(["happy", "sad"])))


@pytest.mark.parametrize("fps, message", [(np.array([30.0, 25.0]), "fps must be one number"),
                                          (np.array("fast"), "fps must be one number"),
                                          (np.array(-30.0), "fps must be a finite number > 0"),
                                          (np.array(np.nan), "fps must be a finite number > 0")])
def test_npz_fps_must_be_one_positive_number(tmp_path, fps, message):
    with pytest.raises(DataFileError, match=rf"mine\.npz: fps: {message}"):
        load_user_data(npz(tmp_path, positions=clips(), fps=fps))


@pytest.mark.parametrize("positions, message", [
    (clips().astype(str), "positions must be real numbers, got dtype <U"),
    (clips().astype(complex), "positions must be real numbers, got dtype complex128"),
    (clips() > 0, "positions must be real numbers, got dtype bool"),
])
def test_npz_positions_must_be_real_numbers(tmp_path, positions, message):
    with pytest.raises(DataFileError, match=rf"mine\.npz: positions: {message}"):
        load_user_data(npz(tmp_path, positions=positions))


def test_npz_nan_frame_is_named_or_interpolated(tmp_path):
    x = clips(2, 8)
    x[1, 4, 2, 0] = np.nan
    path = npz(tmp_path, positions=x)
    with pytest.raises(NonFiniteError, match=r"mine\.npz: clip 1, frame 4: contains NaN or inf"):
        load_user_data(path)
    gs = load_user_data(path, nan_policy="interpolate")
    assert gs.positions[1][4, 2, 0] == pytest.approx((x[1, 3, 2, 0] + x[1, 5, 2, 0]) / 2, rel=1e-5)
    x[1, 1:7, 2, 0] = np.nan  # six frames: longer than max_gap=5
    with pytest.raises(NonFiniteError, match=r"clip 1, frames 1-6: a gap of 6 non-finite frames is longer"):
        load_user_data(npz(tmp_path, "long.npz", positions=x), nan_policy="interpolate")


# ---------------------------------------------------------------- E-Gait HDF5


def h5(path: Path, items: dict) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in items.items():
            f[key] = value
    return path


@pytest.mark.parametrize("label, message", [(np.nan, "is nan, expected one integer"),
                                            (1.5, "is 1.5, expected one integer"),
                                            ("sad", "is b'sad', expected one integer"),
                                            (np.array([1, 2]), "is int64 of shape \\(2,\\), expected one integer")])
def test_egait_bad_labels_are_named(tmp_path, label, message):
    features = h5(tmp_path / "features.h5", {"g1": np.zeros((6, 48))})
    labels = h5(tmp_path / "labels.h5", {"g1": label})
    with pytest.raises(DataFileError, match=rf"labels\.h5: label of 'g1' {message}"):
        load_egait(features, labels)


def test_egait_bad_gaits_are_named(tmp_path):
    with pytest.raises(DataFileError, match=r"f\.h5: gait 'g1' must hold real numbers"):
        load_egait(h5(tmp_path / "f.h5", {"g1": "hello"}))
    with pytest.raises(DataFileError, match=r"f\.h5: gait 'g1' has values too large for float32"):
        load_egait(h5(tmp_path / "f.h5", {"g1": np.full((6, 48), 1e300)}))
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(300))
    with pytest.raises(DataFileError, match=r"junk\.h5: cannot be read as HDF5"):
        load_egait(tmp_path / "junk.h5")


# ---------------------------------------------------------------- evaluation


def features(n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.arange(n) % 2


def test_knn_rejects_a_nan_training_window_instead_of_predicting_class_0():
    f, y = features()
    bad = f.clone()
    bad[7, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"train_x: window 7: contains NaN or inf"):
        knn_eval(None, bad, y, f, y)
    with pytest.raises(NonFiniteError, match=r"train features: window 7"):
        knn_predict(bad, y, f, 2, k=EvalConfig().knn_k)


def test_a_nan_test_window_is_not_classified():
    f, y = features()
    bad = f.clone()
    bad[4, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"test_x: window 4: contains NaN or inf"):
        knn_eval(None, f, y, bad, y)
    x = torch.randn(12, 8, 16, 3)
    xb = x.clone()
    xb[11, 2, 5, 1] = float("nan")
    config = EvalConfig.paper("linear", device="cpu", epochs=1)
    with pytest.raises(NonFiniteError, match=r"test_x: window 11"):
        linear_eval(AGCN(AGCNConfig.small()), x, torch.arange(12) % 3, xb, torch.arange(12) % 3, config)


def fit(model, x, y, lr=0.1):
    return fit_classifier(model, x, y, epochs=2, lr=lr, milestones=[], gamma=0.1, optimizer="sgd", momentum=0.9,
                          weight_decay=0.0, batch_size=8, generator=torch.Generator().manual_seed(1),
                          device=torch.device("cpu"))


def test_nan_inputs_or_weights_are_named_not_blamed_on_the_learning_rate():
    f, y = features()
    bad = f.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"training inputs: window 2: contains NaN or inf") as info:
        fit(nn.Linear(8, 2), bad, y)
    assert "learning rate" not in str(info.value)
    head = nn.Linear(8, 2)
    with torch.no_grad():
        head.weight[1, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"model before training: weight 'weight': contains NaN or inf"):
        fit(head, f, y)
    encoder = AGCN(AGCNConfig.small())
    with torch.no_grad():
        encoder.data_bn.running_var.fill_(float("nan"))
    x = torch.randn(6, 8, 16, 3)
    with pytest.raises(NonFiniteError, match=r"encoder: weight 'data_bn.running_var': contains NaN or inf"):
        knn_eval(encoder, x, torch.arange(6) % 2, x, torch.arange(6) % 2)


def test_pretraining_on_a_nan_window_names_it(tmp_path):
    bad = gaits()
    bad[5, 3, 2, 1] = np.nan
    with pytest.raises(NonFiniteError, match=r"^pretrain data: window 5: contains NaN or inf; .*interpolate"):
        pretrain(tiny_config(tmp_path), bad)


def test_a_diverging_fit_says_it_diverged():
    f, y = features(64)
    with pytest.raises(DivergedError, match=r"loss became .* in epoch 1 .*from finite inputs and weights: the fit "
                                            "diverged; lower the learning rate") as info:
        fit(nn.Linear(8, 2), f * 1e30, y, lr=1e30)
    assert isinstance(info.value, FloatingPointError)


# ---------------------------------------------------------------- checkpoints


def swap_left_right(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    for left, right in LEFT_RIGHT_PAIRS:
        out[:, :, [left, right]] = x[:, :, [right, left]]
    return out


@pytest.fixture
def one_epoch_run(tmp_path):
    config, data = tiny_config(tmp_path, "hsmb", epochs=1), gaits()
    pretrain(config, data)
    return replace(config, epochs=2), data


@pytest.mark.parametrize("alter", [lambda x: x[::-1].copy(), swap_left_right,
                                   lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, x + 1e-3, x)],
                         ids=["reordered", "left-right-swapped", "one-value-changed"])
def test_resume_refuses_altered_data_with_the_same_sums(one_epoch_run, alter):
    config, data = one_epoch_run
    other = alter(data).astype(np.float32)
    assert other.shape == data.shape and not np.array_equal(other, data)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: the data differ .*reordered, mirrored or changed"):
        pretrain(config, other, resume=True)


def test_fingerprint_is_the_hash_of_the_float32_data():
    data = torch.as_tensor(gaits())
    a, b = data_fingerprint(data), data_fingerprint(data.double())
    assert a["sha256"] == b["sha256"] and a["shape"] == [10, 12, 16, 3]
    assert data_fingerprint(data.flip(0))["sha256"] != a["sha256"]


def test_a_checkpoint_with_the_old_fingerprint_still_resumes(one_epoch_run):
    config, data = one_epoch_run
    path = Path(config.run_dir) / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    d = torch.as_tensor(data).double()
    state["fingerprint"] = [list(data.shape), d.sum().item(), (d * d).sum().item()]  # the format before the hash
    torch.save(state, path)
    assert len(pretrain(config, data, resume=True).history) == 2
    assert torch.load(path, weights_only=True)["fingerprint"]["format"] == 2  # rewritten in the new format
    state["fingerprint"] = [list(data.shape), d.sum().item() + 1.0, (d * d).sum().item()]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="the data differ"):
        pretrain(replace(config, epochs=3), data, resume=True)


@pytest.mark.parametrize("key", ["optimizer", "fingerprint", "config"])
def test_a_checkpoint_missing_an_entry_names_file_and_entry(one_epoch_run, key):
    config, data = one_epoch_run
    path = Path(config.run_dir) / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state[key]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"checkpoint\.pt: entry '{key}': missing"):
        pretrain(config, data, resume=True)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b"", "is empty"),
    (lambda b: b[: len(b) // 2], "cannot be read: truncated, or not a torch checkpoint"),
    (lambda b: bytes(range(256)) * 4, "is not a torch checkpoint|cannot be read"),
])
def test_empty_or_truncated_checkpoint_names_the_file(one_epoch_run, damage, message):
    config, data = one_epoch_run
    path = Path(config.run_dir) / "checkpoint.pt"
    path.write_bytes(damage(path.read_bytes()))
    for call in (lambda: pretrain(config, data, resume=True), lambda: load_pretrained(config.run_dir)):
        with pytest.raises(CheckpointError, match=rf"checkpoint\.pt: ({message})") as info:
            call()
        assert "weights_only=False" not in str(info.value)


class Pickled:
    pass


def test_a_pickled_object_is_refused_without_advice_to_unpickle_it(one_epoch_run):
    config, data = one_epoch_run
    path = Path(config.run_dir) / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["extra"] = Pickled()
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: holds Python objects other than tensors") as info:
        load_pretrained(config.run_dir)
    assert "weights_only" not in str(info.value).replace("weights-only", "")


CHILD = """
import io, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_pretrain_loop import gaits, tiny_config
from cagelib.pretrain.loop import pretrain
real_save = torch.save

def slow_save(obj, f, *args, **kwargs):  # writes half of the checkpoint, then hangs until killed
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    with open(f, "wb") as out:
        out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    time.sleep(600)

torch.save = slow_save
config = tiny_config(Path({run_dir!r}).parent, "hsmb", epochs=2, run_dir={run_dir!r})
pretrain(config, gaits(seed=3), resume=True)
"""


def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint_and_resumes_exactly(tmp_path):
    data = gaits(seed=3)
    full = pretrain(tiny_config(tmp_path, "hsmb", epochs=2, run_dir=str(tmp_path / "full")), data)
    run_dir = tmp_path / "killed"
    config = tiny_config(tmp_path, "hsmb", epochs=1, run_dir=str(run_dir))
    pretrain(config, data)  # checkpoint of epoch 1
    before = (run_dir / "checkpoint.pt").read_bytes()
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(ROOT / "tests"), run_dir=str(run_dir))],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
        temps: list[Path] = []
        while not temps and child.poll() is None and time.monotonic() < deadline:
            temps = [p for p in run_dir.glob(".checkpoint.*.pt") if p.stat().st_size > 0]
            time.sleep(0.1)
        assert temps, f"the child never started its checkpoint write: {child.communicate()[0].decode()[-2000:]}"
        time.sleep(0.2)  # the half-written bytes are flushed before the child sleeps
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert temps[0].exists()  # the killed write left its temporary file ...
    assert (run_dir / "checkpoint.pt").read_bytes() == before  # ... and the previous checkpoint intact
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = pretrain(replace(config, epochs=2), data, resume=True)
    assert not temps[0].exists()  # removed when the run resumed
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    assert losses(resumed.history) == losses(full.history)
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_all_errors_are_value_errors_with_file_item_problem():
    error = DataFileError("walk.bvh", "line 12", "52 values, expected 51", "fix the line")
    assert isinstance(error, ValueError) and isinstance(error, CagelibError)
    assert str(error) == "walk.bvh: line 12: 52 values, expected 51; fix the line"
    assert (error.source, error.item, error.problem) == ("walk.bvh", "line 12", "52 values, expected 51")
    import pickle
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
