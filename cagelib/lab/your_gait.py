"""A new person's gait: a saved run's encoder plus a linear emotion probe -> class probabilities over time.

    python -m cagelib your-gait RUN_DIR walk.bvh [--joint-map map.json] [--scale 0.01]
    python -m cagelib your-gait RUN_DIR walk.npy [--fps 30]

``RUN_DIR`` is ONE pretraining run folder (it holds ``config.json`` and ``checkpoint.pt``), e.g.
``outputs/demo/seed0/pretrain_emotion4+style15`` after ``make demo`` or ``outputs/runs/<name>`` after
notebook 03; a folder above runs (``outputs/demo``) is refused with the run folders found below it.

A recording is a BVH file (any skeleton: ``joint_map`` names the BVH joint of each of the 16 cagelib
joints, the Bandai map built in; ``scale`` turns the file's units into metres, Bandai: centimetres), a
``.npy`` array, or an array ``(T, 16, 3)`` of positions in metres, y up (``fps`` default 30, Bandai's).
It is prepared exactly as the training windows (``cagelib.data.tasks``): resampled to the run's frame
rate, cut into windows of the run's length every ``window // 4`` frames (the task stride), each centred
on its first frame's root and view-normalised, then put in the run's representation. A clip shorter
than one window gives ONE zero-padded window, as a short training clip does (the encoder sees the same
padding it was trained with), down to ``min_frames(window)`` = half a window (16 frames of a 32-frame
window): a shorter recording (or an empty one) is a ``DataFileError`` saying the frames found and the
minimum, since a window that is mostly padding still gets confident-looking probabilities.

Frame rates: a BVH carries its own (``Frame Time``), so ``fps`` is for arrays and ``.npy`` only; giving it
with a BVH is a ``DataFileError``. A rate within ``SAME_RATE`` (1e-4, relative) of the run's is the run's
rate (``Frame Time: 0.0333333`` is 30 fps, not 30.00003: no resampling, no frame lost).

The probe (``train_probe``) is a linear layer on the run's frozen, z-scored encoder features, fitted on
every emotion-task window (``cagelib.evaluate``: ``extract_features``, ``init_linear_head``,
``fit_classifier``); it is saved beside the run: ``probe.pt`` (weights-only tensors: weight, bias, the
features' mean and std) and ``probe.json`` (label names, representation, window, stride, fps, stream,
the pretraining epochs it was fitted on, and the run it belongs to: ``run_identity``, the hash of the
run's configuration, and ``checkpoint_sha256``, the hash of the ``checkpoint.pt`` it was fitted on). A probe
of another run, or of another checkpoint of this run, is refused by ``load_probe`` and fitted again by
``ensure_probe`` (the command line). The run's ``checkpoint.pt`` must belong to its ``config.json``
(``cagelib.pretrain.config.check_same_run``). ``predict_gait`` returns per-window probabilities ``(W, K)``,
the clip's (their mean, ``(K,)``) and the label names.

Caveat: the probe learned Bandai's four acted emotions from 28 clips whose style and performer are
confounded (SPEC); on someone else's gait its probabilities say which of those four walks the encoder
finds closest, not how that person feels.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np
import torch

from ..atomic import atomic_path, atomic_write_json
from ..data.bvh import BANDAI_JOINT_MAP, CENTIMETRES_TO_METRES, read_bvh, read_joint_map
from ..data.gaitset import GaitSet
from ..data.tasks import emotion_data, preprocess_windows
from ..data.windows import cut_windows
from ..device import resolve_device
from ..errors import CagelibError, CheckpointError, DataFileError, check_finite, format_message
from ..evaluate.classifier import fit_classifier, init_linear_head
from ..evaluate.features import extract_features, make_input_transform
from ..evaluate.protocols import EvalConfig
from ..pretrain.checkpoint import CHECKPOINT, CONFIG, load_checkpoint_file
from ..pretrain.config import PretrainConfig, check_same_run, config_identity
from ..representation import to_representation
from ..skeleton import NUM_JOINTS
from .evaluation import run_encoder
from .runs import load_run
from .workbench import read_json, resolve_path

PROBE_WEIGHTS, PROBE_FILE = "probe.pt", "probe.json"
DEFAULT_FPS = 30.0  # Bandai's frame rate: the default for arrays without one
PROBE_LR, PROBE_WEIGHT_DECAY = 0.1, 1e-3  # probabilities that are not all 0 / 1 (train_probe)
SAME_RATE = 1e-4  # frame rates this close (relative) are the same rate: a BVH's rounded Frame Time


def min_frames(window: int) -> int:
    """The fewest frames (at the run's rate) a recording may have: half a window, at least 2."""
    return max(2, math.ceil(window / 2))


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
    recorded_frames: int | None = None  # frames in the recording (before resampling)
    recorded_fps: float | None = None  # its frame rate (a BVH's 1 / Frame Time)

    def start_seconds(self) -> np.ndarray:
        return self.window_starts / self.fps


def load_recording(recording, fps: float | None = None, joint_map: Mapping[str, str | int] = BANDAI_JOINT_MAP,
                   scale: float = CENTIMETRES_TO_METRES) -> tuple[np.ndarray, float]:
    """``(positions float32 (T, 16, 3), fps)`` of a BVH path (its own frame rate: ``fps`` must be None), a
    ``.npy`` path or an array (``fps``, default 30). Errors are ``DataFileError`` naming the recording and
    the problem."""
    if isinstance(recording, (str, os.PathLike)):
        path = Path(recording)
        if path.suffix.lower() == ".bvh":
            positions, file_fps = read_bvh(path, joint_map, scale)
            if fps is not None:
                raise DataFileError(path, "fps", f"a BVH file carries its own frame rate (Frame Time "
                                    f"{1.0 / file_fps:.7g} s: {file_fps:.6g} fps); the option of {fps:g} fps "
                                    "would be ignored", "leave out --fps (fps=None): it is for .npy recordings")
            return positions, file_fps
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
    """Linear interpolation in time from ``fps`` to ``target_fps``: ``(T, V, 3)`` -> ``(T', V, 3)``, the frames
    at ``0, 1 / target_fps, ...`` up to the last frame's time. Rates within ``SAME_RATE`` (relative) are the same
    rate: the frames are returned as they are (a BVH's ``Frame Time: 0.0333333`` is 30 fps)."""
    if abs(fps - target_fps) <= SAME_RATE * target_fps or len(positions) < 2:
        return positions
    t_in = np.arange(len(positions)) / fps
    last = t_in[-1] * target_fps  # the last frame's time, in output frames
    t_out = np.arange(int(np.floor(last + max(1e-9, SAME_RATE * last))) + 1) / target_fps
    t_out = np.minimum(t_out, t_in[-1])  # a frame within the tolerance of the end is the last frame
    flat = positions.reshape(len(positions), -1)  # (T, V*3)
    out = np.stack([np.interp(t_out, t_in, flat[:, k]) for k in range(flat.shape[1])], axis=1)  # (T', V*3)
    return out.reshape(len(t_out), *positions.shape[1:]).astype(np.float32)


def recording_windows(positions: np.ndarray, window: int, stride: int, representation: str,
                      fps: float) -> tuple[np.ndarray, np.ndarray]:
    """The training preprocessing of one clip ``(T, 16, 3)``: windows ``(W, window, 16, 3)`` in
    ``representation`` and their first frames ``(W,)`` (a clip shorter than ``window``: one padded window)."""
    clip = GaitSet([positions], np.array([-1]), (), fps=fps)
    w = cut_windows(clip, window, stride)  # x: (W, window, 16, 3)
    first = preprocess_windows(w.x, w.lengths)  # first-frame centred, view-normalised
    return to_representation(first, representation, fps, w.lengths), w.start


def probe_files(run_dir) -> tuple[Path, Path]:
    run_dir = resolve_path(run_dir)
    return run_dir / PROBE_WEIGHTS, run_dir / PROBE_FILE


def run_identity(run_dir) -> dict:
    """What a probe is keyed on: ``{"run_identity": the hash of the run's config.json (config_identity),
    "checkpoint_sha256": the SHA-256 of its checkpoint.pt}``; refuses a checkpoint.pt of another run
    (``check_same_run``, naming both files)."""
    run_dir = resolve_path(run_dir)
    config_path, checkpoint_path = run_dir / CONFIG, run_dir / CHECKPOINT
    if not checkpoint_path.is_file():
        raise CheckpointError(checkpoint_path, None, "not found: the run has no trained weights yet",
                              "let its pretraining finish (or resume it)")
    config = PretrainConfig.load(read_json(config_path), config_path)
    check_same_run(config_path, config, checkpoint_path, load_checkpoint_file(checkpoint_path, "cpu"))
    digest = hashlib.sha256()
    with open(checkpoint_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"run_identity": config_identity(config), "checkpoint_sha256": digest.hexdigest()}


def train_probe(run_dir, stream: str = "auto", epochs: int | None = None, lr: float = PROBE_LR,
                weight_decay: float = PROBE_WEIGHT_DECAY, seed: int = 0, device: str = "auto") -> Path:
    """Fit the linear emotion probe on the run's frozen encoder (every emotion-task window, z-scored
    features; SGD as the paper's linear protocol, but ``lr`` 0.1 and weight decay: the paper's lr 30 is
    for raw features and on z-scored ones drives every probability to 0 or 1) and save it beside the
    run; returns the path of probe.json."""
    run = load_run(run_dir)
    identity = run_identity(run.path)
    encoder, transform, stream = run_encoder(run.path, stream)
    config = run.data_config()
    data = emotion_data(config)
    dev = resolve_device(device)
    features = extract_features(encoder.to(dev), data.x, 256, dev, make_input_transform(transform))  # (n, F)
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)  # (F,)
    z = ((features - mean) / std).to(dev)  # (n, F)
    y = torch.as_tensor(data.y, dtype=torch.long).to(dev)
    epochs = epochs or EvalConfig.paper("linear").epochs  # the paper's linear probe's 100
    linear = EvalConfig.paper("linear", epochs=epochs, milestones=(0.5, 0.7), seed=seed,
                               lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    head = init_linear_head(z.shape[1], len(data.label_names), generator).to(dev)
    fit_classifier(head, z, y, epochs=linear.epochs, lr=linear.lr, milestones=linear.milestones,
                   gamma=linear.gamma, optimizer=linear.optimizer, momentum=linear.sgd_momentum,
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
        "stride": config.task_stride(data.name), "fps": data.fps, "stream": stream, "input_transform": transform,
        "pretrain_epochs": len(run.history), **identity,
        "probe_epochs": epochs, "lr": lr, "weight_decay": weight_decay, "seed": seed, "train_windows": len(data.y), "train_top1": train_top1})
    return info_path


