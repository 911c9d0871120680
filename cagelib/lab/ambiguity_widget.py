"""The paper's Figure 3 as a notebook widget: pick a gait, see it beside its two augmented views and its
ambiguity samples (speed-up, speed-down, shear), all playing in sync; the views are those pretraining uses
(``views``: body by default; crop; the paper's Crop + Joint Jittering).

``ambiguity_browser(samples, names)`` is ``cagelib.lab.player.SkeletonPlayer`` (play/pause, frame slider,
speed) with a sample picker and the transform parameters (seed, speed-up rate, speed-down rate, shear
amplitude, shear joint fraction) as widgets; any change re-draws the six panels from
``cagelib.lab.player.ambiguity_views`` (one seeded generator: same parameters, same pictures).
``emotion_samples`` gives one preprocessed window per emotion-task clip to pick from.
Frames are rendered in the kernel (``SkeletonRenderer``): the widget works headless, and tests call
its renderer directly.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.tasks import DataConfig, emotion_data
from ..methods.augment import SPEED_DOWN_RATE, SPEED_UP_RATE
from ..methods.body_augment import DEFAULT_VIEWS
from ..methods.body_augment import VIEWS as VIEW_TRANSFORMS
from .player import SkeletonPlayer, ambiguity_views

PARAMETERS = ("views", "seed", "speed_up_rate", "speed_down_rate", "shear_amplitude", "shear_joint_fraction")


def emotion_samples(window: int, per_class: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """One window (the first, preprocessed as for training) of each emotion-task clip, named
    ``"<emotion>: <clip id>"``, sorted by emotion, walks first (four short ``neutral`` clips of 20-31
    frames come last); ``per_class`` keeps the first few clips of each class."""
    data = emotion_data(DataConfig(window=window, stride=window, max_pretrain_windows=1))
    first = np.unique(data.groups, return_index=True)[1]  # first window of each clip
    valid = np.any(data.x.reshape(len(data.x), window, -1) != 0, axis=2).sum(axis=1)  # (n,) frames before padding
    clip = lambda i: str(data.clip_names[data.groups[i]])  # noqa: E731
    order = sorted(first, key=lambda i: (data.y[i], valid[i] < window, not clip(i).startswith("walk_"), clip(i)))
    if per_class is not None:
        order = [i for c in range(len(data.label_names)) for i in [j for j in order if data.y[j] == c][:per_class]]
    names = [f"{data.label_names[data.y[i]]}: {data.clip_names[data.groups[i]]}" for i in order]
    return [data.x[i] for i in order], names


def ambiguity_browser(samples: Sequence[np.ndarray], names: Sequence[str] | None = None, seed: int = 0,
                      speed_up_rate: int = SPEED_UP_RATE, speed_down_rate: float = SPEED_DOWN_RATE, shear_amplitude: float = 0.5,
                      shear_joint_fraction: float = 0.5, views: str = DEFAULT_VIEWS, fps: float = 30.0,
                      **render_kwargs) -> SkeletonPlayer:
    """Figure 3 player over ``samples`` (each ``(T, 16, 3)``, root-relative windows as pretraining sees them),
    with the contrastive ``views`` pretraining uses (a widget: body / crop / paper). ``player.parameters`` holds the transform
    widgets by name; ``player.sample_picker`` picks the gait. Panels keep their own axis limits
    (a jittered view can be much larger than the gait)."""
    import ipywidgets as widgets

    if len(samples) == 0:
        raise ValueError("ambiguity_browser: no samples")
    names = list(names) if names is not None else [f"sample {i}" for i in range(len(samples))]
    if len(names) != len(samples):
        raise ValueError(f"ambiguity_browser: {len(names)} names for {len(samples)} samples")
    short = widgets.Layout(width="300px")
    label = {"description_width": "initial"}  # the whole label ("speed down r"), never cut to "speed do..."
    parameters = {
        "views": widgets.Dropdown(options=VIEW_TRANSFORMS, value=views, description="views",
                                  layout=widgets.Layout(width="170px"), style=label),
        "seed": widgets.IntText(value=seed, description="seed", layout=widgets.Layout(width="150px"), style=label),
        "speed_up_rate": widgets.Dropdown(options=[2, 4, 8], value=speed_up_rate, description="speed up r",
                                          layout=widgets.Layout(width="190px"), style=label),
        "speed_down_rate": widgets.FloatSlider(value=speed_down_rate, min=0.05, max=1.0, step=0.05,
                                               description="speed down r", layout=short, style=label),
        "shear_amplitude": widgets.FloatSlider(value=shear_amplitude, min=0.0, max=1.0, step=0.05,
                                               description="shear", layout=short, style=label),
        "shear_joint_fraction": widgets.FloatSlider(value=shear_joint_fraction, min=0.0, max=1.0, step=1 / 16,
                                                    description="shear joints", layout=short, style=label),
    }

    def sample_fn(index: int):
        return ambiguity_views(samples[index], **{k: w.value for k, w in parameters.items()})

    render_kwargs.setdefault("shared_limits", False)
    player = SkeletonPlayer(fps=fps, sample_fn=sample_fn, sample_names=names,
                            extra_controls=list(parameters.values()), **render_kwargs)
    player.parameters = parameters
    for w in parameters.values():
        w.observe(lambda change: player.load(*sample_fn(player.sample_picker.value)), "value")
    return player
