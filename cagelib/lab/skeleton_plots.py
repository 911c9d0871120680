"""Skeleton drawings for notebooks and the player: poses, frame strips, an interactive 3-D view.

matplotlib and plotly are imported inside the functions that use them (lazily: the demo imports this
module on a machine without a plotting stack and reports the figure as skipped). Figures are ``matplotlib.figure.Figure`` objects built without pyplot (no global
figure registry, nothing leaks in loops); Jupyter displays them when they are a cell's value.

Skeleton coordinates are ``(T, 16, 3)`` (or one frame ``(16, 3)``), ``x, y, z`` with y up
(``cagelib.skeleton.UP_AXIS``). In matplotlib's 3-D axes, whose vertical axis is the third one, a point
is drawn at ``plot_axes(p) = (x, -z, y)``: a rotation about x, so the skeleton stands upright and keeps
its handedness. Bones are coloured by side: left (joints 4-6, 10-12, E-Gait README convention),
right, and centre.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..skeleton import EDGES, JOINT_NAMES, LEFT_RIGHT_PAIRS, UP_AXIS

LEFT_JOINTS = frozenset(left for left, _ in LEFT_RIGHT_PAIRS)
RIGHT_JOINTS = frozenset(right for _, right in LEFT_RIGHT_PAIRS)
SIDE_COLORS = {"left": "#1f77b4", "right": "#d62728", "centre": "#404040"}  # matplotlib and plotly
CAMERAS = ("3d", "front", "side")  # the camera direction of a drawing (not the contrastive views)
# 2-D cameras: (horizontal data axis, vertical data axis). Front looks along z, side along x.
_PLANES = {"front": (0, UP_AXIS), "side": (2, UP_AXIS)}


def joint_side(joint: int) -> str:
    """``"left"``, ``"right"`` or ``"centre"`` for a joint index."""
    return "left" if joint in LEFT_JOINTS else "right" if joint in RIGHT_JOINTS else "centre"


def bone_side(edge: tuple[int, int]) -> str:
    """Side of a bone = side of its child joint (so neck-left shoulder is a left bone)."""
    return joint_side(edge[1])


def plot_axes(points: np.ndarray) -> np.ndarray:
    """Data ``(..., 3)`` (x, y up, z) -> matplotlib 3-D axes ``(..., 3)`` = (x, -z, y)."""
    points = np.asarray(points)
    return np.stack([points[..., 0], -points[..., 2], points[..., UP_AXIS]], axis=-1)


def sequence_length(x: np.ndarray) -> int:
    """Valid frames of a zero-padded ``(T, V, 3)`` sequence: index of the last non-zero frame + 1."""
    nonzero = np.flatnonzero(np.any(np.asarray(x).reshape(len(x), -1) != 0, axis=1))
    return int(nonzero[-1]) + 1 if len(nonzero) else 0


def skeleton_limits(sequences: Sequence[np.ndarray], margin: float = 0.05) -> np.ndarray:
    """Axis limits ``(3, 2)`` in data coordinates covering every valid frame of every sequence.

    The box is a cube (equal range on each axis, so bones keep their proportions), computed once so an
    animation does not jump. Padding frames (trailing zeros) are ignored.
    """
    points = [np.asarray(s, dtype=np.float64)[: max(sequence_length(s), 1)].reshape(-1, 3) for s in sequences]
    points = np.concatenate(points)
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6) * (1 + margin)
    return np.stack([centre - half, centre + half], axis=1)


def new_axes(camera: str = "3d", fig=None, position: Any = 111, elev: float = 15.0, azim: float = -70.0):
    """An axes for ``camera`` on ``fig`` (a new pyplot-free Figure when None)."""
    from matplotlib.figure import Figure

    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
    fig = fig if fig is not None else Figure(figsize=(4, 4))
    pos = position if isinstance(position, tuple) else (position,)
    if camera == "3d":
        ax = fig.add_subplot(*pos, projection="3d")
        ax.view_init(elev=elev, azim=azim)
    else:
        ax = fig.add_subplot(*pos)
        ax.set_aspect("equal")
    return ax


def set_limits(ax, limits: np.ndarray, camera: str = "3d") -> None:
    """Apply data-coordinate limits ``(3, 2)`` to an axes drawn with :func:`draw_skeleton`."""
    limits = np.asarray(limits)
    if camera == "3d":
        ax.set_xlim(*limits[0])
        ax.set_ylim(-limits[2, 1], -limits[2, 0])  # plotted y = -z
        ax.set_zlim(*limits[UP_AXIS])
        ax.set_box_aspect((1, 1, 1))
    else:
        h, v = _PLANES[camera]
        ax.set_xlim(*limits[h])
        ax.set_ylim(*limits[v])


def bone_segments(frame: np.ndarray, camera: str = "3d") -> list[tuple[np.ndarray, ...]]:
    """Per bone in ``EDGES``, the plotted coordinates of its two ends: ``(xs, ys)`` or ``(xs, ys, zs)``."""
    frame = np.asarray(frame, dtype=np.float64)
    if camera == "3d":
        p = plot_axes(frame)  # (V, 3)
        return [tuple(p[[a, b], i] for i in range(3)) for a, b in EDGES]
    h, v = _PLANES[camera]
    return [(frame[[a, b], h], frame[[a, b], v]) for a, b in EDGES]


def joint_points(frame: np.ndarray, camera: str = "3d") -> tuple[np.ndarray, ...]:
    """Plotted coordinates of all joints, ``(xs, ys[, zs])``."""
    frame = np.asarray(frame, dtype=np.float64)
    if camera == "3d":
        p = plot_axes(frame)
        return p[:, 0], p[:, 1], p[:, 2]
    h, v = _PLANES[camera]
    return frame[:, h], frame[:, v]


def draw_skeleton(ax, frame: np.ndarray, camera: str | None = None, linewidth: float = 2.5,
                  joint_size: float = 3.0, colors: Mapping[str, str] | None = None, alpha: float = 1.0):
    """Draw one pose ``(16, 3)``; returns ``{"axes", "bones": [Line2D per edge], "joints": Line2D}``.

    ``ax=None`` creates a Figure and axes; ``camera`` defaults to the axes' kind ("3d" or "front").
    Each bone line carries ``gid = "bone-<parent>-<child>"`` so it can be found and updated.
    """
    frame = np.asarray(frame)
    if frame.shape != (len(JOINT_NAMES), 3):
        raise ValueError(f"frame must have shape ({len(JOINT_NAMES)}, 3), got {frame.shape}")
    if ax is None:
        ax = new_axes(camera or "3d")
    camera = camera or ("3d" if getattr(ax, "name", "") == "3d" else "front")
    colors = {**SIDE_COLORS, **(colors or {})}
    bones = []
    for edge, seg in zip(EDGES, bone_segments(frame, camera)):
        (line,) = ax.plot(*seg, color=colors[bone_side(edge)], linewidth=linewidth, alpha=alpha,
                          solid_capstyle="round")
        line.set_gid(f"bone-{edge[0]}-{edge[1]}")
        bones.append(line)
    (joints,) = ax.plot(*joint_points(frame, camera), linestyle="none", marker="o", markersize=joint_size,
                        color=colors["centre"], alpha=alpha)
    joints.set_gid("joints")
    return {"axes": ax, "bones": bones, "joints": joints}


def follow_root_track(x: np.ndarray) -> np.ndarray:
    """Subtract the root's horizontal position per frame (the camera follows the walker); padding stays zero."""
    x = np.array(x, dtype=np.float64)
    length = sequence_length(x)
    horizontal = [a for a in range(3) if a != UP_AXIS]
    x[:length, :, horizontal] -= x[:length, :1, horizontal]
    return x


