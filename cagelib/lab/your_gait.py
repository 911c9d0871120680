"""A new person's gait: a saved run's encoder plus a linear emotion probe -> class probabilities over time.

    python -m cagelib.lab.your_gait RUN_DIR walk.bvh [--fps 30] [--joint-map map.json] [--scale 0.01]

A recording is a BVH file (any skeleton: ``joint_map`` names the BVH joint of each of the 16 cagelib
joints, the Bandai map built in; ``scale`` turns the file's units into metres, Bandai: centimetres), a
``.npy`` array, or an array ``(T, 16, 3)`` of positions in metres, y up (``fps`` default 30, Bandai's).
It is prepared exactly as the training windows (``cagelib.data.tasks``): resampled to the run's frame
rate, cut into windows of the run's length every ``window // 4`` frames (the task stride), each centred
on its first frame's root and view-normalised, then put in the run's representation. A clip shorter
than one window gives ONE zero-padded window, as a short training clip does (the encoder sees the same
padding it was trained with); an empty clip is a ``DataFileError``.

The probe (``train_probe``) is a linear layer on the run's frozen, z-scored encoder features, fitted on
every emotion-task window (``cagelib.evaluate``: ``extract_features``, ``init_linear_head``,
``fit_classifier``); it is saved beside the run: ``probe.pt`` (weights-only tensors: weight, bias, the
features' mean and std) and ``probe.json`` (label names, representation, window, stride, fps, stream,
the pretraining epochs it was fitted on). ``predict_gait`` returns per-window probabilities ``(W, K)``,
the clip's (their mean, ``(K,)``) and the label names.

Caveat: the probe learned Bandai's four acted emotions from 28 clips whose style and performer are
confounded (SPEC); on someone else's gait its probabilities say which of those four walks the encoder
finds closest, not how that person feels.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np
import torch

from ..atomic import atomic_path, atomic_write_json
from ..data.bvh import BANDAI_JOINT_MAP, CENTIMETRES_TO_METRES, read_bvh
from ..data.gaitset import GaitSet
from ..data.tasks import TaskConfig, emotion_data, preprocess_windows
from ..data.windows import cut_windows
from ..device import resolve_device
from ..errors import CheckpointError, DataFileError, check_finite
from ..evaluate.classifier import fit_classifier, init_linear_head
from ..evaluate.features import extract_features, make_input_transform
from ..evaluate.protocols import EvalConfig
from ..representation import to_representation
from ..skeleton import NUM_JOINTS
from .evaluation import run_encoder
from .runs import load_run
from .settings import lr_milestones, read_json, resolve_path

PROBE_WEIGHTS, PROBE_FILE = "probe.pt", "probe.json"
DEFAULT_FPS = 30.0  # Bandai's frame rate: the default for arrays without one
PROBE_LR, PROBE_WEIGHT_DECAY = 0.1, 1e-3  # probabilities that are not all 0 / 1 (train_probe)


class GaitPrediction(NamedTuple):
    window_probs: np.ndarray  # float (W, K): class probabilities of each window
    clip_probs: np.ndarray  # float (K,): their mean
    label_names: tuple


@dataclass
class GaitReport:
    """A recording as the run saw it, and its probabilities."""

    positions: np.ndarray  # float32 (T, 16, 3) metres, y up, at the run's fps
    fps: float
    window_starts: np.ndarray  # int (W,) first frame of each window
    window: int  # frames per window
    prediction: GaitPrediction

    def start_seconds(self) -> np.ndarray:
        return self.window_starts / self.fps


def load_recording(recording, fps: float | None = None, joint_map: Mapping[str, str | int] = BANDAI_JOINT_MAP,
                   scale: float = CENTIMETRES_TO_METRES) -> tuple[np.ndarray, float]:
    """``(positions float32 (T, 16, 3), fps)`` of a BVH path (its own frame rate), a ``.npy`` path or an
    array (``fps``, default 30). Errors are ``DataFileError`` naming the recording and the problem."""
    if isinstance(recording, (str, os.PathLike)):
        path = Path(recording)
        if path.suffix.lower() == ".bvh":
            return read_bvh(path, joint_map, scale)
        if path.suffix.lower() != ".npy":
            raise DataFileError(path, None, "unknown recording type", "give a .bvh or .npy file")
        if not path.is_file():
            raise DataFileError(path, None, "file not found")
        source, positions = path, np.load(path, allow_pickle=False)
    else:
        source, positions = "recording", np.asarray(recording)
    if positions.ndim != 3 or positions.shape[1:] != (NUM_JOINTS, 3):
        raise DataFileError(source, None, f"positions must be (T, {NUM_JOINTS}, 3), got {positions.shape}")
    if len(positions) == 0:
        raise DataFileError(source, None, "has no frames")
    if positions.dtype.kind not in "fiu":
        raise DataFileError(source, None, f"positions must be numbers, got dtype {positions.dtype}")
    check_finite(positions, source, "frame")
    fps = DEFAULT_FPS if fps is None else float(fps)
    if not (np.isfinite(fps) and fps > 0):
        raise DataFileError(source, "fps", f"must be a finite number > 0, got {fps}")
    return positions.astype(np.float32), fps


def resample(positions: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Linear interpolation in time from ``fps`` to ``target_fps``: ``(T, V, 3)`` -> ``(T', V, 3)``."""
    if abs(fps - target_fps) < 1e-6 * target_fps or len(positions) < 2:
        return positions
    t_in = np.arange(len(positions)) / fps
    t_out = np.arange(int(np.floor(t_in[-1] * target_fps + 1e-9)) + 1) / target_fps
    flat = positions.reshape(len(positions), -1)  # (T, V*3)
    out = np.stack([np.interp(t_out, t_in, flat[:, k]) for k in range(flat.shape[1])], axis=1)  # (T', V*3)
    return out.reshape(len(t_out), *positions.shape[1:]).astype(np.float32)


