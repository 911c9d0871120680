"""The notebooks' structure (parameters cells that papermill can fill) and their widgets, headless.

nbval runs every notebook top to bottom (pytest.ini); these tests check what nbval cannot: that the
Figure 3 player's frames are what the data say, that its widgets drive it, and that every parameter
is a documented literal papermill can override; that the experiment notebooks (03, 04) hand their preset and
overrides to the experiment tree (``cagelib.experiment.load``), where every setting can be overridden.
"""
from __future__ import annotations

import ast
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from cagelib.errors import ParameterError
from cagelib.evaluate.protocols import EvalConfig
from cagelib.experiment import load, settings_help
from cagelib.lab.ambiguity_widget import ambiguity_browser, emotion_samples
from cagelib.lab.player import ambiguity_views, render_frame
from cagelib.lab.skeleton_plots import bone_segments, follow_root_track
from cagelib.methods.encoders import AGCNConfig
from cagelib.pretrain.fast import FastConfig
from notebook_code import notebook_until_load

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["01_data", "02_ambiguity_samples", "03_pretrain", "04_evaluate", "05_tsne", "06_your_gait"]
EXPERIMENT_NOTEBOOKS = ("03_pretrain", "04_evaluate")  # they take a preset and overrides
EXPERIMENT_PARAMETERS = {"preset", "overrides", "run_dir", "threads", "outputs"}


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


def parameter_names(name: str) -> list[str]:
    return [ast.parse(line).body[0].targets[0].id for line in parameters_cell(name)[1].splitlines()]


