"""Animation widget: several skeletons side by side, played frame by frame in a notebook.

``render_frame`` is the pure drawing function (sequences + frame index -> Figure); ``SkeletonRenderer``
keeps one figure and moves its artists, which is what the player uses to stay fast. ``SkeletonPlayer``
wraps it in ipywidgets (play/pause, frame slider, speed, optional sample picker) and shows each frame
as PNG bytes in a ``widgets.Image``: no interactive matplotlib backend needed, and it works headless.
``ambiguity_player`` is the paper's Figure 3 (one gait under the contrastive views and the ambiguity
transform) with the transform parameters as widgets.

Axis limits are computed once over all frames (no jumping camera). By default the camera follows the
walker (``follow_root=True`` removes the root's horizontal track; set False to see the walking path,
at the price of a small skeleton for long clips). Sequences of different lengths:
a sequence's valid length is its last non-zero frame (E-Gait zero padding); past it the panel holds
its last frame and says "ended" (``ended="hold"``) or is hidden (``ended="hide"``).
"""
from __future__ import annotations

import io
from typing import Callable, Sequence

import numpy as np
import torch

from ..methods.augment import SPEED_DOWN_RATE, SPEED_UP_RATE, Shear, SpeedDown, SpeedUp, make_generator
from ..methods.body_augment import DEFAULT_VIEWS, BodyFrame, contrastive_views
from ..representation import DEFAULT_REPRESENTATION
from .skeleton_plots import (CAMERAS, SIDE_COLORS, bone_segments, draw_skeleton, follow_root_track, joint_points,
                             new_axes, sequence_length, set_limits, skeleton_limits)


ENDED_MODES = ("hold", "hide")
GRID_STEP = 0.5  # metres between the ticks (and grid lines) of a 3-D panel
SIDE_KEY = (("left", "performer's left"), ("right", "performer's right"), ("centre", "centre (spine, head)"))
SampleFn = Callable[[int], tuple[Sequence[np.ndarray], Sequence[str]]]


def _as_sequences(sequences) -> list[np.ndarray]:
    single = hasattr(sequences, "shape") and len(sequences.shape) == 3  # one (T, 16, 3) array or tensor
    sequences = [np.asarray(s, dtype=np.float64) for s in ([sequences] if single else sequences)]
    for i, s in enumerate(sequences):
        if s.ndim != 3 or s.shape[1:] != (16, 3):
            raise ValueError(f"sequence {i} must have shape (T, 16, 3), got {s.shape}")
    if not sequences:
        raise ValueError("no sequences to draw")
    return sequences


def _set_line_data(line, coords: tuple[np.ndarray, ...]) -> None:
    if len(coords) == 3:
        line.set_data_3d(*coords)  # a 3-D line (mpl_toolkits Line3D)
    else:
        line.set_data(*coords)


