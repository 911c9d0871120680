"""Property-based tests (hypothesis): generated malformed and edge-case BVH text, HDF5 files, ``.npz`` members and
arrays. Each input either loads correctly (finite values, the right shapes) or raises cagelib's error
(``CagelibError``, naming the file); never an unrelated exception, never NaN out.

``EXAMPLES`` examples per property, no deadline (the machine is shared); the counts are in the module's test
``pytest --hypothesis-show-statistics`` output.
"""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import h5py
import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_bad_input import IDENTITY_MAP, N_CHANNELS, star_bvh

from cagelib.data import load_user_data, read_bvh
from cagelib.data.bvh import forward_kinematics, parse_bvh, read_bvh_clip
from cagelib.data.egait import load_egait
from cagelib.data.gaps import apply_nan_policy
from cagelib.errors import CagelibError, DivergedError, NonFiniteError
from cagelib.evaluate.classifier import fit_classifier
from cagelib.evaluate.protocols import EvalConfig, knn_eval

EXAMPLES = 200
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])

# Values that break naive parsers: non-finite, overflowing, denormal, non-numeric, structural tokens.
NASTY_TOKENS = ["nan", "NaN", "inf", "-inf", "1e400", "-1e308", "1e308", "1e-320", "-0", "0x10", "1,5", "--1", "1_0",
                "x", "{", "}", "ROOT", "JOINT", "End", "Site", "OFFSET", "CHANNELS", "CHANNELS 3", "MOTION", "Frames:",
                "Frame Time:", "\x00", "\ufeff", "é", "\t", "3 Xrotation", "Wrotation"]
finite_floats = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
any_floats = st.one_of(finite_floats, st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-320, 0.0]))
any_floats32 = st.one_of(finite_floats, st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, 0.0]))


# ---------------------------------------------------------------- BVH text


@st.composite
def valid_bvh(draw):
    """A well-formed BVH (random tree, channel layouts and numbers) and the motion it holds."""
    n_joints = draw(st.integers(1, 6))
    parents = [-1] + [draw(st.integers(0, j - 1)) for j in range(1, n_joints)]
    layouts = [draw(st.sampled_from([("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation"),
                                     ("Zrotation", "Xrotation", "Yrotation"), ("Xrotation", "Yrotation", "Zrotation"),
                                     ("Yrotation",), ()])) for _ in range(n_joints)]
    offsets = [draw(st.lists(finite_floats, min_size=3, max_size=3)) for _ in range(n_joints)]
    n_frames = draw(st.integers(1, 5))
    n_channels = sum(len(c) for c in layouts)
    motion = np.array(draw(st.lists(finite_floats, min_size=n_frames * n_channels, max_size=n_frames * n_channels)),
                      dtype=np.float64).reshape(n_frames, n_channels)
    frame_time = draw(st.floats(1e-3, 1.0))

    def block(j: int, depth: int) -> list[str]:
        pad = "  " * depth
        head = f"{pad}{'ROOT' if j == 0 else 'JOINT'} j{j}"
        lines = [head, pad + "{", f"{pad}  OFFSET {' '.join(repr(float(v)) for v in offsets[j])}"]
        if layouts[j]:
            lines.append(f"{pad}  CHANNELS {len(layouts[j])} {' '.join(layouts[j])}")
        children = [c for c in range(n_joints) if parents[c] == j]
        for c in children:
            lines += block(c, depth + 1)
        if not children:
            lines += [f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET 0 1 0", f"{pad}  }}"]
        return lines + [pad + "}"]

    # channels appear in hierarchy (depth-first) order: reorder the motion columns to match
    order: list[int] = []

    def visit(j):
        order.append(j)
        for c in range(n_joints):
            if parents[c] == j:
                visit(c)
    visit(0)
    lines = ["HIERARCHY"] + block(0, 0) + ["MOTION", f"Frames: {n_frames}", f"Frame Time: {frame_time!r}"]
    lines += [" ".join(repr(float(v)) for v in row) for row in motion]
    return "\n".join(lines) + "\n", motion, frame_time, sum(len(layouts[j]) for j in order)


