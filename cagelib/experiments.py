"""Evaluate a pretraining run on the emotion task, and collect results tables from run folders.

``evaluate_run(run_dir, EvalSettings(...))`` runs the paper's protocols (linear, finetune,
semi-supervised; ``cagelib.evaluate``) on the Bandai emotion task over repeated clip-grouped folds and
writes ``evaluation.json`` into the run folder: per protocol the per-fold results, their aggregate
(mean and std over folds) and the confusion matrix summed over folds. ``collect_results(root)`` reads
every ``evaluation.json`` under ``root`` into rows; ``summarize_results`` gives mean and std over seeds
per method. Tables are built from these files only: never typed by hand.

Caveats (SPEC), repeated wherever results are shown: style and performer are confounded in the Bandai
data; the emotion task has 7 clips per class, so one clip moves a test fold by many points: read the
spread over folds and seeds, not only the mean.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .runs import list_runs, load_run
from .workbench import EVALUATION_FILE, emotion_data, outputs_dir, resolve_path, write_json

PROTOCOLS = ("linear", "finetune", "semi-supervised", "knn")
STREAM_CHOICES = ("auto", "cartesian", "spherical", "both")
RANDOM_INIT = "linear (random init)"  # the baseline: the same encoder before pretraining, same probe
MAJORITY = "majority class"  # predicts the most frequent training class: the floor any protocol must beat


@dataclass
class EvalSettings:
    """How a run is evaluated. Defaults run in seconds on a CPU; ``EvalSettings.paper()`` for the paper."""

    protocols: tuple = ("linear", "finetune", "semi-supervised")  # any of PROTOCOLS
    folds: int = 4  # clip-grouped folds per repeat (7 clips per class: at most 7)
    repeats: int = 1  # repeats of the fold assignment (more repeats, steadier mean)
    linear_epochs: int = 100  # linear probe epochs (paper: 100, lr 30, x0.1 at 50 and 70 %)
    finetune_epochs: int = 3  # finetune / semi-supervised epochs (paper: 20, lr 0.001, x0.1 at half)
    label_fractions: tuple = (0.5,)  # semi-supervised label fractions of the training clips (paper: .05 .1 .2 .5)
    baseline: bool = True  # also probe (linear) the same encoder at its random initialisation
    stream: str = "auto"  # encoder evaluated: auto (cartesian if trained, else spherical) | cartesian | spherical | both
    seed: int = 0  # fold assignment, classifier init and shuffling
    device: str = "auto"  # "auto", "cpu", "cuda", ...

    def __post_init__(self) -> None:
        self.protocols, self.label_fractions = tuple(self.protocols), tuple(float(f) for f in self.label_fractions)
        unknown = set(self.protocols) - set(PROTOCOLS)
        if unknown or self.stream not in STREAM_CHOICES:
            raise ValueError(f"EvalSettings: protocols from {PROTOCOLS} and stream from {STREAM_CHOICES}, "
                             f"got {self.protocols}, {self.stream!r}")
        if not 2 <= self.folds <= 7 or self.repeats < 1:
            raise ValueError(f"EvalSettings: folds in 2..7 (7 clips per class) and repeats >= 1, "
                             f"got {self.folds}, {self.repeats}")

    @classmethod
    def paper(cls, **overrides) -> "EvalSettings":
        """The paper's epochs and label fractions, 5 folds x 2 repeats."""
        base = cls(folds=5, repeats=2, finetune_epochs=20, label_fractions=(0.05, 0.1, 0.2, 0.5))
        return replace(base, **overrides)

    @classmethod
    def from_dict(cls, d: dict) -> "EvalSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def eval_config(self, protocol: str, input_transform: str):
        from .evaluate import EvalConfig

        if protocol in ("linear", "knn"):
            e = self.linear_epochs
            milestones = tuple(sorted({m for m in (round(0.5 * e), round(0.7 * e)) if 0 < m < e}))
            return EvalConfig.paper(protocol, epochs=e, milestones=milestones, seed=self.seed,
                                    device=self.device, input_transform=input_transform)
        e = self.finetune_epochs
        milestones = (e // 2,) if e >= 2 else ()
        return EvalConfig.paper(protocol, epochs=e, milestones=milestones, seed=self.seed, device=self.device,
                                input_transform=input_transform)


def run_encoder(run_dir: str | os.PathLike, stream: str = "auto", random_init: bool = False):
    """``(encoder, input_transform, stream)`` of a run: the pretrained query encoder of ``stream``
    (``both``: Cartesian and Spherical features concatenated, fed Cartesian input), in eval mode.
    ``random_init``: the same encoder at its initialisation (the run's seed), before pretraining."""
    from .probes import TwoStreamEncoder
    from .train import PretrainConfig, build_model, load_pretrained

    run_dir = resolve_path(run_dir)
    if random_init:
        model = build_model(PretrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())))
    else:
        model = load_pretrained(run_dir)
    streams = tuple(model.config.streams)
    if stream == "auto":
        stream = "cartesian" if "cartesian" in streams else streams[0]
    if stream == "both":
        if len(streams) < 2:
            raise ValueError(f"{run_dir}: stream='both' needs a two-stream run (c3l, cage), this one has {streams}")
        encoder = TwoStreamEncoder(model.encoders("cartesian"), model.encoders("spherical"), model.config.phi_mode)
        return encoder.eval(), "cartesian", stream
    if stream not in streams:
        raise ValueError(f"{run_dir}: the run has no {stream!r} encoder (streams: {streams})")
    return model.encoders(stream).eval(), stream, stream


