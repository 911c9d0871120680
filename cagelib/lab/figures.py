"""Figures of results: t-SNE panels (Fig. 5), loss curves, confusion matrices, per-class bars, bone
lengths; ``save_figure`` writes any figure atomically.

matplotlib and openTSNE are imported inside the functions that use them (lazily, so that the demo runs
on a machine without a plotting stack). Figures are ``matplotlib.figure.Figure`` objects built without
pyplot; Jupyter displays them when they are a cell's value.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..atomic import atomic_path
from ..evaluate.metrics import MAJORITY
from ..skeleton import EDGES, JOINT_NAMES, bone_lengths
from .skeleton_plots import bone_side, sequence_length


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure (format from the suffix) or a plotly figure (``.html`` / ``.json``)
    atomically: write a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    if not path.suffix:
        raise ValueError(f"{path}: give a file suffix (.png, .pdf, .svg, .html, ...) to choose the format")
    with atomic_path(path) as tmp:
        if hasattr(fig, "savefig"):
            fig.savefig(tmp, format=path.suffix[1:], **{"bbox_inches": "tight", **kwargs})
        elif path.suffix == ".html":
            fig.write_html(tmp, **kwargs)
        elif path.suffix == ".json":
            fig.write_json(tmp, **kwargs)
        else:
            raise ValueError(f"{path}: a plotly figure is saved as .html or .json")
    return path


def tsne_embedding(features, seed: int = 0, perplexity: float = 30.0, n_jobs: int = 1, **kwargs) -> np.ndarray:
    """openTSNE embedding ``(N, F) -> (N, 2)``; deterministic for a seed (PCA init, single thread by
    default). The perplexity is lowered to ``(N - 1) / 3`` for small N."""
    from openTSNE import TSNE

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 4:
        raise ValueError(f"features must be (N, F) with N >= 4, got shape {features.shape}")
    perplexity = min(perplexity, (len(features) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=n_jobs, verbose=False, **kwargs)
    return np.asarray(tsne.fit(features))


def plot_tsne(embeddings_by_run: Mapping[str, tuple[np.ndarray, np.ndarray]],
              label_names: Sequence[str] | None = None, point_size: float = 8.0, panel_size: float = 4.6):
    """Side-by-side t-SNE panels (paper Fig. 5): ``{run name: (embedding (N, 2), labels (N,))}``,
    points coloured by emotion, one legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_size * len(embeddings_by_run), panel_size + 0.6))
    axes = fig.subplots(1, len(embeddings_by_run), squeeze=False)[0]
    all_labels = np.unique(np.concatenate([np.asarray(lab) for _, lab in embeddings_by_run.values()]))
    colours = {c: f"C{i % 10}" for i, c in enumerate(all_labels)}
    for ax, (name, (emb, labels)) in zip(axes, embeddings_by_run.items()):
        emb, labels = np.asarray(emb), np.asarray(labels)
        for c in all_labels:
            m = labels == c
            name_c = label_names[c] if label_names is not None else str(c)
            ax.scatter(emb[m, 0], emb[m, 1], s=point_size, color=colours[c], label=name_c, alpha=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1 (no unit)", fontsize=8)
        ax.set_ylabel("t-SNE 2 (no unit)", fontsize=8)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False)
    fig.suptitle("t-SNE of the encoder features of every emotion-task window, coloured by emotion", fontsize=10)
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.15, top=0.84, wspace=0.12)
    return fig


def _history_series(history) -> dict[str, list[float]]:
    """EvalResult, {name: values}, a list of values, or a list of per-epoch dicts -> {name: values}."""
    if hasattr(history, "train_loss"):  # EvalResult
        series = {"train loss": list(history.train_loss)}
        if history.val_accuracy:
            series["val accuracy (%)"] = list(history.val_accuracy)
        return series
    if isinstance(history, Mapping):
        return {k: list(v) for k, v in history.items()}
    history = list(history)
    if history and isinstance(history[0], Mapping):  # per-epoch records
        keys = [k for k, v in history[0].items() if k != "epoch" and isinstance(v, (int, float))]
        return {k: [row[k] for row in history if k in row] for k in keys}
    return {"loss": history}