class SkeletonRenderer:
    """One matplotlib Figure with a panel per sequence; ``update(t)`` moves the artists to frame ``t``."""

    def __init__(self, sequences, titles: Sequence[str] | None = None, camera: str = "3d",
                 shared_limits: bool = True, follow_root: bool = True, ended: str = "hold",
                 panel_size: float = 3.8, dpi: int = 80, elev: float = 15.0, azim: float = -70.0):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter, MultipleLocator

        if camera not in CAMERAS or ended not in ENDED_MODES:
            raise ValueError(f"camera must be one of {CAMERAS} and ended one of {ENDED_MODES}, "
                             f"got {camera!r}, {ended!r}")
        self.sequences = _as_sequences(sequences)
        if follow_root:
            self.sequences = [follow_root_track(s) for s in self.sequences]
        self.titles = list(titles) if titles is not None else [f"sequence {i}" for i in range(len(self.sequences))]
        if len(self.titles) != len(self.sequences):
            raise ValueError(f"{len(self.titles)} titles for {len(self.sequences)} sequences")
        self.camera, self.ended, self.dpi = camera, ended, dpi
        self.lengths = [max(sequence_length(s), 1) for s in self.sequences]
        self.num_frames = max(self.lengths)
        # Limits once, over every valid frame: the camera never moves during playback.
        self.limits = ([skeleton_limits(self.sequences)] * len(self.sequences) if shared_limits
                       else [skeleton_limits([s]) for s in self.sequences])
        # At most three panels a row: six panels in one row shrink to thumbnails with unreadable titles.
        cols = min(len(self.sequences), 3)
        rows = -(-len(self.sequences) // cols)
        self.figure = Figure(figsize=(panel_size * cols, (panel_size + 0.5) * rows + 0.6), dpi=dpi)
        FigureCanvasAgg(self.figure)
        self.panels = []
        for i, (seq, lim) in enumerate(zip(self.sequences, self.limits)):
            ax = new_axes(camera, self.figure, (rows, cols, i + 1), elev=elev, azim=azim)
            artists = draw_skeleton(ax, seq[0], camera)
            set_limits(ax, lim, camera)
            relative = " (root-rel.)" if follow_root else ""
            if camera == "3d":  # ticks every GRID_STEP m, labelled in metres; the plotted y axis is -z (plot_axes)
                for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
                    axis.set_major_locator(MultipleLocator(GRID_STEP))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1f}"))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{-v + 0.0:.1f}"))  # z = -(plotted y)
                ax.zaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1f}"))
                ax.tick_params(labelsize=7, pad=0)
                ax.set_xlabel(f"x{relative} (m)", fontsize=8, labelpad=-4)
                ax.set_ylabel(f"z{relative} (m)", fontsize=8, labelpad=-4)
                ax.set_zlabel("y, up (m)", fontsize=8, labelpad=0)
                ax.set_box_aspect((1, 1, 1), zoom=0.95)
            else:
                h, v = (("x" if camera == "front" else "z"), "y")
                ax.set_xlabel(f"{h}{' (root-relative)' if follow_root else ''} (m)", fontsize=9)
                ax.set_ylabel(f"{v}, up (m)", fontsize=9)
                ax.tick_params(labelsize=8)
            self.panels.append(artists)
        # the key of the bone colours: which side is the performer's own left (not the viewer's)
        handles = [Line2D([], [], color=SIDE_COLORS[side], linewidth=2.5, label=label) for side, label in SIDE_KEY]
        note = (f"ticks every {GRID_STEP:g} m" if camera == "3d" else "metres") + (
            "; root-relative: the camera follows the walker" if follow_root else "")
        width, height = self.figure.get_figwidth(), self.figure.get_figheight()  # inches
        ncol = 3 if width >= 6.5 else 1  # a single narrow panel stacks the key
        key = 0.25 + 0.22 * (3 // ncol)  # inches of the key (its title and rows)
        self.figure.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False,
                           bbox_to_anchor=(0.5, 0.04 / height), title=note, title_fontsize=8)
        if camera == "3d":
            self.figure.subplots_adjust(left=0.02, right=0.98, bottom=(key + 0.15) / height, top=0.9,
                                        wspace=0.15, hspace=0.3)
        else:  # room for the x label and its tick labels above the key
            self.figure.subplots_adjust(left=0.1 if cols > 1 else 0.2, right=0.97, bottom=(key + 0.6) / height,
                                        top=0.88, wspace=0.35, hspace=0.45)
        self.frame_index = -1
        self.update(0)

    def update(self, frame_index: int):
        """Move every panel to ``frame_index`` (clamped to the longest sequence); returns the Figure."""
        t = int(np.clip(frame_index, 0, self.num_frames - 1))
        for seq, length, title, artists in zip(self.sequences, self.lengths, self.titles, self.panels):
            ended = t >= length
            frame = seq[min(t, length - 1)]  # (16, 3)
            for line, seg in zip(artists["bones"], bone_segments(frame, self.camera)):
                _set_line_data(line, seg)
            _set_line_data(artists["joints"], joint_points(frame, self.camera))
            visible = not (ended and self.ended == "hide")
            for artist in artists["bones"] + [artists["joints"]]:
                artist.set_visible(visible)
                artist.set_alpha(0.35 if ended else 1.0)
            status = "ended" if ended else f"{t + 1}/{length}"
            artists["axes"].set_title(f"{title}\nframe {status}" if not ended else f"{title}\n{status}", fontsize=12)
        self.frame_index = t
        return self.figure

    def png(self, frame_index: int) -> bytes:
        """PNG bytes of ``frame_index``."""
        self.update(frame_index)
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()