def protocol_runs(settings: EvalSettings) -> list[tuple[str, str, float]]:
    """``[(result name, protocol, label fraction)]``: one semi-supervised entry per fraction."""
    out = []
    for protocol in settings.protocols:
        if protocol == "semi-supervised":
            out += [(f"semi {100 * f:g}%", protocol, f) for f in settings.label_fractions]
        else:
            out.append((protocol, protocol, 1.0))
    if settings.baseline:
        out.append((RANDOM_INIT, "linear", 1.0))
    return out


def evaluate_run(run_dir: str | os.PathLike, settings: EvalSettings | None = None, progress: bool = True) -> dict:
    """Evaluate a run on the emotion task over ``folds x repeats`` clip-grouped folds; write and return
    ``evaluation.json`` (per protocol: ``aggregate`` over folds, summed ``confusion``, per-fold ``folds``)."""
    from .evaluate import finetune_eval, knn_eval, linear_eval, semi_supervised_eval

    settings = settings or EvalSettings()
    run = load_run(run_dir)
    if not run.complete:
        raise ValueError(f"{run.path}: pretraining is unfinished ({len(run.history)}/{run.config['epochs']} epochs)")
    encoder, transform, stream = run_encoder(run.path, settings.stream)
    encoders = {False: encoder, True: run_encoder(run.path, settings.stream, True)[0] if settings.baseline else None}
    data = emotion_data(run.task_config(), (run.settings or {}).get("corpus", "other"))
    folds = data.folds(settings.folds, settings.repeats, settings.seed)
    started, results = time.time(), {}
    jobs = protocol_runs(settings)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs) * len(folds), desc=f"evaluate {run.method}")
    for name, protocol, fraction in jobs:
        config = settings.eval_config(protocol, transform)
        per_fold = []
        encoder = encoders[name == RANDOM_INIT]
        for train, test in folds:
            args = (data.x[train], data.y[train], data.x[test], data.y[test])
            kw = dict(config=config, label_names=data.label_names)
            if protocol == "linear":
                res = linear_eval(encoder, *args, train_groups=data.groups[train], **kw)
            elif protocol == "knn":
                res = knn_eval(encoder, *args, k=10, **kw)
            elif protocol == "finetune":
                res = finetune_eval(encoder, *args, train_groups=data.groups[train], **kw)
            else:
                res = semi_supervised_eval(encoder, *args, fraction, train_groups=data.groups[train], **kw)
            per_fold.append(res)
            if bar is not None:
                bar.update(1)
        results[name] = _entry(per_fold, fraction)
    if bar is not None:
        bar.close()
    results[MAJORITY] = _entry([majority_result(data.y[tr], data.y[te], data.label_names) for tr, te in folds])
    evaluation = {"run": str(run.path), "method": run.method, "seed": run.seed, "stream": stream,
                  "pretrain_epochs": len(run.history), "settings": asdict(settings),
                  "task": data.summary(), "n_folds": len(folds), "seconds": time.time() - started,
                  "results": results}
    write_json(run.path / EVALUATION_FILE, evaluation)
    return evaluation