def flat(tree: dict, prefix: str = "") -> dict:
    """An experiment's dict by dotted key (``pretrain.contrast.method``); mappings of names (``variants``,
    ``data.task_strides``) and the method's ``pretrain.options`` are single values."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("variants", "task_strides", "options"):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def leaf(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def changed_keys(before: dict, after: dict) -> set[str]:
    a, b = flat(before), flat(after)
    return {k for k in set(a) | set(b) if k != "overrides" and a.get(k, KeyError) != b.get(k, KeyError)}


def test_the_experiment_notebooks_take_a_preset_and_overrides_that_reach_load():
    """03 and 04 take the experiment as a preset plus dotted overrides (what ``cagelib.lab.reproduce`` gives each
    point of a grid), and hand exactly those to ``load``; their default is the CPU-sized ``notebook`` preset."""
    overrides = ["pretrain.contrast.method=geclr", "pretrain.epochs=4", "data.window=48", 'protocols=["linear", "knn"]',
                 "folds=5", "finetune=paper:finetune", "seeds=[3]"]
    for name in EXPERIMENT_NOTEBOOKS:
        named = {"variant"} if name == "03_pretrain" else set()  # 03: the name a grid lists its run under
        assert set(parameter_names(name)) == EXPERIMENT_PARAMETERS | named, name
        defaults: dict = {}
        exec(parameters_cell(name)[1], {}, defaults)
        assert (defaults["preset"], defaults["overrides"]) == ("notebook", []), name
        assert notebook_until_load(name, {})["experiment"] == load("notebook"), name
        exp = notebook_until_load(name, {"overrides": overrides})["experiment"]
        assert exp == load("notebook", overrides, source=name) and exp.overrides == tuple(overrides), name
        assert (exp.pretrain.contrast.method, exp.pretrain.epochs, exp.data.window, exp.protocols, exp.folds,
                exp.seeds) == ("geclr", 4, 48, ("linear", "knn"), 5, (3,)), name
        assert exp.finetune == EvalConfig.paper("finetune"), name
        assert notebook_until_load(name, {"preset": "demo"})["experiment"] == load("demo"), name
    # the notebook preset is CPU-sized (seconds): the small encoder, no fast step, 2 epochs on 128 short windows
    exp = load("notebook")
    assert exp.pretrain.model == AGCNConfig.small() and exp.pretrain.fast is None
    assert (exp.pretrain.epochs, exp.data.window, exp.data.max_pretrain_windows, exp.seeds) == (2, 32, 128, (0,))


def test_every_setting_of_the_tree_can_be_overridden_alone():
    """Every setting (``settings_help``, what ``--help`` lists) is a key a notebook's ``overrides`` may set: given
    its own value, the experiment is unchanged (the override changes nothing else, e.g. the preset's small
    encoder or the supervised reference's recipe)."""
    base = load("notebook").to_dict()
    keys = [key for key, _, _ in settings_help() if key != "overrides"]  # overrides: the record of the others
    assert len(keys) > 100 and {"pretrain.contrast.queue_size", "finetune.lr", "data.window", "seeds"} <= set(keys)
    wrong = {}
    for key in keys:
        try:
            after = load("notebook", {key: leaf(base, key)}, source="test").to_dict()
        except ParameterError as err:
            wrong[key] = str(err)
            continue
        if changed_keys(base, after):
            wrong[key] = sorted(changed_keys(base, after))
    assert not wrong, f"overrides of the notebook preset's own values that change the experiment: {wrong}"


def as_json(config) -> dict:
    return json.loads(json.dumps(asdict(config)))  # tuples as lists, as in Experiment.to_dict




@pytest.mark.parametrize("override, expected, follows", [
    ("data.window=48", {"data.window": 48}, ()),
    ('data.tasks=["emotion4", "style15"]', {"data.tasks": ["emotion4", "style15"]}, ()),
    ('data.representation="first_frame"', {"data.representation": "first_frame"}, ("pretrain.representation",)),
    ("pretrain.epochs=4", {"pretrain.epochs": 4, "pretrain.milestones": [2, 3]}, ()),  # the preset's 0.5, 0.8
    ("pretrain.lr=0.05", {"pretrain.lr": 0.05}, ()),
    ('pretrain.optimizer="adamw"', {"pretrain.optimizer": "adamw"}, ()),
    ('pretrain.device="cpu"', {"pretrain.device": "cpu"}, ()),
    ("pretrain.contrast.method=geclr", {"pretrain.contrast.method": "geclr"},
     ("pretrain.contrast", "pretrain.options")),  # the method's streams, bank and options go with it
    ("pretrain.contrast.queue_size=1024", {"pretrain.contrast.queue_size": 1024}, ()),
    ("pretrain.model.dropout=0.1", {"pretrain.model.dropout": 0.1}, ()),  # still the preset's small encoder
    ("pretrain.model=paper", {"pretrain.model": as_json(AGCNConfig())}, ()),
    ("pretrain.fast={}", {"pretrain.fast": as_json(FastConfig())}, ()),
    ("pretrain.health=none", {"pretrain.health": None}, ()),
    ('protocols=["linear", "knn"]', {"protocols": ["linear", "knn"]}, ()),
    ("folds=5", {"folds": 5}, ()),
    ("label_fractions=[0.1, 0.5]", {"label_fractions": [0.1, 0.5]}, ()),
    ('stream="cartesian"', {"stream": "cartesian"}, ()),
    ("seeds=[3, 4]", {"seeds": [3, 4]}, ()),
    ("linear.lr=10.0", {"linear.lr": 10.0}, ()),
    ("finetune.epochs=20", {"finetune.epochs": 20}, ()),  # still the short recipe's Adam: only the epochs
    ("supervised.epochs=20", {"supervised.epochs": 20}, ()),  # still the supervised reference's recipe
    ('supervised_tasks=["emotion4"]', {"supervised_tasks": ["emotion4"]}, ()),
    ('out="elsewhere"', {"out": "elsewhere"}, ()),
])
def test_an_override_changes_its_setting_and_nothing_else(override, expected, follows):
    base = load("notebook").to_dict()
    after = load("notebook", [override], source="test").to_dict()
    for key, value in expected.items():
        assert leaf(after, key) == value, key
    allowed = (*expected, *follows)
    stray = {k for k in changed_keys(base, after) if not any(k == a or k.startswith(a + ".") for a in allowed)}
    assert not stray, f"{override} also changed {sorted(stray)}"
    assert changed_keys(base, after)  # and it did change the tree


def test_render_frame_draws_each_ambiguity_view_at_that_frame():
    x = walking(40)
    sequences, titles = ambiguity_views(x, seed=3)
    for t in (0, 7, 25):
        figure = render_frame(sequences, titles, t, camera="front", shared_limits=False)
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
    player = ambiguity_browser(samples, ["a", "b"], seed=0, camera="front")
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
    """At the CPU default (3 epochs) the paper's SGD lr 0.001 calls every window the majority class (docs/decisions.md,
    "Finetune below the paper's epochs"): the notebook preset's finetune and semi-supervised rows use Adam lr 3e-3,
    batch 16, constant lr, otherwise the paper's recipe; ``finetune=paper:finetune`` gives the paper's recipe."""
    paper = EvalConfig.paper("finetune")
    short_exp = notebook_until_load("04_evaluate", {})["experiment"]
    paper_exp = notebook_until_load("04_evaluate", {"overrides": ["finetune=paper:finetune"]})["experiment"]
    for protocol in ("finetune", "semi-supervised"):
        assert protocol in short_exp.protocols
        short = short_exp.eval_config(protocol, 0)
        assert short.protocol == protocol
        assert (short.optimizer, short.lr, short.batch_size, tuple(short.milestones), short.epochs) == (
            "adam", 3e-3, 16, (), 3)
        assert short.epochs < paper.epochs
        same = dict(optimizer=short.optimizer, lr=short.lr, batch_size=short.batch_size, milestones=short.milestones,
                    epochs=short.epochs)
        assert short == replace(paper, protocol=protocol, **same)  # e.g. the paper's weight decay 1e-4
        full = paper_exp.eval_config(protocol, 0)
        assert (full.optimizer, full.lr, full.batch_size, tuple(full.milestones), full.epochs, full.weight_decay) == (
            "sgd", 0.001, 32, (10,), 20, 1e-4)
        assert full == replace(paper, protocol=protocol)
    linear = short_exp.eval_config("linear", 0)
    assert (linear.optimizer, linear.lr, tuple(linear.milestones), linear.epochs) == ("sgd", 30.0, (50, 70), 100)
    assert paper_exp.linear == short_exp.linear  # the probe as before