def plot_loss_curves(history, title: str | None = None, logy: bool = False):
    """Curves per epoch; accuracy-like series (name contains "acc") go on a second y axis."""
    from matplotlib.figure import Figure

    series = _history_series(history)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot(111)
    twin = None
    for i, (name, values) in enumerate(series.items()):
        target = ax
        if "acc" in name.lower():
            twin = twin or ax.twinx()
            target = twin
        target.plot(np.arange(1, len(values) + 1), values, label=name, color=f"C{i}")
    ax.set_xlabel("epoch")
    if logy:
        ax.set_yscale("log")
    handles = [h for a in (ax, twin) if a is not None for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, [h.get_label() for h in handles], loc="best")
    if title:
        ax.set_title(title)
    return fig


HEALTH_CURVES = ("retrieval", "spread", "knn")  # the health metrics of the pretraining plot (cagelib.pretrain.health)
# Colours of the pretraining figure: the two panels never share one (each has its own legend). The loss panel
# takes tab10's blue, orange, green, red, purple, brown (then tab20's light ones), the positive-pair accuracy
# black; the health panel one colour per metric (pink, olive, cyan; the stream is the line style), grey for chance.
LOSS_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94")
ACCURACY_COLOUR = "#000000"
HEALTH_COLOURS = {"retrieval": "#e377c2", "spread": "#bcbd22", "knn": "#17becf"}
STREAM_STYLES = ("-", "--", "-.", ":")  # line style per stream of the health panel, in order of appearance


