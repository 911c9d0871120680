"""Evaluate a pretraining run on the emotion task, and collect results tables from run folders.

``evaluate_run(run_dir, experiment)`` runs the experiment's protocols (linear, finetune, semi-supervised, knn;
``cagelib.evaluate.protocols``) on the Bandai emotion task over repeated clip-grouped folds, beside the same
encoder at its random initialisation (the fair control, always), and
writes ``evaluation.json`` into the run folder: per protocol the per-fold results, their aggregate
(mean and std over folds), the confusion matrix summed over folds and the predicted class of every task
window (``predictions``, one vector per fold repeat), beside the windows' labels and clips (``windows``).
``fair_differences(evaluation)`` pairs each protocol with its controls on those window predictions: the
difference of balanced and of clip accuracy with a 95 % interval from a bootstrap over the test clips
(``cagelib.evaluate.compare.bootstrap_difference``; one run, so not over seeds) and a verdict;
``differences_table`` prints it. ``collect_results(root)`` reads
every ``evaluation.json`` under ``root`` into rows; ``summarize_results`` gives mean and std over seeds
per method (``cagelib.lab.tables``). Tables are built from these files only: never typed by hand.

Caveats (SPEC), repeated wherever results are shown: style and performer are confounded in the Bandai
data; the emotion task has 7 clips per class, so one clip moves a test fold by many points: read the
spread over folds and seeds, not only the mean.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from sklearn.metrics import silhouette_score
from tqdm.auto import tqdm

from ..atomic import atomic_write_text, json_text
from ..data.tasks import emotion_data
from ..device import resolve_device
from ..evaluate.features import (INPUT_TRANSFORMS, StreamEncoder, TwoStreamEncoder, extract_features,
                                 make_input_transform)
from ..evaluate.compare import Comparison, bootstrap_difference
from ..evaluate.metrics import MAJORITY, aggregate_seeds, majority_result
from ..evaluate.protocols import evaluate_folds
from ..experiment import Experiment, load
from ..pretrain.checkpoint import load_pretrained
from ..pretrain.config import PretrainConfig, build_model
from .figures import tsne_embedding
from .runner import HANDCRAFTED, window_labels, window_predictions
from .runs import list_runs, load_run
from .tables import results_table
from .workbench import EVALUATION_FILE, outputs_dir, resolve_path

RANDOM_INIT = "linear (random init)"  # the fair control: the same encoder before pretraining, same probe


def evaluation_settings(exp: Experiment) -> dict:
    """What an evaluation depends on (``evaluation.json``'s "settings"; a grid skips a run evaluated with these)."""
    keep = ("protocols", "folds", "repeats", "linear", "finetune", "label_fractions", "stream", "seeds")
    d = exp.to_dict()
    return {k: d[k] for k in keep}


def run_encoder(run_dir: str | os.PathLike, stream: str = "auto", random_init: bool = False):
    """``(encoder, input_transform, stream)`` of a run: the pretrained query encoder of ``stream``
    (``both``: Cartesian and Spherical features concatenated, fed Cartesian input), in eval mode. A peer's own
    stream (CrosSCLR's ``bone``, ISC's ``sequence``, ...) comes as a ``StreamEncoder`` of Cartesian input
    (``auto``: ``cartesian`` if trained, else the method's first stream).
    ``random_init``: the same encoder at its initialisation (the run's seed), before pretraining."""
    run_dir = resolve_path(run_dir)
    if random_init:
        model = build_model(PretrainConfig.load(json.loads((run_dir / "config.json").read_text()), run_dir / "config.json"))
    else:
        model = load_pretrained(run_dir)
    streams = tuple(model.encoders())  # CAGE: config.streams; a peer: its own stream names
    if stream == "each":
        raise ValueError("stream='each' is a grid cell's read (every stream and their concatenation); "
                         "evaluate a run with auto, cartesian, spherical or both")
    if stream == "auto":
        stream = "cartesian" if "cartesian" in streams else streams[0]
    if stream == "both":
        if not {"cartesian", "spherical"} <= set(streams):
            raise ValueError(f"{run_dir}: stream='both' needs a two-stream run (c3l, cage), this one has {streams}")
        encoders = model.encoders()
        encoder = TwoStreamEncoder(encoders["cartesian"], encoders["spherical"], model.config.phi_mode)
        return encoder.eval(), "cartesian", stream
    if stream not in streams:
        raise ValueError(f"{run_dir}: the run has no {stream!r} encoder (streams: {streams})")
    if stream not in INPUT_TRANSFORMS:  # a peer's own stream: its encoder on its own input (stream_input)
        return StreamEncoder(model, stream).eval(), "cartesian", stream
    return model.encoders()[stream].eval(), stream, stream

def protocol_runs(exp: Experiment) -> list[tuple[str, str, float]]:
    """``[(result name, protocol, label fraction)]``: one semi-supervised entry per fraction, then the fair
    control (the random-init encoder, linear)."""
    out = []
    for protocol in exp.protocols:
        if protocol == "semi-supervised":
            out += [(f"semi {100 * f:g}%", protocol, f) for f in exp.label_fractions]
        else:
            out.append((protocol, protocol, 1.0))
    return out + [(RANDOM_INIT, "linear", 1.0)]

def evaluate_run(run_dir: str | os.PathLike, exp: Experiment | None = None, progress: bool = True) -> dict:
    """Evaluate a run on its first task over ``folds x repeats`` clip-grouped folds (seeded with the first of
    ``exp.seeds``) with ``exp``'s protocols and recipes (default: the run's own experiment, else the
    ``notebook`` preset); write and return ``evaluation.json`` (per protocol: ``aggregate`` over folds, summed
    ``confusion``, per-fold ``folds``, and ``predictions``: the predicted class of each task window, one
    ``(n,)`` list per fold repeat; ``windows``: the ``(n,)`` labels and clip ids of the task's windows, what
    ``fair_differences`` pairs them on). Lists of scalars are written on one line (``json_text``)."""
    run = load_run(run_dir)
    exp = exp or run.experiment or load("notebook")
    seed = exp.seeds[0]
    if not run.complete:
        raise ValueError(f"{run.path}: pretraining is unfinished ({len(run.history)}/{run.config['epochs']} epochs)")
    encoder, transform, stream = run_encoder(run.path, exp.stream)
    encoders = {False: encoder, True: run_encoder(run.path, exp.stream, True)[0]}
    data = emotion_data(run.data_config())
    folds = data.folds(exp.folds, exp.repeats, seed)
    started, results = time.time(), {}
    jobs = protocol_runs(exp)
    bar = tqdm(total=len(jobs) * len(folds), desc=f"evaluate {run.method}") if progress else None
    for name, protocol, fraction in jobs:
        per_fold = evaluate_folds(encoders[name == RANDOM_INIT], data, folds, protocol,
                                  exp.eval_config(protocol, seed, transform), fraction,
                                  on_fold=bar.update if bar is not None else None)
        results[name] = _entry(per_fold, folds, len(data.y), fraction)
    if bar is not None:
        bar.close()
    results[MAJORITY] = _entry([majority_result(data.y[tr], data.y[te], data.label_names) for tr, te in folds],
                               folds, len(data.y))
    evaluation = {"run": str(run.path), "method": run.method, "seed": run.seed, "stream": stream,
                  "pretrain_epochs": len(run.history), "settings": evaluation_settings(exp),
                  "task": data.summary(), "n_folds": len(folds), "seconds": time.time() - started,
                  "windows": window_labels(data), "results": results}
    atomic_write_text(run.path / EVALUATION_FILE, json_text(evaluation))
    return evaluation

def _entry(per_fold: list, folds, n_windows: int, label_fraction: float = 1.0) -> dict:
    """One protocol's record: aggregate over folds, summed confusion matrix, per-fold results, and the
    predicted class of each of the task's ``n_windows`` windows per fold repeat (``runner.window_predictions``;
    ``per_fold[i]`` is the result of ``folds[i]``)."""
    return {"protocol": per_fold[0].protocol, "label_fraction": label_fraction,
            "aggregate": aggregate_seeds(per_fold),
            "confusion": np.sum([r.confusion for r in per_fold], axis=0).tolist(),
            "folds": [r.to_dict() for r in per_fold],
            "predictions": window_predictions(per_fold, folds, n_windows)}


DIFFERENCE_COLUMNS = (("balanced", "balanced"), ("clip_top1", "clip"))  # (bootstrap metric, column label)


def fair_differences(evaluation: dict, resamples: int = 2000) -> list[dict]:
    """Every protocol of ``evaluation`` (an ``evaluation.json``) against its controls: the same encoder at
    random init with the same linear probe (``RANDOM_INIT``), and the hand-crafted features (``HANDCRAFTED``)
    where the evaluation holds that row (``evaluate_run`` does not add one). The majority floor and the
    controls themselves are not rows.

    Returns one dict per (protocol, control): ``{"A": protocol, "B": control, "balanced": Comparison | None,
    "clip_top1": Comparison | None}``: the paired difference A - B of balanced accuracy and of clip accuracy
    (in points) over all task windows, pooled over the folds, with the 95 % clip bootstrap of
    ``bootstrap_difference`` (``resamples`` replicates, seeded 0) on the window predictions of the one run
    (``per_seed = [the (repeats, n) predictions]``: the interval is over the test clips, not over seeds).
    None where A or B has no predictions (an ``evaluation.json`` written before they were kept)."""
    results, windows = evaluation["results"], evaluation.get("windows")
    controls = [c for c in (RANDOM_INIT, HANDCRAFTED) if c in results]
    rows = []
    for name in results:
        if name in controls or name == MAJORITY:
            continue
        for control in controls:
            row: dict = {"A": name, "B": control}
            kept = [results[r].get("predictions") for r in (name, control)]
            for metric, _ in DIFFERENCE_COLUMNS:
                row[metric] = None if windows is None or any(k is None for k in kept) else bootstrap_difference(
                    [kept[0]], [kept[1]], windows["labels"], windows["clips"], metric, resamples, seed=0,
                    names=(name, control))
            rows.append(row)
    return rows


def differences_table(rows: list[dict]) -> str:
    """Markdown of ``fair_differences`` rows: A, B, and per metric "difference [95 % interval] verdict" in
    points (``Comparison.verdict``: "A > B", "B > A", or "not separable" when the interval contains 0);
    "-" where the evaluation kept no predictions."""
    def shown(c: Comparison | None) -> str:
        return "-" if c is None else c.cell()

    return results_table([{"A": r["A"], "B": r["B"],
                           **{f"{label} A - B, points [95 % interval over clips]": shown(r[metric])
                              for metric, label in DIFFERENCE_COLUMNS}} for r in rows])

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

def silhouette(features, labels) -> float:
    """Silhouette score of the labels in feature space (cosine), in -1..1: 1 = separated classes, 0 = no
    structure, negative = windows lie closer to another class than to their own (the classes overlap)."""
    return float(silhouette_score(np.asarray(features), np.asarray(labels), metric="cosine"))

def task_features(run_dir: str | os.PathLike, stream: str = "auto", device: str = "auto") -> tuple[np.ndarray, np.ndarray, tuple]:
    """Encoder features ``(n, F)`` of every emotion-task window of a run, their labels and label names."""
    run = load_run(run_dir)
    encoder, transform, _ = run_encoder(run.path, stream)
    data = emotion_data(run.data_config())
    dev = resolve_device(device)
    features = extract_features(encoder.to(dev), data.x, 256, dev, make_input_transform(transform))
    return features.numpy(), data.y, data.label_names

def tsne_panels(run_dirs, stream: str = "auto", perplexity: float = 30.0, seed: int = 0,
                device: str = "auto", outputs: str | os.PathLike | None = "") -> tuple[dict, list[dict], tuple]:
    """Figure 5 data: per run, the t-SNE of its emotion-task features with their labels
    (``{title: (embedding (n, 2), labels (n,))}`` for ``figures.plot_tsne``), a row per run with the
    silhouette score of the emotions in feature space (``silhouette``), and the label names. A run is
    named relative to ``outputs`` (``$CAGELIB_OUTPUTS`` or ``<repo>/outputs``) when it lies inside it."""
    panels, rows, names = {}, [], ()
    for run_dir in run_dirs:
        run = load_run(run_dir)
        features, labels, names = task_features(run.path, stream, device)
        panels[f"{run.method}, {len(run.history)} epochs\n{run.path.name}"] = (
            tsne_embedding(features, seed=seed, perplexity=perplexity), labels)
        root = outputs_dir(outputs)
        shown = str(run.path.relative_to(root)) if run.path.is_relative_to(root) else str(run.path)
        rows.append({"run": shown, "method": run.method, "pretraining epochs": len(run.history),
                     "windows": len(labels), "silhouette (cosine)": silhouette(features, labels)})
    return panels, rows, names