def render_frame(sequences, titles: Sequence[str] | None = None, frame_index: int = 0, title: str | None = None,
                 **kwargs):
    """Several skeletons ``[(T_i, 16, 3)]`` side by side at ``frame_index``: a new matplotlib Figure, with
    ``title`` above the panels' own titles (room is made for it). ``kwargs`` go to :class:`SkeletonRenderer`
    (camera, shared_limits, follow_root, ended, ...)."""
    figure = SkeletonRenderer(sequences, titles, **kwargs).update(frame_index)
    if title:
        height = figure.get_figheight()  # inches
        figure.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
        figure.subplots_adjust(top=figure.subplotpars.top - 0.45 / height)
    return figure


class SkeletonPlayer:
    """ipywidgets player: play/pause, frame slider, playback speed, optional sample picker. The slider and
    the panel titles both count frames from 1 (slider at 1 = "frame 1/N").

    ``sample_fn(index) -> (sequences, titles)`` with ``num_samples`` (or ``sample_names``) adds a picker;
    then ``sequences`` may be None (sample 0 is shown). Display ``player.widget`` (or the player itself).
    Frames are rendered in the kernel, so playback runs at the rendering speed when that is slower
    than ``fps``; rendered frames are cached per sample.
    """

    SPEEDS = (0.25, 0.5, 1.0, 2.0)

    def __init__(self, sequences=None, titles: Sequence[str] | None = None, fps: float = 30.0,
                 sample_fn: SampleFn | None = None, num_samples: int | None = None,
                 sample_names: Sequence[str] | None = None, extra_controls: Sequence = (),
                 cache: bool = True, **render_kwargs):
        import ipywidgets as widgets

        if sequences is None:
            if sample_fn is None:
                raise ValueError("give sequences, or a sample_fn to pick them")
            sequences, titles = sample_fn(0)
        self.fps, self.cache, self.render_kwargs, self.sample_fn = fps, cache, render_kwargs, sample_fn
        self._pngs: dict[int, bytes] = {}
        self.renderer = SkeletonRenderer(sequences, titles, **render_kwargs)
        # The slider counts frames from 1, as the panel titles do ("frame 1/289"): slider value k draws frame
        # index k - 1 (``frame_index``); frame_png / show / SkeletonRenderer take 0-based indices.
        last = self.renderer.num_frames
        self.play = widgets.Play(value=1, min=1, max=last, step=1, interval=self._interval(1.0),
                                 description="play")
        self.frame_slider = widgets.IntSlider(value=1, min=1, max=last, description="frame",
                                              continuous_update=True)
        widgets.link((self.play, "value"), (self.frame_slider, "value"))  # kernel-side: also works headless
        self.speed = widgets.Dropdown(options=[(f"{s:g}x", s) for s in self.SPEEDS], value=1.0,
                                      description="speed", layout=widgets.Layout(width="170px"),
                                      style={"description_width": "initial"})
        self.speed.observe(lambda change: setattr(self.play, "interval", self._interval(change["new"])), "value")
        # At its own pixel size: a VBox stretches its children to the widest one (the controls), which
        # blew a 240 px single panel up to the notebook's width, blurred and taller than the screen.
        self.image = widgets.Image(value=self.frame_png(0), format="png",
                                   layout=widgets.Layout(align_self="flex-start", max_width="100%", height="auto"))
        self.frame_slider.observe(lambda change: self.show(change["new"] - 1), "value")
        controls = [self.play, self.frame_slider, self.speed]
        self.sample_picker = None
        if sample_fn is not None:
            if sample_names is not None:
                self.sample_picker = widgets.Dropdown(options=[(n, i) for i, n in enumerate(sample_names)],
                                                      value=0, description="sample")
            elif num_samples is not None:
                self.sample_picker = widgets.IntSlider(value=0, min=0, max=num_samples - 1, description="sample")
            else:
                raise ValueError("a sample_fn needs num_samples or sample_names")
            self.sample_picker.observe(lambda change: self.load(*sample_fn(change["new"])), "value")
            controls.insert(0, self.sample_picker)
        rows = [widgets.HBox(controls)] + ([widgets.HBox(list(extra_controls))] if extra_controls else [])
        self.widget = widgets.VBox(rows + [self.image])

    def _interval(self, speed: float) -> int:
        return max(1, int(round(1000.0 / (self.fps * speed))))

    def frame_png(self, frame_index: int) -> bytes:
        """PNG of a frame of the current sequences (cached when ``cache``)."""
        if frame_index not in self._pngs:
            png = self.renderer.png(frame_index)
            if not self.cache:
                return png
            self._pngs[frame_index] = png
        return self._pngs[frame_index]

    @property
    def frame_index(self) -> int:
        """The 0-based index of the frame shown: the slider's value (1-based, as the titles) minus one."""
        return self.frame_slider.value - 1

    def show(self, frame_index: int) -> None:
        """Draw ``frame_index`` (0-based) into the image (the slider calls this with its value - 1)."""
        self.image.value = self.frame_png(frame_index)

    def load(self, sequences, titles: Sequence[str] | None = None) -> None:
        """Replace the sequences (new renderer, new limits), keeping the frame index where possible."""
        self.renderer = SkeletonRenderer(sequences, titles, **self.render_kwargs)
        self._pngs.clear()
        last = self.renderer.num_frames  # the slider is 1-based
        frame = min(self.frame_slider.value, last)
        for w in (self.play, self.frame_slider):
            w.max = last
        self.frame_slider.value = frame
        self.show(frame - 1)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def ambiguity_views(x: np.ndarray, seed: int = 0, speed_up_rate: int = SPEED_UP_RATE,
                    speed_down_rate: float = SPEED_DOWN_RATE,
                    shear_amplitude: float = 0.5, shear_joint_fraction: float = 0.5, views: str = DEFAULT_VIEWS,
                    representation: str = DEFAULT_REPRESENTATION) -> tuple[list[np.ndarray], list[str]]:
    """Paper Figure 3: one gait ``(T, 16, 3)`` in ``representation`` as the original, two contrastive views,
    speed-up, speed-down and shear, all from one seeded generator. ``views`` (``body_augment.VIEWS``) is the
    view transform pretraining uses: ``"body"`` (the default: crop, then bounded shear, rotation, scaling and
    jitter in the body frame), ``"crop"``, or ``"paper"`` (Crop + Joint Jittering, Eq. 1, literal); the shear
    ambiguity acts in the body frame unless ``views == "paper"``, as in pretraining."""
    batch = torch.as_tensor(np.asarray(x, dtype=np.float32))[None]  # (1, T, 16, 3)
    generator = make_generator(seed)
    view = contrastive_views(views, representation)
    shear = Shear(shear_amplitude, shear_joint_fraction)
    transforms = [(f"view 1 ({views} views)", view), (f"view 2 ({views} views)", view),
                  (f"speed up r={speed_up_rate}", SpeedUp(speed_up_rate)),
                  (f"speed down r={speed_down_rate:g}", SpeedDown(speed_down_rate)),
                  (f"shear a={shear_amplitude:g}", shear if views == "paper" else BodyFrame(shear, representation))]
    sequences, titles = [np.asarray(x, dtype=np.float64)], ["original"]
    for title, transform in transforms:
        sequences.append(transform(batch, generator)[0].double().numpy())  # (T, 16, 3)
        titles.append(title)
    return sequences, titles