def _entry(per_fold: list, label_fraction: float = 1.0) -> dict:
    """One protocol's record: aggregate over folds, summed confusion matrix, per-fold results."""
    from .evaluate import aggregate_seeds

    return {"protocol": per_fold[0].protocol, "label_fraction": label_fraction,
            "aggregate": aggregate_seeds(per_fold),
            "confusion": np.sum([r.confusion for r in per_fold], axis=0).tolist(),
            "folds": [r.to_dict() for r in per_fold]}


def majority_result(train_y, test_y, label_names):
    """``EvalResult`` of always predicting the most frequent training label (ties: the smallest label)."""
    from .evaluate import EvalResult
    from .probes import confusion_matrix, per_class_accuracy

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    k = len(label_names)
    predicted = np.full(len(test_y), np.bincount(train_y, minlength=k).argmax())
    cm = confusion_matrix(test_y, predicted, k)
    return EvalResult(protocol="majority", top1=100.0 * float((predicted == test_y).mean()),
                      per_class=per_class_accuracy(cm).tolist(), confusion=cm.tolist(),
                      label_names=tuple(label_names), n_train=len(train_y), n_test=len(test_y))


def evaluation_rows(evaluation: dict) -> list[dict]:
    """One row per protocol: top-1 mean and std over folds, then the per-class mean accuracies."""
    rows = []
    for name, res in evaluation["results"].items():
        agg = res["aggregate"]
        with np.errstate(all="ignore"):
            balanced = float(np.nanmean(np.array(agg["per_class_mean"], dtype=float)))
        row = {"protocol": name, "top-1 %": agg["top1_mean"], "std over folds": agg["top1_std"],
               "balanced %": balanced, "folds": agg["n"]}
        row.update({f"{c} %": v for c, v in zip(agg["label_names"], agg["per_class_mean"])})
        rows.append(row)
    return rows


def collect_results(root: str | os.PathLike | None = "") -> list[dict]:
    """One row per evaluated run under ``root``: run, method, seed, pretraining epochs, and per protocol
    the top-1 mean over folds (``<name>``) and its std over folds (``<name> fold std``)."""
    root = outputs_dir(root)
    rows = []
    for run in reversed(list_runs(root)):  # oldest first
        if not run.evaluation:
            continue
        row = {"run": str(run.path.relative_to(root)) if run.path.is_relative_to(root) else str(run.path),
               "method": run.variant, "seed": run.seed, "epochs": len(run.history),
               "encoder": run.encoder}
        for name, res in run.evaluation["results"].items():
            row[name] = res["aggregate"]["top1_mean"]
            row[f"{name} fold std"] = res["aggregate"]["top1_std"]
        rows.append(row)
    return rows


def summarize_results(rows: list[dict], method_order: tuple = (), by: tuple = ("method",)) -> list[dict]:
    """Per group of runs (``by``: default the method; add ``"encoder", "epochs"`` to keep runs of different
    sizes apart): number of seeds, and per protocol ``mean ± std`` over the runs of their fold means."""
    from .evaluate import format_mean_std

    info = ("run", "method", "seed", "epochs", "encoder")
    protocols = list(dict.fromkeys(k for r in rows for k in r if k not in info and not k.endswith(" fold std")))
    order = {m: i for i, m in enumerate(method_order)}
    keys = list(dict.fromkeys(tuple(r[k] for k in by) for r in rows))
    keys.sort(key=lambda key: order.get(key[0], len(order)) if by[0] == "method" else 0)  # stable
    out = []
    for key in keys:
        mine = [r for r in rows if tuple(r[k] for k in by) == key]
        row = {**dict(zip(by, key)), "seeds": len({r["seed"] for r in mine}), "runs": len(mine)}
        for p in protocols:
            values = np.array([r[p] for r in mine if r.get(p) is not None], dtype=float)
            if len(values):
                row[f"{p} top-1 %"] = format_mean_std(values.mean(), values.std(ddof=1) if len(values) > 1 else None)
        out.append(row)
    return out