@dataclass
class Probe:
    head: torch.nn.Linear  # features (F) -> logits (K)
    mean: torch.Tensor  # (F,) feature mean of the training windows
    std: torch.Tensor  # (F,)
    info: dict  # probe.json


def load_probe(run_dir) -> Probe:
    """The saved probe of a run; a ``CheckpointError`` when it is missing, broken, older than the run or
    fitted on another run or another checkpoint (``run_identity``)."""
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
    identity = run_identity(run_dir)
    if info.get("run_identity") != identity["run_identity"]:
        raise CheckpointError(weights, None, "fitted on another run (run identity "
                              f"{info.get('run_identity')}, this run's is {identity['run_identity']})", hint)
    if info.get("checkpoint_sha256") != identity["checkpoint_sha256"]:
        raise CheckpointError(weights, None, "fitted on another checkpoint.pt than the run's present one "
                              f"(SHA-256 {str(info.get('checkpoint_sha256'))[:12]}..., now "
                              f"{identity['checkpoint_sha256'][:12]}...)", hint)
    return Probe(head.eval(), mean, std, info)


def ensure_probe(run_dir, **train_kwargs) -> Probe:
    """The run's probe, fitted first (and said so) when it is missing, older than the run or of another
    run or checkpoint."""
    try:
        return load_probe(run_dir)
    except CheckpointError as err:
        print(f"{format_message(err.source, err.item, err.problem)}: fitting the emotion probe of "
              f"{resolve_path(run_dir)} now (a linear layer on the frozen encoder)")
        train_probe(run_dir, **train_kwargs)
        return load_probe(run_dir)