def plot_pretraining(history: Sequence[Mapping], health_init: Mapping | None = None, title: str | None = None):
    """Pretraining per epoch: the losses (and positive-pair accuracy) on the left, from epoch 1; the training
    health (``cagelib.pretrain.health``: retrieval, spread, k-NN per stream, from epoch 0 = ``health_init``, with
    retrieval's chance line ``health_init["chance"]``) on the right, when the run measures it. Each panel has
    its own legend, below it, and its own colours (``LOSS_COLOURS``, ``HEALTH_COLOURS``: none shared)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    history = list(history)
    rows = ([dict(health_init)] if health_init else []) + history
    health = [k for k in (rows[0] if rows else {}) if k.split("_")[0] in HEALTH_CURVES]
    fig = Figure(figsize=(12 if health else 6.5, 4.6))
    ax = fig.add_subplot(121 if health else 111)
    epochs = [m["epoch"] for m in history]
    accuracy = None
    losses = [k for k in (history[0] if history else {}) if k.startswith("loss")]
    for i, key in enumerate(losses):
        ax.plot(epochs, [m[key] for m in history], "o-", color=LOSS_COLOURS[i % len(LOSS_COLOURS)], label=key)
    if history and "acc" in history[0]:
        accuracy = ax.twinx()
        accuracy.plot(epochs, [m["acc"] for m in history], "s--", color=ACCURACY_COLOUR,
                      label="positive-pair acc")
        accuracy.set_ylabel("positive-pair accuracy (fraction)")
        accuracy.set_ylim(0, 1.05)
    ax.set(xlabel="epoch", ylabel="loss (InfoNCE, nats)", title="losses (training batches)")
    handles = [h for a in (ax, accuracy) if a is not None for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=3, fontsize=9, frameon=False)
    panels = [(ax, epochs)]
    if health:
        right = fig.add_subplot(122)
        streams = list(dict.fromkeys(k.partition("_")[2] for k in health))
        for key in health:
            metric, _, stream = key.partition("_")
            kept = [m for m in rows if key in m]
            right.plot([m["epoch"] for m in kept], [m[key] for m in kept], "o", color=HEALTH_COLOURS[metric],
                       linestyle=STREAM_STYLES[streams.index(stream) % len(STREAM_STYLES)], label=key)
        if health_init and "chance" in health_init:
            right.axhline(health_init["chance"], color="grey", linestyle=":", label="retrieval chance (1 / windows)")
        right.set(xlabel="epoch (0 = before training)", ylabel="fraction (spread: std x sqrt(D))",
                  title="training health (eval mode)")
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=9, frameon=False)
        panels.append((right, [m["epoch"] for m in rows]))
    for a, shown in panels:  # whole epochs, each axis from its first data point, a single epoch still in view
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        first, last = (min(shown), max(shown)) if shown else (1, 1)
        a.set_xlim(first - 0.3, last + 0.3)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.95 if not health else 0.97, bottom=0.38, top=0.84, wspace=0.32)
    return fig


def draw_confusion(ax, confusion, names: Sequence, normalize: bool = True, counts: bool = True,
                   row_names: bool = True):
    """Draw a confusion matrix (rows true, columns predicted) on ``ax``; ``normalize`` shows each row in
    % (per-class accuracy on the diagonal), ``counts`` adds the counts. Returns the image."""
    cm = np.asarray(confusion, dtype=np.float64)  # (K, K)
    support = cm.sum(axis=1, keepdims=True)
    shown = np.divide(100 * cm, support, out=np.zeros_like(cm), where=support > 0) if normalize else cm
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    for i, j in np.ndindex(cm.shape):
        value = f"{shown[i, j]:.0f}%" if normalize else f"{cm[i, j]:.0f}"
        text = f"{value}\n({cm[i, j]:.0f})" if normalize and counts else value
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black")
    ax.set_xticks(range(len(cm)), [str(n) for n in names], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(cm)), [str(n) for n in names] if row_names else [], fontsize=8)
    ax.set_xlabel("predicted")
    return image


def plot_confusion(result, label_names: Sequence[str] | None = None, normalize: bool = True):
    """Confusion matrix of an EvalResult or a ``(K, K)`` array; ``normalize`` shows each row in % with
    counts in brackets."""
    from matplotlib.figure import Figure

    cm = np.asarray(result.confusion if hasattr(result, "confusion") else result, dtype=np.float64)
    names = list(label_names or getattr(result, "label_names", None) or range(len(cm)))
    fig = Figure(figsize=(1.1 * len(cm) + 2, 1.1 * len(cm) + 1.5))
    ax = fig.add_subplot(111)
    image = draw_confusion(ax, cm, names, normalize)
    ax.set_ylabel("true")
    if hasattr(result, "top1"):
        ax.set_title(f"{result.protocol}: top-1 {result.top1:.2f} %")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


def plot_confusions(evaluation: dict, panel_size: float = 3.2):
    """Every protocol's confusion matrix of an ``evaluation.json`` (summed over folds), row-normalised in
    %, side by side."""
    from matplotlib.figure import Figure

    results = {k: v for k, v in evaluation["results"].items() if k != MAJORITY}
    names = next(iter(results.values()))["aggregate"]["label_names"]
    fig = Figure(figsize=(panel_size * len(results) + 1.0, panel_size + 1.2))
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, (protocol, res) in zip(axes, results.items()):
        image = draw_confusion(ax, res["confusion"], names, counts=True, row_names=ax is axes[0])
        ax.set_title(f"{protocol}\ntop-1 {res['aggregate']['top1_mean']:.1f} % (mean over folds)", fontsize=9)
    axes[0].set_ylabel("true class")
    fig.suptitle(f"Confusion matrices: windows summed over all {evaluation.get('n_folds', '?')} folds; "
                 "cell = % of the true class's windows (count)\n"
                 "The diagonal pools the folds (weighted by windows), so it differs from the per-class table "
                 "(an unweighted mean over folds)", fontsize=9)
    fig.subplots_adjust(left=0.07, right=0.9, bottom=0.2, top=0.76, wspace=0.12)
    bar = fig.colorbar(image, ax=list(axes), fraction=0.025, pad=0.02)
    bar.set_label("% of the true class (row)", fontsize=8)
    return fig


def clipped_error(mean, std, low: float = 0.0, high: float = 100.0) -> np.ndarray:
    """Asymmetric error bars ``(2, K)`` (below, above) of ``mean +- std`` clipped to ``[low, high]``: an
    accuracy's bar never runs past 0 or 100 %."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    return np.stack([np.minimum(std, mean - low), np.minimum(std, high - mean)]).clip(min=0.0)


