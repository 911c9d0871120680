"""The one cell runner: pretrain -> probes -> controls, for one seed of an experiment (``cagelib.experiment``).

The demo, the long preset and the peer grid run their seeds and cells through ``run_cell``; their tables
differ, their cells do not. A cell of one seed, for each group of ``data.tasks`` that shares a pretraining
corpus (emotion4 and style15 share theirs), pretrains ``exp.pretrain`` once and then, on each task over the
same clip-grouped folds (drawn with the seed), probes the pretrained encoder and the same encoder at its
random initialisation with ``exp.protocols``, beside the reference rows (hand-crafted gait features, the
majority class, and the supervised model on ``exp.supervised_tasks``)::

    {"rows": {row: {task: {probe: {"top1", "balanced", "clip_top1"}}}}, "health": ..., "seconds": ...,
     "predictions": {row: {task: {probe: [[class of window 0, 1, ...] per repeat]}}},
     "windows": {task: {"labels": [...], "clips": [...]}}}

``predictions`` hold, per row, task and probe, the predicted class of every task window (each window is in
exactly one test fold of a repeat; one vector per repeat), and ``windows`` the windows' labels and clip ids
(``task.y``, ``task.groups``) once per task: what the clip-level paired bootstrap
(``cagelib.evaluate.compare.bootstrap_difference``) needs.

Probes: ``linear`` gives "linear" (raw features) and "linear (z)" (z-scored with the training side's
statistics), ``knn`` gives "k-NN", ``finetune`` gives "finetune". A reference row holds its one result
under every probe. Workers check the output folder's run token (``prepare_output``) before they write, so
a worker of an earlier run never writes into a later run's folder.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..atomic import atomic_write_text
from ..data.tasks import embedded_set, gait_task, task_family
from ..evaluate.features import ConcatenatedStreams, StreamEncoder, extract_features
from ..evaluate.handcrafted import gait_features, handcrafted_probe
from ..evaluate.metrics import majority_result, prediction_result
from ..evaluate.protocols import evaluate_folds
from ..evaluate.step_features import step_features
from ..evaluate.supervised import supervised_reference
from ..experiment import Experiment
from ..methods.encoders import AGCN
from ..errors import CheckpointError
from ..pretrain import checkpoint
from ..pretrain.config import build_model
from ..pretrain.loop import pretrain

METRICS = (("top1", "top-1"), ("balanced", "balanced"), ("clip_top1", "clip"))
HANDCRAFTED, MAJORITY, SUPERVISED_ROW = "hand-crafted, logistic regression", "majority class", "supervised (from scratch)"
STEP_ROW = "STEP features, logistic regression"  # STEP's 175 per-frame values, mean and std (evaluate.step_features)
REFERENCE_ROWS = (HANDCRAFTED, STEP_ROW, MAJORITY)  # what a controls cell holds (its key names them)
PARTS = ("all", "method", "controls", "supervised")  # run_cell's part


def fold_means(results) -> dict:
    """Mean over folds of each metric: ``{"top1": ..., "balanced": ..., "clip_top1": ...}``."""
    return {key: float(np.mean([getattr(r, key) for r in results])) for key, _ in METRICS}


def window_predictions(results, folds, n_windows: int) -> list[list[int]]:
    """Per fold repeat, the predicted class of each of the task's ``n_windows`` windows: ``results[i]`` (an
    ``EvalResult`` with ``predictions``) belongs to ``folds[i] = (train, test)``. A repeat is a run of folds
    whose test sides partition the windows (``repeated_grouped_kfold``: every window in exactly one test fold
    per repeat); a fold whose test windows were already predicted starts the next repeat. Raises
    ``ValueError`` if a repeat leaves a window unpredicted or a result holds no predictions."""
    if len(results) != len(folds):
        raise ValueError(f"window_predictions: {len(results)} results for {len(folds)} folds")
    repeats, current = [], None
    for i, (result, (_, test)) in enumerate(zip(results, folds)):
        test = np.asarray(test, dtype=np.int64)
        if result.predictions is None or len(result.predictions) != len(test):
            raise ValueError(f"window_predictions: fold {i}'s result holds no predictions of its {len(test)} test "
                             "windows")
        if current is None or (current[test] >= 0).any():
            current = np.full(n_windows, -1, dtype=np.int64)
            repeats.append(current)
        current[test] = result.predictions
    for r, vector in enumerate(repeats):
        if (vector < 0).any():
            raise ValueError(f"window_predictions: repeat {r} leaves {int((vector < 0).sum())} of {n_windows} "
                             "windows out of every test fold")
    return [vector.tolist() for vector in repeats]


def window_labels(task) -> dict:
    """``{"labels": [...], "clips": [...]}``: the class and the clip of each task window, as lists of ints."""
    return {"labels": np.asarray(task.y, dtype=np.int64).tolist(),
            "clips": np.asarray(task.groups, dtype=np.int64).tolist()}


def corpus_groups(tasks, gs) -> list[list[str]]:
    """``tasks`` grouped by their pretraining corpus: the tasks of one family share one corpus (the clips
    outside the family), so one pretraining serves them all (emotion4 and style15: one group)."""
    by_corpus: dict[str, list[str]] = {}
    for task in tasks:
        by_corpus.setdefault(str(sorted(task_family(task, gs).tolist())), []).append(task)
    return list(by_corpus.values())


def health_labels(task) -> tuple:
    """The labelled windows of the health monitor's k-NN (``cagelib.pretrain.health``): the TRAINING side
    of fold 0 of the task's folds, ``(x, y, groups)``; its test side is never seen during pretraining."""
    train, _ = task.folds()[0]
    return task.x[train], task.y[train], task.groups[train]