def skeleton_figure(x: np.ndarray, frames: Sequence[int] | None = None, num_frames: int = 6,
                    camera: str = "side", title: str | None = None, panel_size: float = 2.2,
                    follow_root: bool = True):
    """A strip of poses of one sequence ``(T, 16, 3)`` at ``frames`` (default: ``num_frames`` evenly
    spaced valid frames), all with the same limits and drawn from ``camera`` (one of ``CAMERAS``);
    ``follow_root`` centres each pose horizontally."""
    from matplotlib.figure import Figure

    x = follow_root_track(x) if follow_root else np.asarray(x)
    length = max(sequence_length(x), 1)
    if frames is None:
        frames = np.unique(np.linspace(0, length - 1, num_frames).round().astype(int)).tolist()
    fig = Figure(figsize=(panel_size * len(frames), panel_size * 1.2))
    limits = skeleton_limits([x])
    for i, t in enumerate(frames):
        ax = new_axes(camera, fig, (1, len(frames), i + 1))
        draw_skeleton(ax, x[t], camera)
        set_limits(ax, limits, camera)
        ax.set_title(f"frame {t}", fontsize=9)
        if camera != "3d" and i > 0:
            ax.set_axis_off()
        elif camera != "3d":  # the first panel keeps a height scale in metres (the others share its limits)
            for side in ("top", "right", "bottom"):
                ax.spines[side].set_visible(False)
            ax.set_xticks([])
            ax.set_ylabel("y, up (m)", fontsize=8)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return fig