def plot_per_class(evaluation: dict):
    """Grouped bars: per-class accuracy (mean over folds; error bar = std over folds, clipped to 0..100 %)
    of every protocol of an ``evaluation.json``, with each protocol's balanced accuracy in the legend (beside
    the axes, where it covers no bar)."""
    from matplotlib.figure import Figure

    results = {k: v for k, v in evaluation["results"].items() if k != MAJORITY}
    names = next(iter(results.values()))["aggregate"]["label_names"]
    fig = Figure(figsize=(1.5 * len(names) + 4.6, 4.2))
    ax = fig.add_subplot(111)
    width = 0.8 / len(results)
    for i, (protocol, res) in enumerate(results.items()):
        agg = res["aggregate"]
        mean = np.asarray(agg["per_class_mean"], dtype=np.float64)
        err = clipped_error(mean, agg["per_class_std"]) if agg.get("per_class_std") else None
        balanced = agg.get("balanced_mean")
        label = protocol if balanced is None else f"{protocol} (balanced {balanced:.0f} %)"
        ax.bar(np.arange(len(names)) + i * width, mean, width, yerr=err, capsize=2, label=label,
               color=f"C{i % 10}", error_kw={"elinewidth": 1})
    ax.axhline(100 / len(names), color="grey", linestyle=":", label=f"chance ({100 / len(names):.0f} %)")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_xlabel("true class")
    ax.set_ylabel("class accuracy = recall (%)")
    ax.set_ylim(0, 105)
    ax.set_yticks(np.arange(0, 101, 20))
    ax.set_title(f"Per-class accuracy: mean over {evaluation.get('n_folds', '?')} folds\n"
                 "error bar = std over folds, clipped to 0-100 %", fontsize=10)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="protocol",
              title_fontsize=9)
    fig.tight_layout()
    return fig


def plot_bone_lengths(x: np.ndarray, relative: bool = True, title: str | None = None):
    """Length of every bone over the valid frames of one sequence ``(T, 16, 3)``. ``relative`` divides
    by each bone's median (a rigid bone is a flat line at 1): a check of conversion and preprocessing."""
    from matplotlib.figure import Figure

    x = np.asarray(x)
    lengths = bone_lengths(x[: max(sequence_length(x), 1)])  # (T, E)
    if relative:
        lengths = lengths / np.where(np.median(lengths, axis=0) > 0, np.median(lengths, axis=0), 1.0)
    fig = Figure(figsize=(9.5, 4))
    ax = fig.add_subplot(111)
    for e, (a, b) in enumerate(EDGES):
        ax.plot(lengths[:, e], label=f"{JOINT_NAMES[a]}-{JOINT_NAMES[b]}", linewidth=1,
                linestyle="-" if bone_side((a, b)) != "right" else "--")
    ax.set_xlabel("frame (30 fps)")
    ax.set_ylabel("length / median (1 = rigid)" if relative else "length (m)")
    # 15 bones: the legend goes beside the axes, where it covers no curve (dashed = right side)
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="bone (dashed: right)", title_fontsize=7)
    ax.set_title(title or ("bone length over the clip, relative to its median" if relative else "bone length"))
    fig.subplots_adjust(left=0.09, right=0.74, bottom=0.13)
    return fig