def probe_rows(encoder, task, folds, exp: Experiment, seed: int, protocols=None) -> dict:
    """Probe name -> fold means of one encoder of Cartesian windows (a ``StreamEncoder``): ``probe_results``."""
    return {probe: fold_means(results) for probe, results in probe_results(encoder, task, folds, exp, seed,
                                                                            protocols).items()}


def probe_results(encoder, task, folds, exp: Experiment, seed: int, protocols=None) -> dict:
    """Probe name -> the ``EvalResult`` of each fold, of one encoder of Cartesian windows (a ``StreamEncoder``).
    Features are extracted once for the feature probes (eval mode: the same as per fold)."""
    protocols = exp.protocols if protocols is None else protocols
    linear = exp.eval_config("linear", seed)
    features = extract_features(encoder.eval(), task.x, linear.eval_batch_size, linear.device)  # (n, F)
    on_features = replace(task, x=features)
    out = {}
    if "linear" in protocols:
        out["linear"] = evaluate_folds(None, on_features, folds, "linear", linear)
        out["linear (z)"] = evaluate_folds(None, on_features, folds, "linear", replace(linear, standardize_features=True))
    if "knn" in protocols:
        out["k-NN"] = evaluate_folds(None, on_features, folds, "knn", exp.eval_config("knn", seed))
    if "finetune" in protocols:
        out["finetune"] = evaluate_folds(encoder, task, folds, "finetune", exp.eval_config("finetune", seed))
    return out


def supervised_rows(exp: Experiment, task, folds, seed: int, model_config) -> list:
    """The supervised reference (``exp.supervised``) per fold: the same A-GCN (``model_config``) trained from
    scratch on each fold's training windows."""
    recipe = exp.eval_config("supervised", seed)
    return [supervised_reference(lambda: AGCN(model_config), task.x[train], task.y[train], task.x[test],
                                 task.y[test], recipe, label_names=task.label_names, test_groups=task.groups[test])
            for train, test in folds]


def reference_rows(exp: Experiment, task, folds, seed: int, model_config, supervised: bool) -> dict:
    """Row -> fold means of the hand-crafted features, the majority class and (``supervised``) the supervised
    reference, over ``folds``: ``reference_results``."""
    return {row: fold_means(results) for row, results in reference_results(exp, task, folds, seed, model_config,
                                                                            supervised).items()}


def reference_results(exp: Experiment, task, folds, seed: int, model_config, supervised: bool) -> dict:
    """Row -> the ``EvalResult`` of each fold of the hand-crafted features (the package's 62 and STEP's 175 per
    frame, each with a logistic regression), the majority class and
    (``supervised``) the supervised reference, over ``folds``."""
    rows = {HANDCRAFTED: [], STEP_ROW: [], MAJORITY: []}
    features = {HANDCRAFTED: gait_features(task.x_first_frame, task.fps, task.lengths),  # (n, 62)
                STEP_ROW: step_features(task.x_first_frame, task.lengths)}  # (n, 350)
    for train, test in folds:
        for row, f in features.items():
            predicted = handcrafted_probe(f[train], task.y[train], f[test], seed=seed, train_groups=task.groups[train])
            rows[row].append(prediction_result("handcrafted", task.y[test], predicted, task.label_names,
                                               task.groups[test]))
        rows[MAJORITY].append(majority_result(task.y[train], task.y[test], task.label_names, task.groups[test]))
    if supervised:
        rows[SUPERVISED_ROW] = supervised_rows(exp, task, folds, seed, model_config)
    return rows


