"""The notebooks' structure (parameters cells that papermill can fill) and their widgets, headless.

nbval runs every notebook top to bottom (pytest.ini); these tests check what nbval cannot: that the
Figure 3 player's frames are what the data say, that its widgets drive it, and that every parameter
is a documented literal papermill can override.
"""
from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from cagelib.lab.ambiguity_widget import ambiguity_browser, emotion_samples
from cagelib.lab.evaluation import EvalSettings
from cagelib.lab.player import ambiguity_views, render_frame
from cagelib.lab.skeleton_plots import bone_segments, follow_root_track
from cagelib.lab.settings import RunSettings

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["01_data", "02_ambiguity_samples", "03_pretrain", "04_evaluate", "05_tsne", "06_your_gait"]


def parameters_cell(name: str) -> tuple[int, str]:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    (index,) = [i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", [])]
    return code.index(index), "".join(nb["cells"][index]["source"])


def walking(frames: int = 40, step: float = 0.03) -> np.ndarray:
    """A (T, 16, 3) figure translating along x with swinging limbs (no data files needed)."""
    rng = np.random.default_rng(0)
    base = rng.normal(scale=0.3, size=(16, 3))
    base[:, 1] += np.linspace(1.6, 0.0, 16)
    t = np.arange(frames)[:, None, None]
    x = np.repeat(base[None], frames, axis=0) + 0.1 * np.sin(t / 4.0 + np.arange(16)[None, :, None])
    x[..., 0] += step * t[..., 0]
    return x.astype(np.float32)


def test_the_notebooks_are_there_in_reading_order():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED
    for name in EXPECTED:
        nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        assert nb["cells"][0]["cell_type"] == "markdown"


@pytest.mark.parametrize("name", EXPECTED)
def test_parameters_are_commented_literals_that_papermill_sees(name):
    import papermill

    position, source = parameters_cell(name)
    assert position == 0, "the parameters cell must be the first code cell (derived values come after it)"
    names = []
    for line in source.splitlines():
        tree = ast.parse(line)
        (assign,) = tree.body
        ast.literal_eval(assign.value)  # a typed literal, nothing computed
        code, _, comment = line.partition("  # ")
        assert comment.strip(), f"{name}: parameter line without a comment: {line!r}"
        names.append(assign.targets[0].id)
    assert list(papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))) == names


def test_pretrain_and_evaluate_parameters_cover_their_settings():
    """Every RunSettings / EvalSettings field is a parameter, so cagelib.lab.reproduce can set it."""
    def names(nb):
        return {ast.parse(line).body[0].targets[0].id for line in parameters_cell(nb)[1].splitlines()}

    assert {f.name for f in fields(RunSettings)} <= names("03_pretrain")
    assert {f.name for f in fields(EvalSettings)} <= names("04_evaluate")
    # and their defaults are the library's CPU-sized ones
    for notebook, settings in (("03_pretrain", RunSettings), ("04_evaluate", EvalSettings)):
        defaults = {}
        exec(parameters_cell(notebook)[1], {}, defaults)
        assert settings(**{f.name: defaults[f.name] for f in fields(settings)}) == settings(), notebook


def test_render_frame_draws_each_ambiguity_view_at_that_frame():
    x = walking(40)
    sequences, titles = ambiguity_views(x, seed=3)
    for t in (0, 7, 25):
        figure = render_frame(sequences, titles, t, view="front", shared_limits=False)
        assert len(figure.axes) == 6
        for seq, ax in zip(sequences, figure.axes):
            seq = follow_root_track(seq)  # the player follows the walker
            length = int(np.flatnonzero(np.abs(seq).sum(axis=(1, 2)))[-1]) + 1
            frame = seq[min(t, length - 1)]
            bones = [line for line in ax.get_lines() if (line.get_gid() or "").startswith("bone-")]
            for line, (xs, ys) in zip(bones, bone_segments(frame, "front")):
                np.testing.assert_allclose(line.get_xdata(), xs, atol=1e-6)
                np.testing.assert_allclose(line.get_ydata(), ys, atol=1e-6)


def test_ambiguity_browser_headless_picker_parameters_and_frames():
    samples = [walking(40), walking(30, step=0.05)]
    player = ambiguity_browser(samples, ["a", "b"], seed=0, view="front")
    assert player.renderer.titles[0] == "original" and len(player.renderer.figure.axes) == 6
    pngs = [player.frame_png(t) for t in (0, 10, 20, 30)]
    assert all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs) and len(set(pngs)) == 4  # the figure moves
    player.frame_slider.value = 11  # the slider is 1-based, as the titles: 11 draws frame index 10
    assert player.image.value == pngs[1] and player.frame_index == 10
    player.renderer.update(player.frame_index)  # the picture shown is that frame's: its title names the slider's value
    assert player.renderer.figure.axes[0].get_title() == "original\nframe 11/40"
    np.testing.assert_allclose(player.renderer.sequences[0], follow_root_track(samples[0]))
    player.sample_picker.value = 1  # another gait: 30 frames
    assert player.frame_slider.max == 30
    np.testing.assert_allclose(player.renderer.sequences[0], follow_root_track(samples[1]))
    shear_before = player.renderer.sequences[5].copy()
    player.parameters["shear_amplitude"].value = 0.0  # no shear: the sheared panel equals the gait
    np.testing.assert_allclose(player.renderer.sequences[5], player.renderer.sequences[0], atol=1e-5)
    assert not np.allclose(shear_before, player.renderer.sequences[5])
    player.parameters["speed_up_rate"].value = 2
    assert "speed up r=2" in player.renderer.titles and player.renderer.lengths[3] in (15, 16)
    seeded = player.renderer.sequences[1].copy()
    player.parameters["seed"].value = 1
    assert not np.allclose(seeded, player.renderer.sequences[1])  # a new seed, new augmented views
    with pytest.raises(ValueError, match="names"):
        ambiguity_browser(samples, ["only one"])


def test_emotion_samples_offer_every_task_clip_walks_first():
    samples, names = emotion_samples(window=32)
    assert len(samples) == 28 and all(s.shape == (32, 16, 3) for s in samples)
    assert [n.split(":")[0] for n in names[::7]] == ["neutral", "happy", "sad", "angry"]
    assert names[0] == "neutral: walk_normal_001" and names[7].startswith("happy: walk_")
    few, few_names = emotion_samples(window=32, per_class=2)
    assert len(few) == 8 and few_names[:2] == names[:2]


def test_notebook_04_finetunes_with_the_short_recipe_below_the_papers_epochs():
    """At the CPU default (3 epochs) the paper's SGD lr 0.001 calls every window the majority class; below
    20 epochs the finetune rows use Adam lr 3e-3, batch 16, constant lr; 20 epochs give the paper's recipe."""
    from cagelib.lab.evaluation import SHORT_FINETUNE

    for protocol in ("finetune", "semi-supervised"):
        short = EvalSettings().eval_config(protocol, "cartesian")
        assert (short.optimizer, short.lr, short.batch_size, tuple(short.milestones), short.epochs) == (
            SHORT_FINETUNE["optimizer"], SHORT_FINETUNE["lr"], SHORT_FINETUNE["batch_size"], (), 3)
        paper = EvalSettings.paper().eval_config(protocol, "cartesian")
        assert (paper.optimizer, paper.lr, paper.batch_size, tuple(paper.milestones), paper.epochs) == (
            "sgd", 0.001, 32, (10,), 20)
    linear = EvalSettings().eval_config("linear", "cartesian")
    assert (linear.optimizer, linear.lr, tuple(linear.milestones)) == ("sgd", 30.0, (50, 70))  # the probe as before