def recording_windows(positions: np.ndarray, window: int, stride: int, representation: str,
                      fps: float) -> tuple[np.ndarray, np.ndarray]:
    """The training preprocessing of one clip ``(T, 16, 3)``: windows ``(W, window, 16, 3)`` in
    ``representation`` and their first frames ``(W,)`` (a clip shorter than ``window``: one padded window)."""
    clip = GaitSet([positions], np.array([-1]), (), fps=fps)
    w = cut_windows(clip, window, stride)  # x: (W, window, 16, 3)
    first = preprocess_windows(w.x, w.lengths, TaskConfig(window=window))  # first-frame centred, view-normalised
    return to_representation(first, representation, fps, w.lengths), w.start


def probe_files(run_dir) -> tuple[Path, Path]:
    run_dir = resolve_path(run_dir)
    return run_dir / PROBE_WEIGHTS, run_dir / PROBE_FILE


def train_probe(run_dir, stream: str = "auto", epochs: int = 100, lr: float = PROBE_LR,
                weight_decay: float = PROBE_WEIGHT_DECAY, seed: int = 0, device: str = "auto") -> Path:
    """Fit the linear emotion probe on the run's frozen encoder (every emotion-task window, z-scored
    features; SGD as the paper's linear protocol, but ``lr`` 0.1 and weight decay: the paper's lr 30 is
    for raw features and on z-scored ones drives every probability to 0 or 1) and save it beside the
    run; returns the path of probe.json."""
    run = load_run(run_dir)
    encoder, transform, stream = run_encoder(run.path, stream)
    config = run.task_config()
    data = emotion_data(config, (run.settings or {}).get("corpus", "other"))
    dev = resolve_device(device)
    features = extract_features(encoder.to(dev), data.x, 256, dev, make_input_transform(transform))  # (n, F)
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)  # (F,)
    z = ((features - mean) / std).to(dev)  # (n, F)
    y = torch.as_tensor(data.y, dtype=torch.long).to(dev)
    linear = EvalConfig.paper("linear", epochs=epochs, milestones=lr_milestones(epochs, (0.5, 0.7)), seed=seed,
                               lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    head = init_linear_head(z.shape[1], len(data.label_names), generator).to(dev)
    fit_classifier(head, z, y, epochs=linear.epochs, lr=linear.lr, milestones=linear.milestones,
                   gamma=linear.gamma, optimizer=linear.optimizer, momentum=linear.momentum,
                   weight_decay=linear.weight_decay, batch_size=linear.batch_size, generator=generator, device=dev)
    with torch.no_grad():
        train_top1 = float((head(z).argmax(dim=1) == y).float().mean())
    weights, info_path = probe_files(run.path)
    state = {"weight": head.weight.detach().cpu(), "bias": head.bias.detach().cpu(), "mean": mean.cpu(),
             "std": std.cpu()}
    with atomic_path(weights) as tmp:
        torch.save(state, tmp)
    atomic_write_json(info_path, {
        "label_names": list(data.label_names), "representation": config.representation, "window": config.window,
        "stride": config.stride, "fps": data.fps, "stream": stream, "input_transform": transform,
        "pretrain_epochs": len(run.history),
        "probe_epochs": epochs, "lr": lr, "weight_decay": weight_decay, "seed": seed, "train_windows": len(data.y), "train_top1": train_top1})
    return info_path


@dataclass
class Probe:
    head: torch.nn.Linear  # features (F) -> logits (K)
    mean: torch.Tensor  # (F,) feature mean of the training windows
    std: torch.Tensor  # (F,)
    info: dict  # probe.json


def load_probe(run_dir) -> Probe:
    """The saved probe of a run; a ``CheckpointError`` when it is missing, broken or older than the run."""
    weights, info_path = probe_files(run_dir)
    hint = f"fit it with cagelib.lab.your_gait.train_probe({str(resolve_path(run_dir))!r})"
    if not (weights.is_file() and info_path.is_file()):
        raise CheckpointError(resolve_path(run_dir), None, "has no emotion probe (probe.pt, probe.json)", hint)
    info = read_json(info_path)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        head = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        head.load_state_dict({"weight": state["weight"], "bias": state["bias"]})
        mean, std = state["mean"], state["std"]
    except (KeyError, RuntimeError, IndexError, AttributeError) as err:
        raise CheckpointError(weights, None, f"unreadable probe ({err})", hint) from None
    if len(info.get("label_names", [])) != head.out_features:
        raise CheckpointError(info_path, "label_names", f"{len(info.get('label_names', []))} names for "
                              f"{head.out_features} classes", hint)
    epochs = len(load_run(run_dir).history)
    if info.get("pretrain_epochs") != epochs:
        raise CheckpointError(weights, None, f"fitted on the encoder after {info.get('pretrain_epochs')} epochs, "
                              f"the run now has {epochs}", hint)
    return Probe(head.eval(), mean, std, info)


def ensure_probe(run_dir, **train_kwargs) -> Probe:
    """The run's probe, fitted first (and said so) when it is missing or older than the run."""
    try:
        return load_probe(run_dir)
    except CheckpointError as err:
        print(f"{err.problem}: fitting the emotion probe now (a linear layer on the frozen encoder)")
        train_probe(run_dir, **train_kwargs)
        return load_probe(run_dir)


def analyse_gait(run_dir, recording, fps: float | None = None,
                 joint_map: Mapping[str, str | int] = BANDAI_JOINT_MAP, scale: float = CENTIMETRES_TO_METRES,
                 device: str = "auto") -> GaitReport:
    """``predict_gait`` with the recording as prepared (positions at the run's fps, window starts)."""
    probe = load_probe(run_dir)
    info = probe.info
    positions, rec_fps = load_recording(recording, fps, joint_map, scale)
    positions = resample(positions, rec_fps, float(info["fps"]))
    x, starts = recording_windows(positions, int(info["window"]), int(info["stride"]), info["representation"],
                                  float(info["fps"]))  # (W, window, 16, 3)
    encoder, _, _ = run_encoder(run_dir, info["stream"])
    dev = resolve_device(device)
    transform = make_input_transform(info["input_transform"])
    features = extract_features(encoder.to(dev), x, 256, dev, transform)  # (W, F)
    with torch.no_grad():
        logits = probe.head((features - probe.mean) / probe.std)  # (W, K)
        window_probs = torch.softmax(logits.double(), dim=1).numpy()
    prediction = GaitPrediction(window_probs, window_probs.mean(axis=0), tuple(info["label_names"]))
    return GaitReport(positions, float(info["fps"]), starts, int(info["window"]), prediction)


def predict_gait(run_dir, recording, fps: float | None = None,
                 joint_map: Mapping[str, str | int] = BANDAI_JOINT_MAP, scale: float = CENTIMETRES_TO_METRES,
                 device: str = "auto") -> GaitPrediction:
    """``(window_probs (W, K), clip_probs (K,), label_names)`` of a recording (module docstring) from the
    run's encoder and its saved probe (``train_probe`` first)."""
    return analyse_gait(run_dir, recording, fps, joint_map, scale, device).prediction


def probabilities_table(report: GaitReport) -> str:
    """Plain-text table: window start (s), top class, each class's probability; then the clip's."""
    names = report.prediction.label_names
    width = max(8, *(len(n) for n in names))
    head = f"{'start (s)':>9}  {'top class':<{width}}" + "".join(f"  {n:>{width}}" for n in names)
    rows = [head, "-" * len(head)]
    for start, p in zip(report.start_seconds(), report.prediction.window_probs):
        rows.append(f"{start:>9.2f}  {names[int(p.argmax())]:<{width}}" + "".join(f"  {v:>{width}.3f}" for v in p))
    clip = report.prediction.clip_probs
    rows += ["-" * len(head), f"{'clip':>9}  {names[int(clip.argmax())]:<{width}}"
             + "".join(f"  {v:>{width}.3f}" for v in clip)]
    return "\n".join(rows)


def plot_probabilities(report: GaitReport, title: str = "class probabilities over time"):
    """Each class's probability per window (at the window's centre, seconds), the clip's as dashed lines."""
    import matplotlib.pyplot as plt

    pred = report.prediction
    centres = (report.window_starts + report.window / 2) / report.fps  # (W,) seconds
    figure, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
    for k, name in enumerate(pred.label_names):
        (line,) = ax.plot(centres, pred.window_probs[:, k], marker="o", label=name)
        ax.axhline(pred.clip_probs[k], color=line.get_color(), linestyle="--", linewidth=1,
                   label=f"{name} (clip mean)")
    ax.set(title=title, xlabel=f"time of the window's centre (s; windows of {report.window / report.fps:.2f} s)",
           ylabel="probability", ylim=(-0.02, 1.02))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    plt.close(figure)
    return figure


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cagelib.lab.your_gait", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a pretraining run folder (its probe is fitted first if missing)")
    parser.add_argument("recording", help="a .bvh file, or a .npy array (T, 16, 3) in metres, y up")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of a .npy recording (default 30)")
    parser.add_argument("--joint-map", default=None, help="JSON file {BVH joint: cagelib joint} (default: Bandai)")
    parser.add_argument("--scale", type=float, default=CENTIMETRES_TO_METRES, help="BVH units -> metres")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    joint_map = json.loads(Path(args.joint_map).read_text()) if args.joint_map else BANDAI_JOINT_MAP
    ensure_probe(args.run_dir, device=args.device)
    report = analyse_gait(args.run_dir, args.recording, args.fps, joint_map, args.scale, args.device)
    print(f"{args.recording}: {len(report.positions)} frames at {report.fps:g} fps, "
          f"{len(report.window_starts)} windows of {report.window} frames")
    print(probabilities_table(report))


if __name__ == "__main__":
    main()