@st.composite
def mutated(draw, text_strategy):
    """Text with 1-3 random line / token edits, or cut short."""
    text = draw(text_strategy)
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace_token", "insert_token", "drop_token",
                                   "cut"]))
        tokens = lines[i].split(" ")
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "replace_token":
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(st.sampled_from(NASTY_TOKENS) | st.text(max_size=4))
            lines[i] = " ".join(tokens)
        elif op == "insert_token":
            tokens.insert(draw(st.integers(0, len(tokens))), draw(st.sampled_from(NASTY_TOKENS) | st.text(max_size=4)))
            lines[i] = " ".join(tokens)
        elif op == "drop_token":
            del tokens[draw(st.integers(0, len(tokens) - 1))]
            lines[i] = " ".join(tokens)
        else:
            lines = lines[:i]
    return "\n".join(lines) + "\n"


def check_clip_or_error(text: str):
    try:
        clip = parse_bvh(text, "gen.bvh")
    except CagelibError as error:
        assert str(error).startswith("gen.bvh"), str(error)
        event(f"raised {type(error).__name__}")
        return None
    event("loaded")
    n_channels = sum(len(c) for c in clip.channels)
    assert clip.motion.shape == (clip.motion.shape[0], n_channels) and clip.motion.shape[0] >= 1
    assert np.isfinite(clip.motion).all() and np.isfinite(clip.offsets).all()
    assert np.isfinite(clip.frame_time) and clip.frame_time > 0 and np.isfinite(clip.fps)
    return clip


@PROPERTY
@given(valid_bvh())
def test_valid_bvh_loads_exactly(case):
    text, motion, frame_time, n_channels = case
    clip = parse_bvh(text, "gen.bvh")
    assert clip.motion.shape == (len(motion), n_channels) and clip.frame_time == frame_time
    assert sorted(clip.motion.ravel().tolist()) == sorted(motion.ravel().tolist())
    with np.errstate(all="ignore"):
        assert np.isfinite(forward_kinematics(clip, end_sites=True)).all()


@PROPERTY
@given(mutated(valid_bvh().map(lambda case: case[0])))
def test_mutated_bvh_loads_or_raises_cagelib_error(text):
    check_clip_or_error(text)


@st.composite
def star_text(draw):
    n = draw(st.integers(1, 4))
    rows = [[draw(st.sampled_from(["0", "12.5", "-90", "1e30", "1e300", "nan", "inf", "-1e308"]) | st.just("1.0"))
             for _ in range(N_CHANNELS)] for _ in range(n)]
    return star_bvh([" ".join(r) for r in rows], frame_time=draw(st.sampled_from(["0.0333", "0", "-1", "nan", "1"])))


@PROPERTY
@given(st.one_of(star_text(), mutated(star_text())), st.sampled_from(["reject", "interpolate"]))
def test_read_bvh_gives_finite_positions_or_cagelib_error(text, nan_policy):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "star.bvh"
        path.write_text(text)
        try:
            x, fps = read_bvh(path, IDENTITY_MAP, nan_policy=nan_policy)
        except CagelibError as error:
            assert str(error).startswith(str(path)), str(error)
            event(f"raised {type(error).__name__}")
            return
    event("loaded")
    assert x.dtype == np.float32 and x.shape[1:] == (16, 3) and np.isfinite(x).all() and np.isfinite(fps) and fps > 0


@PROPERTY
@given(st.one_of(st.binary(max_size=600), st.binary(max_size=300).map(lambda b: b"HIERARCHY\n" + b),
                 st.text(max_size=300).map(lambda t: ("HIERARCHY\n" + t).encode("utf-8", "surrogatepass"))))
def test_arbitrary_bytes_as_bvh_raise_cagelib_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "noise.bvh"
        path.write_bytes(data)
        try:
            clip = read_bvh_clip(path)
        except CagelibError as error:
            assert str(error).startswith(str(path)), str(error)
            event(f"raised {type(error).__name__}")
            return
    assert np.isfinite(clip.motion).all()  # (random bytes virtually never form a BVH)