def ambiguity_player(x: np.ndarray, seed: int = 0, speed_up_rate: int = SPEED_UP_RATE,
                     speed_down_rate: float = SPEED_DOWN_RATE,
                     shear_amplitude: float = 0.5, views: str = DEFAULT_VIEWS, fps: float = 30.0,
                     **render_kwargs) -> SkeletonPlayer:
    """Figure 3 as a player; seed, speed-up rate, speed-down rate and shear amplitude are widgets.
    Panels have their own limits (a jittered view can be far larger than the original)."""
    import ipywidgets as widgets

    controls = {
        "seed": widgets.IntText(value=seed, description="seed", layout=widgets.Layout(width="150px")),
        "speed_up_rate": widgets.Dropdown(options=[2, 4, 8], value=speed_up_rate, description="speed up r"),
        "speed_down_rate": widgets.FloatSlider(value=speed_down_rate, min=0.05, max=1.0, step=0.05,
                                               description="speed down r"),
        "shear_amplitude": widgets.FloatSlider(value=shear_amplitude, min=0.0, max=1.0, step=0.05,
                                               description="shear"),
    }

    def panels():
        return ambiguity_views(x, views=views, **{name: w.value for name, w in controls.items()})

    render_kwargs.setdefault("shared_limits", False)
    player = SkeletonPlayer(*panels(), fps=fps, extra_controls=list(controls.values()), **render_kwargs)
    for w in controls.values():
        w.observe(lambda change: player.load(*panels()), "value")
    return player