def analyse_gait(run_dir, recording, fps: float | None = None,
                 joint_map: Mapping[str, str | int] = BANDAI_JOINT_MAP, scale: float = CENTIMETRES_TO_METRES,
                 device: str = "auto") -> GaitReport:
    """``predict_gait`` with the recording as prepared (positions at the run's fps, window starts)."""
    probe = load_probe(run_dir)
    info = probe.info
    positions, rec_fps = load_recording(recording, fps, joint_map, scale)
    recorded = len(positions)
    positions = resample(positions, rec_fps, float(info["fps"]))
    minimum = min_frames(int(info["window"]))
    if len(positions) < minimum:
        at = "" if abs(rec_fps - float(info["fps"])) <= SAME_RATE * float(info["fps"]) else \
            f" ({recorded} at {rec_fps:g} fps)"
        raise DataFileError(recording if isinstance(recording, (str, os.PathLike)) else "recording", None,
                            f"too short: {len(positions)} frames at {float(info['fps']):g} fps{at}, the minimum "
                            f"is {minimum} ({minimum / float(info['fps']):.2f} s, half of the run's "
                            f"{info['window']}-frame window); a shorter recording is mostly zero padding and "
                            "its probabilities mean nothing", "record at least a few steps of walking")
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
    return GaitReport(positions, float(info["fps"]), starts, int(info["window"]), prediction, recorded, rec_fps)


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