# ---------------------------------------------------------------- HDF5 (E-Gait layout)

hdf5_keys = st.text(alphabet="abcxyz_019", min_size=1, max_size=6)
gait_arrays = st.one_of(
    hnp.arrays(np.float64, st.tuples(st.integers(0, 5), st.sampled_from([47, 48, 3])), elements=any_floats),
    hnp.arrays(np.float32, st.tuples(st.integers(0, 5), st.sampled_from([47, 48])), elements=any_floats32),
    hnp.arrays(np.float64, st.tuples(st.integers(1, 8), st.just(48)), elements=finite_floats),
    hnp.arrays(np.float64, st.tuples(st.integers(3, 8), st.just(48)), elements=finite_floats).map(
        lambda a: np.where(np.arange(a.size).reshape(a.shape) == 48 + 7, np.nan, a)),  # one interior NaN
    hnp.arrays(st.sampled_from([np.int32, np.bool_]), st.tuples(st.integers(1, 4), st.just(48))),
    st.just(np.float64(3.0)), st.just(b"not a gait"),
)
label_values = st.one_of(st.integers(-2, 5), st.sampled_from([np.nan, np.inf, 1.5, 2.0]), st.just(b"sad"),
                         hnp.arrays(np.int64, st.integers(0, 3)))


@PROPERTY
@given(st.dictionaries(hdf5_keys, gait_arrays, min_size=0, max_size=3),
       st.one_of(st.none(), st.dictionaries(hdf5_keys, label_values, max_size=4)),
       st.sampled_from(["reject", "interpolate"]), st.sampled_from(["error", "ignore"]))
def test_hdf5_loads_or_raises_cagelib_error(features, labels, nan_policy, extra_labels):
    with tempfile.TemporaryDirectory() as folder:
        features_path, labels_path = Path(folder) / "features.h5", Path(folder) / "labels.h5"
        with h5py.File(features_path, "w") as f:
            for key, value in features.items():
                f[key] = value
        if labels is not None:
            with h5py.File(labels_path, "w") as f:
                for key, value in labels.items():
                    f[key] = value
        try:
            gs = load_egait(features_path, labels_path if labels is not None else None, nan_policy=nan_policy,
                            extra_labels=extra_labels)
        except CagelibError as error:
            assert str(error).startswith(folder), str(error)
            event(f"raised {type(error).__name__}")
            return
    event("loaded")
    assert len(gs) == len(features) and all(np.isfinite(p).all() and p.shape[1:] == (16, 3) for p in gs.positions)
    assert ((gs.labels >= -1) & (gs.labels < 4)).all()


# ---------------------------------------------------------------- .npz members

positions_arrays = st.one_of(
    hnp.arrays(np.float64, st.tuples(st.integers(0, 3), st.integers(1, 6), st.just(16), st.just(3)), elements=any_floats),
    hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 6), st.just(48)), elements=finite_floats),
    hnp.arrays(np.float64, st.tuples(st.integers(0, 12), st.just(16), st.just(3)), elements=finite_floats),
    hnp.arrays(st.sampled_from([np.int16, np.bool_, np.complex64, "U3"]), st.tuples(st.integers(1, 3), st.just(4),
                                                                                    st.just(16), st.just(3))),
    hnp.arrays(np.float64, hnp.array_shapes(max_dims=5, max_side=4), elements=finite_floats),
)
small_vectors = st.one_of(
    hnp.arrays(np.int64, st.integers(0, 4), elements=st.sampled_from([-1, 0, 1, 2, 3, 6])),
    hnp.arrays(np.float64, st.integers(0, 4), elements=st.sampled_from([-1, 0, 1, 2, 3, 6, 2.5, np.nan])),
    hnp.arrays("U5", st.integers(0, 4), elements=st.sampled_from(["", "sad", "happy", "x"])),
    hnp.arrays(np.int64, st.tuples(st.integers(1, 2), st.integers(1, 2)), elements=st.integers(0, 3)),
)
scalars = st.one_of(st.sampled_from([30.0, 0.0, -5.0, np.nan, np.inf, "fast", "m"]).map(np.array),
                    hnp.arrays(np.float64, st.integers(0, 3), elements=st.floats(1, 60)))


