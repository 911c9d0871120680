"""Plots: skeleton drawing, limits, atomic saving, plotly animation, t-SNE, curves."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from cagelib.evaluate.metrics import EvalResult  # noqa: E402
from cagelib.lab.figures import (clipped_error, plot_bone_lengths, plot_confusion, plot_loss_curves,  # noqa: E402
                                 plot_per_class, plot_pretraining, plot_tsne, save_figure, tsne_embedding)
from cagelib.lab.skeleton_plots import (SIDE_COLORS, bone_side, draw_skeleton, follow_root_track,  # noqa: E402
                                        plot_axes, sequence_length, skeleton_3d_plotly, skeleton_figure,
                                        skeleton_limits)
from cagelib.skeleton import EDGES, PARENTS  # noqa: E402

# A standing pose (metres, y up): bone offsets from the parent joint.
OFFSETS = np.array([
    [0, 0.95, 0], [0, 0.25, 0], [0, 0.25, 0], [0, 0.15, 0.02],
    [0.18, -0.02, 0], [0.02, -0.28, 0], [0.01, -0.25, 0.02],
    [-0.18, -0.02, 0], [-0.02, -0.28, 0], [-0.01, -0.25, 0.02],
    [0.1, -0.05, 0], [0, -0.42, 0.02], [0, -0.42, -0.02],
    [-0.1, -0.05, 0], [0, -0.42, 0.02], [0, -0.42, -0.02],
])


def walking(frames: int = 40, speed: float = 0.02) -> np.ndarray:
    """A synthetic walk (T, 16, 3): swinging limbs, root moving forward along z."""
    x = np.zeros((frames, 16, 3))
    for t in range(frames):
        swing = 0.15 * np.sin(2 * np.pi * t / 20)
        off = OFFSETS.copy()
        off[[11, 5], 2] += swing
        off[[14, 8], 2] -= swing
        x[t, 0] = off[0] + [0, 0, speed * t]
        for j in range(1, 16):
            x[t, j] = x[t, PARENTS[j]] + off[j]
    return x.astype(np.float32)


def test_plot_axes_is_an_upright_rotation():
    p = np.eye(3)
    mapped = plot_axes(p)
    assert np.linalg.det(mapped) == pytest.approx(1.0)  # a rotation: handedness kept
    np.testing.assert_array_equal(plot_axes(np.array([0.3, 1.7, -0.2]))[2], 1.7)  # vertical = y


@pytest.mark.parametrize("camera", ["front", "side", "3d"])
def test_draw_skeleton_bones_match_the_pose(camera):
    frame = walking()[7]
    artists = draw_skeleton(None, frame, camera=camera)
    assert len(artists["bones"]) == len(EDGES)
    for (a, b), line in zip(EDGES, artists["bones"]):
        assert line.get_gid() == f"bone-{a}-{b}"
        assert to_hex(line.get_color()) == SIDE_COLORS[bone_side((a, b))]
        if camera == "3d":
            np.testing.assert_allclose(np.array(line.get_data_3d()).T, plot_axes(frame[[a, b]]))
        else:
            h = 0 if camera == "front" else 2
            np.testing.assert_allclose(np.array(line.get_data()).T, frame[[a, b]][:, [h, 1]])
    assert bone_side((2, 4)) == "left" and bone_side((13, 14)) == "right" and bone_side((0, 1)) == "centre"
    with pytest.raises(ValueError, match="frame"):
        draw_skeleton(None, frame[:10], camera=camera)
    with pytest.raises(ValueError, match=r"camera must be one of \('3d', 'front', 'side'\), got 'top'"):
        draw_skeleton(None, frame, camera="top")


def test_limits_cover_every_frame_and_ignore_padding():
    x = walking()
    padded = np.concatenate([x, np.zeros((10, 16, 3), np.float32)])
    assert sequence_length(padded) == len(x) and sequence_length(np.zeros((5, 16, 3))) == 0
    lim = skeleton_limits([padded])
    np.testing.assert_allclose(lim, skeleton_limits([x]))  # trailing zeros do not stretch the box
    assert np.all(lim[:, 0] <= x.reshape(-1, 3).min(0)) and np.all(lim[:, 1] >= x.reshape(-1, 3).max(0))
    np.testing.assert_allclose(lim[:, 1] - lim[:, 0], lim[0, 1] - lim[0, 0])  # a cube
    followed = follow_root_track(padded)
    np.testing.assert_allclose(followed[: len(x), 0, [0, 2]], 0.0, atol=1e-6)
    np.testing.assert_allclose(followed[: len(x), :, 1], x[:, :, 1], atol=1e-6)  # heights kept
    assert not followed[len(x):].any()


def test_skeleton_figure_strip_shares_limits():
    fig = skeleton_figure(walking(), frames=[0, 10, 20], camera="front")
    assert len(fig.axes) == 3
    assert len({ax.get_xlim() for ax in fig.axes}) == 1 and len({ax.get_ylim() for ax in fig.axes}) == 1
    assert [ax.get_title() for ax in fig.axes] == ["frame 0", "frame 10", "frame 20"]


def test_save_figure_is_atomic(tmp_path):
    path = save_figure(skeleton_figure(walking(), num_frames=2), tmp_path / "strip.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    class Broken:  # writes half a file, then fails
        def savefig(self, fname, **kwargs):
            with open(fname, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("disk full")

    old = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(Broken(), path)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["strip.png"]
    with pytest.raises(ValueError, match="suffix"):
        save_figure(Broken(), tmp_path / "nosuffix")


def test_plotly_animation_frames_follow_the_sequence(tmp_path):
    x = walking(12)
    fig = skeleton_3d_plotly(x, title="walk", fps=30, follow_root=False)
    assert len(fig.frames) == 12 and len(fig.layout.sliders[0].steps) == 12
    joints = fig.frames[5].data[-1]
    np.testing.assert_allclose(np.array([joints.x, joints.y, joints.z]).T, x[5], rtol=1e-6)
    left = fig.frames[5].data[0]  # left bones, None-separated segments
    pts = np.array([v for v in left.x if v is not None])
    expected = [x[5, j, 0] for a, b in EDGES if bone_side((a, b)) == "left" for j in (a, b)]
    np.testing.assert_allclose(pts, expected, rtol=1e-6)
    assert fig.layout.scene.camera.up.y == 1 and fig.layout.scene.xaxis.autorange is False
    assert "plotly" in save_figure(fig, tmp_path / "walk.html").read_text()[:5000].lower()


def test_plotly_view_follows_the_walker_at_a_readable_size():
    """A long walk (4 m along z) is shown root-relative: the scene is a cube about the body's size
    (not the trajectory's), ticks every 0.5 m (a handful per axis), the controls below the scene."""
    x = walking(200, speed=0.02)  # root moves 4 m
    fig = skeleton_3d_plotly(x, title="walk", fps=30)
    scene = fig.layout.scene
    spans = [r[1] - r[0] for r in (scene.xaxis.range, scene.yaxis.range, scene.zaxis.range)]
    assert np.allclose(spans, spans[0]) and scene.aspectmode == "cube"  # equal aspect
    height = np.ptp(x[:, :, 1])
    assert height / spans[0] > 0.75, f"body {height:.2f} m in a {spans[0]:.2f} m scene"
    assert all(span / a.dtick <= 6 for span, a in zip(spans, (scene.xaxis, scene.yaxis, scene.zaxis)))
    assert "(m)" in scene.xaxis.title.text and "(m)" in scene.yaxis.title.text and fig.layout.title.text
    assert scene.domain.y[0] >= 0.12 and fig.layout.height >= 500  # play/slider below the scene
    assert fig.layout.sliders[0].y <= scene.domain.y[0] and fig.layout.updatemenus[0].y <= scene.domain.y[0]
    joints = np.array([fig.frames[-1].data[-1][k] for k in "xyz"]).T
    assert np.all(joints >= [r[0] for r in (scene.xaxis.range, scene.yaxis.range, scene.zaxis.range)])
    assert np.all(joints <= [r[1] for r in (scene.xaxis.range, scene.yaxis.range, scene.zaxis.range)])


def test_tsne_is_deterministic_and_keeps_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = rng.normal(size=(3, 10))[labels] * 5 + rng.normal(size=(60, 10))
    a, b = tsne_embedding(features, seed=3), tsne_embedding(features, seed=3)
    assert a.shape == (60, 2)
    np.testing.assert_array_equal(a, b)
    dist = np.linalg.norm(a[:, None] - a[None], axis=-1) + np.eye(60) * 1e9
    assert np.mean(labels[dist.argmin(1)] == labels) > 0.9  # nearest neighbour keeps its class
    fig = plot_tsne({"GE-CLR": (a, labels), "CAGE": (b, labels)}, ["neutral", "happy", "sad"])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["GE-CLR", "CAGE"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["neutral", "happy", "sad"]
    with pytest.raises(ValueError, match="features"):
        tsne_embedding(features[:2])


def test_curves_confusion_and_bone_lengths():
    result = EvalResult(protocol="linear", top1=62.5, per_class=[75.0, 50.0], confusion=[[3, 1], [2, 2]],
                        label_names=("sad", "happy"), train_loss=[2.0, 1.5, 1.0], val_accuracy=[40.0, 50.0, 45.0])
    fig = plot_loss_curves(result)
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert {line.get_label() for line in lines} == {"train loss", "val accuracy (%)"}
    assert list(next(line for line in lines if line.get_label() == "train loss").get_ydata()) == [2.0, 1.5, 1.0]
    records = plot_loss_curves([{"epoch": 1, "loss": 3.0, "lr": 0.1}, {"epoch": 2, "loss": 2.0, "lr": 0.1}])
    assert {line.get_label() for line in records.axes[0].get_lines()} == {"loss", "lr"}
    cm = plot_confusion(result)
    np.testing.assert_allclose(cm.axes[0].images[0].get_array(), [[75.0, 25.0], [50.0, 50.0]])
    assert "62.50" in cm.axes[0].get_title()
    rigid = plot_bone_lengths(walking())
    assert len(rigid.axes[0].get_lines()) == len(EDGES)
    spine = rigid.axes[0].get_lines()[0].get_ydata()  # root-spine: rigid in the synthetic walk
    np.testing.assert_allclose(spine, 1.0, rtol=1e-5)


def test_per_class_error_bars_stay_inside_0_and_100_and_the_legend_is_readable():
    agg = dict(label_names=["neutral", "sad"], per_class_mean=[5.0, 90.0], per_class_std=[20.0, 30.0],
               balanced_mean=47.5)
    evaluation = {"n_folds": 4, "results": {"linear": {"aggregate": agg},
                                            "finetune": {"aggregate": {**agg, "per_class_mean": [0.0, 100.0]}}}}
    np.testing.assert_allclose(clipped_error([5.0, 90.0], [20.0, 30.0]), [[5.0, 30.0], [20.0, 10.0]])
    fig = plot_per_class(evaluation)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if getattr(c, "errorbar", None) is not None]
    assert len(bars) == 2
    for container in bars:
        ys = np.concatenate([np.asarray(seg)[:, 1] for seg in container.errorbar.lines[2][0].get_segments()])
        assert ys.min() >= 0.0 and ys.max() <= 100.0
    assert ax.get_ylim() == (0.0, 105.0) and ax.get_title() and ax.get_xlabel() and "%" in ax.get_ylabel()
    legend = ax.get_legend()
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    assert any("balanced 48 %" in t.get_text() for t in legend.get_texts())
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    box, axes_box = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert box.x0 >= axes_box.x1  # beside the axes: the legend covers no bar


def test_pretraining_panels_have_their_own_legends_and_colours():
    history = [{"epoch": e, "loss": 3.0 / e, "loss_cartesian": 1.0, "loss_spherical": 1.1, "loss_cross": 0.5,
                "loss_positive": 0.7, "loss_base": 0.9, "acc": 0.1 * e, "retrieval_cartesian": 0.1,
                "spread_cartesian": 0.2, "knn_cartesian": 0.5, "retrieval_spherical": 0.1,
                "spread_spherical": 0.3, "knn_spherical": 0.4} for e in (1, 2, 3)]
    init = {"epoch": 0, "chance": 0.01, "retrieval_cartesian": 0.05, "spread_cartesian": 0.1, "knn_cartesian": 0.4,
            "retrieval_spherical": 0.05, "spread_spherical": 0.1, "knn_spherical": 0.3}
    fig = plot_pretraining(history, init, title="pretraining")
    loss_ax, accuracy_ax, health_ax = fig.axes
    left = [line for a in (loss_ax, accuracy_ax) for line in a.get_lines()]
    right = [line for line in health_ax.get_lines() if line.get_label() != "retrieval chance (1 / windows)"]
    assert len(left) == 7 and len(right) == 6
    left_colours = {to_hex(line.get_color()) for line in left}
    right_colours = {to_hex(line.get_color()) for line in right}
    assert len(left_colours) == 7 and left_colours.isdisjoint(right_colours)  # no colour names two curves
    assert to_hex("grey") not in left_colours | right_colours
    assert loss_ax.get_legend() is not None and health_ax.get_legend() is not None  # one legend per panel
    assert len(loss_ax.get_legend().get_texts()) == 7 and len(health_ax.get_legend().get_texts()) == 7
    assert 0.5 < loss_ax.get_xlim()[0] < 1  # the loss axis starts at epoch 1, where its data start
    assert -0.5 < health_ax.get_xlim()[0] < 0  # the health axis at epoch 0 (before training)
    for ax in (loss_ax, health_ax):
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_real_bandai_walk_stands_upright(shared_data):
    from cagelib.data.bandai import BANDAI_JOINT_MAP
    from cagelib.data.bvh import read_bvh

    x, _ = read_bvh(shared_data / "bandai-motion" / "dataset-1" / "data" / "dataset-1_walk_normal_002.bvh",
                    BANDAI_JOINT_MAP)
    fig = skeleton_figure(x, num_frames=4, camera="side")
    for ax in fig.axes:  # drawn head above drawn feet in every panel: the vertical axis is y
        joints = next(line for line in ax.get_lines() if line.get_gid() == "joints")
        heights = np.asarray(joints.get_ydata())
        assert heights[3] > heights[12] + 1.0 and heights[3] > heights[15] + 1.0


def test_data_table_shows_paths_relative_to_the_repository():
    from pathlib import Path

    from cagelib.lab.data_overview import datasets_present

    rows, _ = datasets_present("data/no_features.h5")
    assert rows[0]["file"] == str(Path("data") / "bandai.npz")
    assert all(not Path(r["file"]).is_absolute() for r in rows)