def build_parser() -> argparse.ArgumentParser:
    """The command line's options, each with its help sentence."""
    parser = argparse.ArgumentParser(
        prog="python -m cagelib your-gait", description=__doc__.split("\n")[0],
        epilog="RUN_DIR is one pretraining run folder, the one holding config.json and checkpoint.pt, e.g. "
               "outputs/demo/seed0/pretrain_emotion4+style15 (make demo) or outputs/runs/<name> (notebook 03); "
               "given a folder above runs (outputs/demo), the command lists the run folders below it.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a pretraining run folder holding config.json and checkpoint.pt, e.g. "
                             "outputs/demo/seed0/pretrain_emotion4+style15 (its emotion probe is fitted first if "
                             "missing or stale)")
    parser.add_argument("recording", metavar="RECORDING",
                        help="a .bvh file (its own frame rate), or a .npy array (T, 16, 3) in metres, y up")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of a .npy recording (default 30); refused with a .bvh, which has its own")
    parser.add_argument("--joint-map", default=None,
                        help="JSON file {BVH joint: cagelib joint} naming the file's joints (default: Bandai's names)")
    parser.add_argument("--scale", type=float, default=CENTIMETRES_TO_METRES,
                        help=f"factor from the BVH file's units to metres (default {CENTIMETRES_TO_METRES:g}: "
                             "centimetres, as Bandai)")
    parser.add_argument("--device", default="auto",
                        help="where the encoder runs: auto (CUDA if available), cpu, cuda, cuda:1, ...")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fps is not None and Path(args.recording).suffix.lower() == ".bvh":
        parser.error(f"--fps {args.fps:g}: {args.recording} is a BVH file, which carries its own frame rate "
                     "(Frame Time); leave out --fps (it is for .npy recordings)")
    try:
        load_run(args.run_dir)  # RUN_DIR must be one run folder: else the run folders below it are listed
    except FileNotFoundError as err:
        parser.error(str(err))
    try:
        _main(args)
    except (CagelibError, FileNotFoundError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def _main(args) -> None:
    torch.set_num_threads(1)
    joint_map = read_joint_map(args.joint_map) if args.joint_map else BANDAI_JOINT_MAP
    ensure_probe(args.run_dir, device=args.device)
    report = analyse_gait(args.run_dir, args.recording, args.fps, joint_map, args.scale, args.device)
    rate = f"{report.fps:g} fps (the run's rate)"
    if len(report.positions) != report.recorded_frames:
        rate = f"{report.recorded_fps:.6g} fps, resampled to {len(report.positions)} frames at {rate}"
    print(f"{args.recording}: {report.recorded_frames} frames at {rate}, "
          f"{len(report.window_starts)} windows of {report.window} frames")
    print(probabilities_table(report))