@PROPERTY
@given(positions_arrays,
       st.fixed_dictionaries({}, optional={"lengths": small_vectors, "labels": small_vectors,
                                           "label_names": small_vectors, "fps": scalars, "units": scalars,
                                           "subject": small_vectors}),
       st.booleans(), st.sampled_from(["reject", "interpolate"]))
def test_npz_loads_or_raises_cagelib_error(positions, members, extra_text_member, nan_policy):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "user.npz"
        np.savez(path, positions=positions, **members)
        if extra_text_member:
            with zipfile.ZipFile(path, "a") as archive:
                archive.writestr("readme.txt", "hello")
        try:
            gs = load_user_data(path, nan_policy=nan_policy)
        except CagelibError as error:
            assert str(error).startswith(str(path)), str(error)
            event(f"raised {type(error).__name__}")
            return
    event("loaded")
    assert all(np.isfinite(p).all() and p.shape[1:] == (16, 3) and len(p) >= 1 for p in gs.positions)
    assert ((gs.labels >= -1) & (gs.labels < len(gs.label_names))).all()
    assert np.isfinite(gs.fps) and gs.fps > 0


# ---------------------------------------------------------------- arrays: gaps, k-NN, classifier fits


@PROPERTY
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 3)), elements=any_floats),
       st.integers(1, 4))
def test_interpolation_fills_short_inner_gaps_or_raises(x, max_gap):
    try:
        out = apply_nan_policy(x, "interpolate", max_gap, "arr", "clip 0")
    except NonFiniteError as error:
        assert str(error).startswith("arr: clip 0, frame"), str(error)
        event("raised NonFiniteError")
        return
    event("interpolated")
    assert np.isfinite(out).all() and out.shape == x.shape
    np.testing.assert_array_equal(out[np.isfinite(x)], x[np.isfinite(x)])


@PROPERTY
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 4)), elements=any_floats32),
       hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 4)), elements=any_floats32),
       st.integers(1, 5), st.sampled_from([0.07, None]))
def test_knn_predicts_valid_classes_or_names_the_bad_window(train, test, k, temperature):
    if train.shape[1] != test.shape[1]:
        test = np.resize(test, (test.shape[0], train.shape[1]))
    train_y, test_y = np.arange(len(train)) % 3, np.arange(len(test)) % 3
    try:
        result = knn_eval(None, train, train_y, test, test_y, temperature=temperature,
                          config=EvalConfig.paper("knn", knn_k=k, device="cpu"), num_classes=3)
    except NonFiniteError as error:
        assert str(error).startswith(("train_x: window", "test_x: window")), str(error)
        event("raised NonFiniteError")
        return
    event("predicted")
    assert np.isfinite(result.top1) and 0 <= result.top1 <= 100 and np.array(result.confusion).sum() == len(test)
    assert result.config["knn_k"] == k and result.config.get("k_used", k) == min(k, len(train))


@PROPERTY
@given(hnp.arrays(np.float32, st.tuples(st.integers(4, 16), st.just(4)), elements=any_floats32),
       st.sampled_from([1e-3, 0.1, 10.0, 1e20, 1e38]), st.sampled_from(["sgd", "adam"]))
def test_a_fit_gives_finite_losses_or_says_why_not(x, lr, optimizer):
    torch.manual_seed(0)
    y = torch.arange(len(x)) % 2
    try:
        history = fit_classifier(torch.nn.Linear(4, 2), torch.as_tensor(x), y, epochs=2, lr=lr, milestones=[],
                                 gamma=0.1, optimizer=optimizer, momentum=0.9, weight_decay=0.0, batch_size=4,
                                 generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    except DivergedError as error:
        assert np.isfinite(x).all() and "diverged" in str(error)
        event("raised DivergedError")
        return
    except NonFiniteError as error:
        assert not np.isfinite(x).all() and str(error).startswith("training inputs: window"), str(error)
        event("raised NonFiniteError")
        return
    event("fitted")
    assert np.isfinite(history["train_loss"]).all()