def write_results(root: str | os.PathLike, rows: list[dict], summary: list[dict], note: str = "") -> tuple[Path, Path]:
    """``results.csv`` (one row per run) and ``results.md`` (summary per method, then per run) in ``root``."""
    from .evaluate import results_table

    root = resolve_path(root)
    csv_path, md_path = root / "results.csv", root / "results.md"
    text = results_table(rows, fmt="csv")
    md = ["# Results", "", note, "", "## Mean ± std over seeds (each seed: mean over clip-grouped folds)", "",
          results_table(summary), "## Every run (top-1 %, mean over folds)", "",
          results_table([{k: v for k, v in r.items() if not k.endswith("fold std")} for r in rows])]
    for path, body in ((csv_path, text), (md_path, "\n".join(md))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(body)
        os.replace(tmp, path)
    return csv_path, md_path


def plot_per_class(evaluation: dict):
    """Grouped bars: per-class accuracy (mean over folds, std as error bar) of every protocol."""
    from matplotlib.figure import Figure

    results = {k: v for k, v in evaluation["results"].items() if k != MAJORITY}
    names = next(iter(results.values()))["aggregate"]["label_names"]
    fig = Figure(figsize=(1.6 * len(names) + 2, 3.5))
    ax = fig.add_subplot(111)
    width = 0.8 / len(results)
    for i, (protocol, res) in enumerate(results.items()):
        agg = res["aggregate"]
        err = agg["per_class_std"] or None
        ax.bar(np.arange(len(names)) + i * width, agg["per_class_mean"], width, yerr=err, capsize=2, label=protocol)
    ax.axhline(100 / len(names), color="grey", linestyle=":", label="chance")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_ylabel("accuracy % (mean over folds)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_confusions(evaluation: dict, panel_size: float = 3.2):
    """Every protocol's confusion matrix (summed over folds), row-normalised in %, side by side."""
    from matplotlib.figure import Figure

    results = {k: v for k, v in evaluation["results"].items() if k != MAJORITY}
    names = next(iter(results.values()))["aggregate"]["label_names"]
    fig = Figure(figsize=(panel_size * len(results), panel_size + 0.6))
    for ax, (protocol, res) in zip(fig.subplots(1, len(results), squeeze=False)[0], results.items()):
        cm = np.array(res["confusion"], dtype=float)
        support = cm.sum(axis=1, keepdims=True)
        shown = np.divide(100 * cm, support, out=np.zeros_like(cm), where=support > 0)  # (K, K) row %
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=100)
        for i in range(len(cm)):
            for j in range(len(cm)):
                ax.text(j, i, f"{shown[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > 60 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names if ax is fig.axes[0] else [], fontsize=8)
        ax.set_title(f"{protocol}\n{res['aggregate']['top1_mean']:.1f} % (mean over folds)", fontsize=9)
        ax.set_xlabel("predicted")
    fig.axes[0].set_ylabel("true")
    fig.tight_layout()
    return fig


def silhouette(features, labels) -> float:
    """Silhouette score of the labels in feature space (cosine): 1 = separated classes, 0 = no structure."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(np.asarray(features), np.asarray(labels), metric="cosine"))


def task_features(run_dir: str | os.PathLike, stream: str = "auto", device: str = "auto") -> tuple[np.ndarray, np.ndarray, tuple]:
    """Encoder features ``(n, F)`` of every emotion-task window of a run, their labels and label names."""
    from .probes import extract_features, make_input_transform, resolve_device

    run = load_run(run_dir)
    encoder, transform, _ = run_encoder(run.path, stream)
    data = emotion_data(run.task_config(), (run.settings or {}).get("corpus", "other"))
    dev = resolve_device(device)
    features = extract_features(encoder.to(dev), data.x, 256, dev, make_input_transform(transform))
    return features.numpy(), data.y, data.label_names


def tsne_panels(run_dirs, stream: str = "auto", perplexity: float = 30.0, seed: int = 0,
                device: str = "auto") -> tuple[dict, list[dict], tuple]:
    """Figure 5 data: per run, the t-SNE of its emotion-task features with their labels
    (``{title: (embedding (n, 2), labels (n,))}`` for ``viz.plot_tsne``), a row per run with the
    silhouette score of the emotions in feature space, and the label names."""
    from .viz import tsne_embedding

    panels, rows, names = {}, [], ()
    for run_dir in run_dirs:
        run = load_run(run_dir)
        features, labels, names = task_features(run.path, stream, device)
        panels[f"{run.method}, {len(run.history)} epochs\n{run.path.name}"] = (
            tsne_embedding(features, seed=seed, perplexity=perplexity), labels)
        rows.append({"run": str(run.path), "method": run.method, "pretraining epochs": len(run.history),
                     "windows": len(labels), "silhouette (cosine)": silhouette(features, labels)})
    return panels, rows, names