def _plotly_traces(frame: np.ndarray) -> list:
    import plotly.graph_objects as go

    traces = []
    for side in ("left", "right", "centre"):
        xs, ys, zs = [], [], []
        for a, b in (e for e in EDGES if bone_side(e) == side):
            for coords, (p, q) in zip((xs, ys, zs), ((frame[a, i], frame[b, i]) for i in range(3))):
                coords += [float(p), float(q), None]  # None breaks the line between bones
        traces.append(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", name=side,
                                   line=dict(color=SIDE_COLORS[side], width=6)))
    traces.append(go.Scatter3d(x=frame[:, 0], y=frame[:, 1], z=frame[:, 2], mode="markers", name="joints",
                               marker=dict(size=3, color="black"), text=list(JOINT_NAMES)))
    return traces


def skeleton_3d_plotly(x: np.ndarray, title: str | None = None, fps: float = 30.0, stride: int = 1,
                       follow_root: bool = True, height: int = 640, tick_step: float = 0.5):
    """Interactive 3-D view of one sequence ``(T, 16, 3)``: plotly frames with play/pause and a slider.

    ``follow_root`` subtracts the root's horizontal position per frame (the camera follows the walker, as
    in ``skeleton_figure``), so the body fills the scene instead of a box around the whole trajectory.
    Limits are one cube (equal aspect, metres) fixed over the sequence, ticks every ``tick_step`` m; y is up
    (the camera's up vector is +y). The play buttons and the slider sit below the scene, which keeps the
    upper ~85 % of the ``height`` px. ``stride`` keeps every stride-th frame (smaller HTML for long clips).
    """
    import plotly.graph_objects as go

    x = follow_root_track(x) if follow_root else np.asarray(x, dtype=np.float64)
    length = max(sequence_length(x), 1)
    indices = list(range(0, length, stride))
    limits = skeleton_limits([x[:length]], margin=0.1)
    frames = [go.Frame(data=_plotly_traces(x[t]), name=str(t)) for t in indices]
    duration = 1000.0 * stride / fps
    play = dict(label="play", method="animate",
                args=[None, dict(frame=dict(duration=duration, redraw=True), fromcurrent=True, mode="immediate")])
    pause = dict(label="pause", method="animate",
                 args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])
    steps = [dict(label=f"{t / fps:.1f}", method="animate",
                  args=[[str(t)], dict(frame=dict(duration=0, redraw=True), mode="immediate")]) for t in indices]
    relative = " (root-relative)" if follow_root else ""

    def axis(i: int, name: str) -> dict:
        return dict(range=list(limits[i]), title=dict(text=name, font=dict(size=12)), autorange=False,
                    dtick=tick_step, tickformat=".1f", tickfont=dict(size=10))

    fig = go.Figure(data=_plotly_traces(x[indices[0]]), frames=frames)
    fig.update_layout(
        title=dict(text=f"{title + ': ' if title else ''}3-D skeleton{relative}, metres", x=0.5, xanchor="center"),
        height=height, margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(title="bones", x=1.0, xanchor="right", y=0.95),
        scene=dict(xaxis=axis(0, f"x{relative} (m)"), yaxis=axis(1, "y, up (m)"), zaxis=axis(2, f"z{relative} (m)"),
                   aspectmode="cube", domain=dict(x=[0, 1], y=[0.16, 1]),
                   camera=dict(up=dict(x=0, y=1, z=0), eye=dict(x=1.5, y=0.5, z=1.5))),
        updatemenus=[dict(type="buttons", direction="left", buttons=[play, pause], x=0.0, y=0.0, xanchor="left",
                          yanchor="bottom", pad=dict(t=0, r=10))],
        sliders=[dict(steps=steps, currentvalue=dict(prefix="time (s): "), x=0.18, len=0.8, y=0.0,
                      yanchor="bottom", pad=dict(t=0, b=0))],
    )
    return fig
