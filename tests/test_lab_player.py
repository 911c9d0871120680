"""Animation: render_frame draws the right coordinates, fixed limits, the headless ipywidgets player."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_lab_figures import walking  # noqa: E402

from cagelib.lab.player import SkeletonPlayer, SkeletonRenderer, ambiguity_player, ambiguity_views, render_frame  # noqa: E402
from cagelib.skeleton import EDGES  # noqa: E402
from cagelib.lab.skeleton_plots import follow_root_track, plot_axes  # noqa: E402


def bone(fig, panel: int, edge=(2, 3)):
    """The Line2D of one bone in one panel."""
    return next(line for line in fig.axes[panel].get_lines() if line.get_gid() == f"bone-{edge[0]}-{edge[1]}")


def limits(ax):
    return (ax.get_xlim(), ax.get_ylim()) + ((ax.get_zlim(),) if hasattr(ax, "get_zlim") else ())


@pytest.mark.parametrize("camera", ["3d", "front"])
def test_render_frame_draws_that_frame(camera):
    x, y = walking(30), walking(20, speed=0.05)
    for t in (0, 7, 19):
        fig = render_frame([x, y], ["a", "b"], t, camera=camera, follow_root=False)
        for panel, seq in enumerate((x, y)):
            for edge in ((2, 3), (10, 11), (7, 8)):
                line = bone(fig, panel, edge)
                if camera == "3d":
                    np.testing.assert_allclose(np.array(line.get_data_3d()).T, plot_axes(seq[t][list(edge)]), rtol=1e-6)
                else:
                    np.testing.assert_allclose(np.array(line.get_data()).T, seq[t][list(edge)][:, :2], rtol=1e-6)
        assert fig.axes[0].get_title() == f"a\nframe {t + 1}/30"


def test_follow_root_draws_root_relative_coordinates():
    x = walking(30)
    fig = render_frame([x], frame_index=12)  # follow_root=True by default
    expected = plot_axes(follow_root_track(x)[12][[0, 10]])
    np.testing.assert_allclose(np.array(bone(fig, 0, (0, 10)).get_data_3d()).T, expected, rtol=1e-6, atol=1e-9)


def test_axis_limits_are_fixed_over_frames():
    renderer = SkeletonRenderer([walking(30), walking(20)], camera="3d", follow_root=False)
    first = [limits(ax) for ax in renderer.figure.axes]
    for t in (5, 17, 29):
        renderer.update(t)
        assert [limits(ax) for ax in renderer.figure.axes] == first
    # a fresh figure at another frame has the same camera too
    assert [limits(ax) for ax in render_frame([walking(30), walking(20)], None, 25, follow_root=False).axes] == first
    assert first[0] == first[1]  # shared limits across panels by default
    own = SkeletonRenderer([walking(30), 3 * walking(20)], shared_limits=False)
    assert limits(own.figure.axes[0]) != limits(own.figure.axes[1])


def test_shorter_sequences_hold_or_hide_after_their_end():
    long, short = walking(30), np.concatenate([walking(10), np.zeros((20, 16, 3), np.float32)])
    fig = render_frame([long, short], ["long", "short"], 25, follow_root=False)
    np.testing.assert_allclose(np.array(bone(fig, 1).get_data_3d()).T, plot_axes(short[9][[2, 3]]), rtol=1e-6)
    assert fig.axes[1].get_title() == "short\nended" and bone(fig, 1).get_visible()
    hidden = render_frame([long, short], ["long", "short"], 25, ended="hide")
    assert not bone(hidden, 1).get_visible() and bone(hidden, 0).get_visible()
    with pytest.raises(ValueError, match=r"\(T, 16, 3\)"):
        render_frame([long[:, :10]], frame_index=0)
    with pytest.raises(ValueError, match="titles"):
        render_frame([long], ["a", "b"], 0)
    with pytest.raises(ValueError, match=r"camera must be one of \('3d', 'front', 'side'\)"):
        render_frame([long], camera="top")


def test_player_headless_slider_play_speed_and_samples():
    samples = [[walking(30)], [walking(12, speed=0.05), walking(8)]]
    calls = []

    def sample_fn(i):
        calls.append(i)
        return samples[i], [f"s{i}-{k}" for k in range(len(samples[i]))]

    player = SkeletonPlayer(fps=30, sample_fn=sample_fn, num_samples=2, camera="front")
    assert calls == [0] and (player.frame_slider.min, player.frame_slider.max) == (1, 30)  # 1-based, as the titles
    assert player.frame_slider.value == 1 and player.renderer.figure.axes[0].get_title() == "s0-0\nframe 1/30"
    png0 = player.image.value
    assert png0[:8] == b"\x89PNG\r\n\x1a\n"
    player.frame_slider.value = 11
    png10 = player.image.value
    assert png10 != png0 and png10 == player.renderer.png(10) and player.frame_index == 10
    player.renderer.update(player.frame_index)  # the picture shown is that frame's: its title names the slider's value
    assert player.renderer.figure.axes[0].get_title() == f"s0-0\nframe {player.frame_slider.value}/30"
    player.play.value = 1  # the Play widget drives the slider (linked in the kernel: works headless)
    assert player.frame_slider.value == 1 and player.image.value == png0  # cached frame, same bytes
    player.speed.value = 2.0
    assert player.play.interval == round(1000 / 60)
    player.frame_slider.value = 21
    player.sample_picker.value = 1  # new sample: 12 frames, the frame index is clamped
    assert calls == [0, 1] and player.frame_slider.max == 12 and player.play.max == 12
    assert player.frame_slider.value == 12 and len(player.renderer.figure.axes) == 2
    assert player.image.value == player.renderer.png(11)
    assert player.renderer.figure.axes[0].get_title() == "s1-0\nframe 12/12"
    with pytest.raises(ValueError, match="sample_fn"):
        SkeletonPlayer()


def test_ambiguity_views_and_player():
    x = walking(40)
    seqs, titles = ambiguity_views(x, seed=0, speed_up_rate=4, speed_down_rate=0.3, shear_amplitude=0.5)
    assert titles[0] == "original" and len(seqs) == len(titles) == 6
    np.testing.assert_allclose(seqs[0], x)
    assert [s.shape for s in seqs] == [x.shape] * 6
    speed_up = seqs[titles.index("speed up r=4")]
    assert 9 <= np.flatnonzero(np.abs(speed_up).sum(axis=(1, 2)))[-1] + 1 <= 10  # ceil((40 - i) / 4) frames
    again, _ = ambiguity_views(x, seed=0)
    for a, b in zip(seqs, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ambiguity_views(x, seed=1)[0][1], seqs[1])
    player = ambiguity_player(x, seed=0, camera="front")
    assert len(player.renderer.figure.axes) == 6 and player.renderer.lengths[3] <= 10
    before = player.image.value
    speed_up_control = next(w for w in player.widget.children[1].children if w.description == "speed up r")
    speed_up_control.value = 2  # a parameter widget re-renders the views
    assert 19 <= player.renderer.lengths[3] <= 20 and "speed up r=2" in player.renderer.titles
    assert player.image.value != before
    assert len(EDGES) == len(player.renderer.panels[0]["bones"])


@pytest.mark.parametrize("camera", ["3d", "front"])
def test_panels_have_metre_axes_and_a_left_right_key(camera):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex

    from cagelib.lab.skeleton_plots import SIDE_COLORS

    fig = render_frame([walking(30), walking(20)], ["a", "b"], 3, camera=camera)
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes:
        axes = (ax.xaxis, ax.yaxis) + ((ax.zaxis,) if camera == "3d" else ())
        assert all("(m)" in axis.get_label_text() for axis in axes)
        for axis in axes:  # tick labels in metres: numbers, not blank
            labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
            assert labels
            [float(t.replace("\u2212", "-")) for t in labels]  # each a number (of metres)
    (key,) = fig.legends
    texts = {t.get_text(): to_hex(h.get_color()) for t, h in zip(key.get_texts(), key.legend_handles)}
    assert texts["performer's left"] == SIDE_COLORS["left"] and texts["performer's right"] == SIDE_COLORS["right"]


def test_3d_depth_ticks_name_z_not_the_plotted_minus_z():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    x = walking(30) + np.array([0.0, 0.0, 2.0], np.float32)  # the walker at z = 2 m (and more)
    fig = render_frame([x], frame_index=0, follow_root=False)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    values = [float(t.get_text().replace("\u2212", "-")) for t in ax.yaxis.get_ticklabels() if t.get_text()]
    assert values and min(values) > 1.0  # z of the data, positive, although matplotlib's y axis holds -z