def run_cell(exp: Experiment, seed: int, part: str = "all", run_dir=None, token: str | None = None) -> dict:
    """One seed of ``exp`` (module docstring). ``part``: "all" (pretrained and random-init rows of every
    stream, and the reference rows: the demo), "method" (the first stream only, with a random-init row only
    when its encoder is not the A-GCN: a peer-grid cell; with ``exp.stream == "each"`` also the method's other
    streams and all its streams concatenated, rows "pretrained (<stream>)" and "pretrained (both)"), "controls" (the A-GCN at random init and the
    reference rows but the supervised one), "supervised" (the supervised reference alone). ``run_dir(group)``:
    the run folder of a corpus group (default ``exp.run_folder("seed<s>", "pretrain_<tasks>")``); a run there
    with these settings on these data is continued (finished: only the probes run), any other is replaced. ``token``: the output folder's run token, checked first. Besides
    the fold means, the cell holds every row's window predictions and the tasks' labels and clips
    (module docstring)."""
    if part not in PARTS:
        raise ValueError(f"run_cell: part must be one of {PARTS}, got {part!r}")
    torch.set_num_threads(1)
    threadpool_limits(1)  # and one BLAS thread: the probes' scikit-learn fits, beside other cells on the cores
    started, gs = time.time(), embedded_set()
    cell = {"rows": {}, "health": {}, "pretrain_seconds": {}, "steps": {}, "torch": torch.__version__,
            "predictions": {}, "windows": {}}
    run_dir = run_dir or (lambda group: exp.run_folder(f"seed{seed}", f"pretrain_{'+'.join(group)}"))
    for group in corpus_groups(exp.data.tasks, gs):
        built = {t: gait_task(exp.data, gs, t) for t in group}
        folds = {t: task.folds(exp.folds, exp.repeats, seed) for t, task in built.items()}
        config = exp.pretrain_config(seed, run_dir(group))
        random_init = build_model(config)  # the weights the pretraining starts from
        rows = {}  # row -> task -> probe -> the fold results
        if part in ("all", "method"):
            check_output(exp.out, token)
            first, key = built[group[0]], "+".join(group)
            t0 = time.time()
            result, reused = _pretrain_or_reuse(config, first.pretrain_x, health_labels(first))
            seconds = sum(h["seconds"] for h in result.history) if reused else time.time() - t0
            cell["pretrain_seconds"][key], cell["health"][key] = seconds, {
                "init": result.health_init, "final": result.history[-1]}
            cell.setdefault("reused", {})[key] = reused
            cell["steps"][key] = config.epochs * (len(first.pretrain_x) // config.batch_size)
            streams = list(result.model.encoders())
            for stream in streams if part == "all" else streams[:1]:
                suffix = f" ({stream})" if part == "all" and len(streams) > 1 else ""
                pretrained, initial = StreamEncoder(result.model, stream), StreamEncoder(random_init, stream)
                cell.update(stream=pretrained.stream, encoder=type(pretrained.encoder).__name__)
                rows["pretrained" + suffix] = {t: probe_results(pretrained, built[t], folds[t], exp, seed)
                                               for t in group}
                if part == "all" or not isinstance(initial.encoder, AGCN):
                    own = (exp.protocols if part == "all" else tuple(p for p in exp.protocols if p != "finetune"))
                    rows["random init" + suffix] = {t: probe_results(initial, built[t], folds[t], exp, seed, own)
                                                    for t in group}
            if part == "method" and exp.stream == "each" and len(streams) > 1:  # every stream, and all of them
                for stream, encoder in [(s, StreamEncoder(result.model, s)) for s in streams[1:]] + [
                        ("both", ConcatenatedStreams(result.model))]:
                    rows[f"pretrained ({stream})"] = {t: probe_results(encoder, built[t], folds[t], exp, seed)
                                                      for t in group}
        if part == "controls":
            initial = StreamEncoder(random_init)  # the A-GCN at the seed's initialisation
            rows["random init"] = {t: probe_results(initial, built[t], folds[t], exp, seed) for t in group}
        if part in ("all", "controls", "supervised"):
            for t in group:
                supervised = t in exp.supervised_tasks and part != "controls"
                refs = reference_results(exp, built[t], folds[t], seed, config.model, supervised) \
                    if part != "supervised" else {SUPERVISED_ROW: supervised_rows(exp, built[t], folds[t], seed,
                                                                                  config.model)}
                for row, results in refs.items():  # a reference row: its one result under every probe
                    rows.setdefault(row, {})[t] = {probe: results for probe in probe_names(exp)}
        for row, per_task in rows.items():
            for t, by_probe in per_task.items():
                cell["rows"].setdefault(row, {})[t] = {p: fold_means(r) for p, r in by_probe.items()}
                vectors = {}  # a reference row's one result: its predictions once, shared by every probe
                for p, r in by_probe.items():
                    if id(r) not in vectors:
                        vectors[id(r)] = window_predictions(r, folds[t], len(built[t].y))
                    cell["predictions"].setdefault(row, {}).setdefault(t, {})[p] = vectors[id(r)]
        for t in group:
            cell["windows"][t] = window_labels(built[t])
    cell["seconds"] = time.time() - started
    return cell


def _pretrain_or_reuse(config, x, labels) -> tuple:
    """``(PretrainResult, reused)``: the run in ``config.run_dir`` continued from its checkpoint when it was
    started with these settings on these data (finished: nothing trains, a cell whose probes changed reads
    the same encoder again; interrupted: it continues exactly), else the folder replaced by a fresh run.
    ``reused``: it had finished (its pretraining time is then the sum of its epochs' times)."""
    run_dir = Path(config.run_dir)
    if (run_dir / checkpoint.CHECKPOINT).is_file():
        metrics = run_dir / checkpoint.METRICS
        finished = metrics.is_file() and len(metrics.read_text().splitlines()) >= config.epochs
        try:
            return pretrain(config, x, run_dir, resume=True, health_labels=labels), finished
        except CheckpointError:
            pass  # other settings or data: start again
    shutil.rmtree(run_dir, ignore_errors=True)
    return pretrain(config, x, run_dir, health_labels=labels), False


def probe_names(exp: Experiment) -> tuple[str, ...]:
    """The probe columns of ``exp.protocols``: linear -> "linear", "linear (z)"; knn -> "k-NN"; finetune."""
    names = {"linear": ("linear", "linear (z)"), "knn": ("k-NN",), "finetune": ("finetune",)}
    return tuple(n for p in exp.protocols for n in names.get(p, ()))


# --- output folders that a later run may replace --------------------------------------------------------------

MARKER = ".cagelib-output"  # written into every folder a job fills: a later run may replace it


class OutputReplacedError(RuntimeError):
    """The output folder now belongs to a later run: a worker of an earlier one must not write there."""


def prepare_output(path: str | Path) -> Path:
    """An empty output folder at ``path``. A folder left by an earlier run (it holds ``MARKER``) is replaced,
    and that is said in one line; any other non-empty folder is refused. ``MARKER`` holds a fresh run token
    (``output_token``): workers of an earlier run check it before they write."""
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out} exists and was not written by cagelib.lab: choose another out")
        print(f"Replacing the previous results in {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, "written by cagelib.lab; the next run with this output folder replaces it\n"
                                    f"run {uuid.uuid4().hex}\n")
    return out


def output_token(out: str | Path) -> str | None:
    """The run token in ``out``'s ``MARKER`` (None: no marker, or one written before tokens)."""
    try:
        lines = (Path(out) / MARKER).read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return next((line.split(" ", 1)[1] for line in lines if line.startswith("run ")), None)


def check_output(out: str | Path, token: str | None) -> None:
    """Raise ``OutputReplacedError`` when ``out`` no longer holds the run token ``token`` (None: no check)."""
    if token is not None and output_token(out) != token:
        raise OutputReplacedError(f"{out}: the output folder was removed or replaced by another run while this "
                                  f"worker (pid {os.getpid()}) of an earlier run was working; it stops without "
                                  "writing there")
