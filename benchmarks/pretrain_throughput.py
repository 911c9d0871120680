"""Pretraining throughput: a reference-style loop, the eager float32 step and cagelib's fast step, same model,
same configuration, interleaved in one run.

    python benchmarks/pretrain_throughput.py                          # demo settings, auto device, every method
    python benchmarks/pretrain_throughput.py --device cpu --compile   # + the bf16 + torch.compile path (minutes)
    python benchmarks/pretrain_throughput.py --device cuda --full     # the GPU target: full A-GCN, T=250, CAGE
    python benchmarks/pretrain_throughput.py --device cpu --tiny      # CI size (not a measurement)

Paths (``--paths``, comma-separated; default ``reference,eager,fast`` plus ``fast_compile`` with ``--compile``):

- ``reference``: per-sample NumPy augmentations in DataLoader workers, float32, eager, ``.to(device)`` per
  batch, ``loss.item()`` per step (``benchmarks/reference_loop.py``).
- ``eager``: the data set resident on the device, batched on-device augmentations, ``train_step`` (float32).
- ``fast``: as ``eager`` with ``cagelib.pretrain.fast.FastConfig()`` resolved for this device and a run of
  unknown length (on CPU: bf16 autocast where native, channels-last, fused graph convolution, no compile; on CUDA:
  bf16, compile, one CUDA graph per step, fused SGD).
- ``fast_compile``: ``fast`` with ``torch.compile`` forced on (its first compilation is reported as
  ``warmup_seconds``).
- ablations, each ``fast`` with one feature changed: ``fast_fp32`` (no bf16: what a CPU without native bf16
  gets), ``fast_shared_keys`` (one key pass for key and ambiguity views), ``fast_unfused`` (the A-GCN's per-subset
  loop), ``fast_plain_layout`` (no channels-last); and ``bf16`` (bf16 autocast alone, nothing else).

Timing: every path is built and warmed up first (compilation included), then ``--rounds`` rounds each run
``--round-steps`` steps of every path in turn (the order rotates every round) and the machine's own fp32 and
bf16 matmul rates (square ``--matmul-size`` matrices); a path's ms/step is the median over rounds (min and max
reported), its CPU ms/step (process CPU time, all threads) as well. ``os.getloadavg()`` is recorded every
round. Per path: ms/step, sequences/s, FLOPs per step (``torch.utils.flop_counter.FlopCounterMode``, one
eager fp32 step's forward and backward), achieved GFLOP/s, its fraction of the measured fp32 and bf16 matmul
rates (CUDA: also of the datasheet bf16 peak), peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU:
the process's resident-set high-water mark ``VmHWM`` during the path's rounds, reset through
``/proc/self/clear_refs`` before each round, and its rise over the resident set at the round's start), the
ratios to ``reference`` and ``eager``, the dtype seen inside the encoder and of the loss, and the projected
300-epoch time. Then one row per registered method (``--methods``): eager vs fast, interleaved the same way.

Writes ``<out>/pretrain_throughput_<preset>_<device>.json``; ``--profile`` adds a torch.profiler table of
the fast step (``<out>/profile_<preset>_<device>.txt``).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_loop  # noqa: E402  (benchmarks/ is not a package)

from cagelib.atomic import atomic_write_text  # noqa: E402
from cagelib.data.synthetic import load_sequences  # noqa: E402
from cagelib.device import resolve_device  # noqa: E402
from cagelib.experiment import load  # noqa: E402
from cagelib.methods.cage import CAGE  # noqa: E402
from cagelib.methods.registry import available_methods  # noqa: E402
from cagelib.pretrain.fast import FastConfig, cpu_native_bf16, make_fast_step  # noqa: E402
from cagelib.pretrain.loop import PretrainConfig, build_model, epoch_seed, make_optimization, train_step  # noqa: E402

PRESETS = {  # name -> settings; the command line overrides any of them
    "tiny": dict(model="small", frames=16, sequences=16, batch_size=8, queue_size=32, round_steps=1, rounds=2,
                 warmup=1, workers=1, data="synthetic", train_sequences=16, matmul_size=256, methods="none"),
    "demo": dict(model="small", frames=48, sequences=1024, batch_size=32, queue_size=512, round_steps=4, rounds=7,
                 warmup=3, workers=2, data="embedded", train_sequences=1024, matmul_size=1024, methods="all"),
    "full": dict(model="full", frames=250, sequences=1742, batch_size=32, queue_size=2048, round_steps=10, rounds=5,
                 warmup=10, workers=4, data="synthetic", train_sequences=1742, matmul_size=4096, methods="none"),
}
PATHS = ("reference", "eager", "fast", "fast_compile", "fast_fp32", "fast_shared_keys", "fast_unfused",
         "fast_plain_layout", "bf16")
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s; first match wins.
BF16_PEAK_TFLOPS = (("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4),
                    ("A100", 312.0), ("L40S", 362.05), ("L4", 121.0))
PROJECTION_LABEL = ("projection from measured step time: epochs x floor(train_sequences / batch) x ms_per_step "
                    "(excludes warm-up/compilation, evaluation and checkpoint I/O)")
TARGETS = {"fast_over_eager": 1.8, "fast_over_reference": 3.0, "fraction_of_bf16_matmul": 0.25}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/pretrain_throughput.py",
                                description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="CI size: tiny model and data, a few steps")
    size.add_argument("--full", action="store_true", help="target: full A-GCN, T=250, 1,742 sequences, CAGE")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--rounds", type=int, help="interleaved rounds (every path once per round)")
    p.add_argument("--round-steps", type=int, help="timed steps of a path per round")
    p.add_argument("--steps", type=int, help="alias: total timed steps per path (rounds = steps / round-steps)")
    p.add_argument("--warmup", type=int, help="untimed steps per path before the rounds (CUDA graphs add theirs)")
    p.add_argument("--batch-size", type=int, help="batch size (paper: 32)")
    p.add_argument("--frames", type=int, help="frames T per sequence (synthetic data)")
    p.add_argument("--sequences", type=int, help="sequences in the benchmark data (synthetic data)")
    p.add_argument("--data", help="synthetic | embedded (the demo corpus) | a .npy of (N, T, 16, 3)")
    p.add_argument("--method", default="cage", help="the method of the path table (default: cage)")
    p.add_argument("--methods", help="rows per method, eager vs fast: all | none | comma-separated names")
    p.add_argument("--method-rounds", type=int, default=3, help="interleaved rounds of the per-method rows")
    p.add_argument("--workers", type=int, help="DataLoader workers of the reference path")
    p.add_argument("--paths", help=f"comma-separated subset of {','.join(PATHS)}")
    p.add_argument("--compile", action="store_true", help="add the fast_compile path (first compile: minutes on CPU)")
    p.add_argument("--no-amp", action="store_true", help="fast paths without bf16 autocast")
    p.add_argument("--no-compile", action="store_true", help="fast path without torch.compile (CUDA)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="fast path without the CUDA graph")
    p.add_argument("--profile", action="store_true", help="also profile the fast step (torch.profiler)")
    p.add_argument("--matmul-size", type=int, help="n of the n x n matmul whose rate is measured")
    p.add_argument("--epochs", type=int, default=300, help="epochs of the projected run (CAGE: 300)")
    p.add_argument("--train-sequences", type=int, help="training-set size of the projected run")
    p.add_argument("--peak-tflops", type=float, help="override the device's dense bf16 datasheet peak, TFLOP/s")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the model, the synthetic data and the views (default: 0)")
    p.add_argument("--out", default="outputs/bench", help="folder of the JSON report")
    args = p.parse_args(argv)
    args.preset = "tiny" if args.tiny else "full" if args.full else "demo"
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.steps is not None:
        args.rounds = max(1, -(-args.steps // args.round_steps))
    if args.rounds < 1 or args.round_steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("need --rounds >= 1, --round-steps >= 1, --warmup >= 0, --batch-size >= 1")
    default_paths = ["reference", "eager", "fast"] + (["fast_compile"] if args.compile else [])
    args.paths = [s for s in args.paths.split(",") if s] if args.paths else default_paths
    if not args.paths or set(args.paths) - set(PATHS):
        p.error(f"--paths must name some of {PATHS}, got {args.paths}")
    names = available_methods()
    args.methods = (list(names) if args.methods == "all" else [] if args.methods == "none"
                    else [m for m in args.methods.split(",") if m])
    if set(args.methods) - set(names) or args.method not in names:
        p.error(f"methods must be registered ({', '.join(names)})")
    return args


def make_config(args, device: torch.device, method: str | None = None) -> PretrainConfig:
    """The benchmark's configuration of ``method``: the CPU notebook experiment (``load("notebook")``) with the
    preset's encoder, bank and batch, as the method trains it (``Experiment.pretrain_config``: each method's
    optimizer and own settings); health and fast off (each path sets its own ``fast``)."""
    method = method or args.method
    exp = load("notebook", {"pretrain.contrast.method": method,
                            "pretrain.model": "paper" if args.model == "full" else "small",
                            "pretrain.contrast.queue_size": args.queue_size, "pretrain.batch_size": args.batch_size,
                            "pretrain.device": str(device)}, source="pretrain_throughput")
    config = exp.pretrain_config(args.seed, "outputs/bench/unused")
    return replace(config, health=None, fast=None)


ABLATIONS = {  # path -> FastConfig fields over the fast path's (every other feature as in "fast")
    "fast_compile": dict(compile=True),
    "fast_fp32": dict(amp=False),  # what a CPU without native bf16 gets
    "fast_shared_keys": dict(shared_key_pass=True),
    "fast_unfused": dict(fused_graph_conv=False),
    "fast_plain_layout": dict(channels_last=False),
    "bf16": dict(amp=True, channels_last=False, shared_key_pass=False, fused_graph_conv=False, compile=False),
}


def fast_config(args, name: str) -> FastConfig:
    """The FastConfig of path ``name`` (``--no-*`` flags apply to every fast path)."""
    base = FastConfig(amp=False if args.no_amp else None, compile=False if args.no_compile else None,
                      cuda_graphs=not args.no_cuda_graphs)
    overrides = dict(ABLATIONS.get(name, {}))
    if args.no_amp:
        overrides["amp"] = False
    return replace(base, **overrides)


def load_data(args) -> np.ndarray:
    spec = f"synthetic:{args.sequences},{args.frames}" if args.data == "synthetic" else args.data
    data = load_sequences(spec, args.seed)
    if len(data) < args.batch_size:
        raise SystemExit(f"the data hold {len(data)} sequences, fewer than one batch of {args.batch_size}")
    return data


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads)"


def cpu_features() -> dict:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_native_bf16(),
            **{flag: flag in flags for flag in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}}


def datasheet_bf16_peak(device: torch.device, name: str, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(dtype: torch.dtype, n: int, device: torch.device, seconds: float = 0.3) -> float:
    """The rate of an ``n x n`` matmul in ``dtype`` on ``device``, GFLOP/s (best of a few short trials)."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    synchronize(device)
    began, best = time.perf_counter(), 0.0
    while time.perf_counter() - began < seconds or best == 0.0:
        reps, t = 0, time.perf_counter()
        while reps == 0 or time.perf_counter() - t < seconds / 4:
            torch.mm(a, b, out=out)
            reps += 1
        synchronize(device)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9)
    return best


class Memory:
    """Peak memory of a path's rounds: CUDA ``max_memory_allocated``; CPU the process's VmHWM (reset through
    ``/proc/self/clear_refs``; without it ``ru_maxrss``, the process lifetime's peak)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.resettable = device.type == "cpu" and _reset_hwm()

    def start(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return int(torch.cuda.memory_allocated(self.device))
        if self.resettable:
            _trim_heap()  # return freed heap pages, so that the round's rise counts the step's own working memory
            _reset_hwm()
        return _status_kib("VmRSS") * 1024

    def peak(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.resettable:
            return _status_kib("VmHWM") * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated during the path's rounds"
        if self.resettable:
            return ("host resident-set high-water mark (VmHWM) of the process during the path's rounds, reset "
                    "via /proc/self/clear_refs before each round (includes every path's resident model and data; "
                    "peak_memory_rise_bytes: its rise over VmRSS at the round's start = the step's working memory)")
        return "host max RSS of the process so far (ru_maxrss; not resettable here)"


def _trim_heap() -> None:
    """glibc ``malloc_trim(0)``: give freed heap memory back to the OS (no-op where libc is not glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmHWM") > 0
    except OSError:
        return False


def _status_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def count_flops(config: PretrainConfig, data: torch.Tensor, device: torch.device) -> int:
    """FLOPs of one training step's forward and backward (fresh eager float32 model; optimizer not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(config).to(device).train()
    generator = torch.Generator(device=device).manual_seed(config.seed)
    ids = torch.arange(config.batch_size, device=device)
    with FlopCounterMode(display=False) as counter:
        out = model(data[ids], generator, ids)
        out["loss"].backward()
    return int(counter.get_total_flops())


def batches(data: torch.Tensor, batch_size: int, seed: int):
    """The global batches of ``cagelib.pretrain.loop.pretrain``, epoch after epoch: ``(ids, batch)`` on the device."""
    epoch = 0
    while True:
        shuffle = torch.Generator(device=data.device).manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(data.shape[0], generator=shuffle, device=data.device)  # (N,)
        for step in range(data.shape[0] // batch_size):
            ids = order[step * batch_size:(step + 1) * batch_size]  # (B,)
            yield ids, data[ids]
        epoch += 1


def _watch_dtypes(model: nn.Module, seen: dict) -> None:
    """Record the output dtype of the convolution / linear layers inside the encoders (``seen["encoder"]``)."""
    encoders = model.encoders().values() if hasattr(model, "encoders") else [model]
    for encoder in encoders:
        for layer in (m for m in encoder.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
            layer.register_forward_hook(lambda module, inputs, output: seen.__setitem__("encoder", str(output.dtype)))


class Path_:
    """One timed path: ``step()`` trains one step (no host sync except the reference's ``.item()``)."""

    def __init__(self, name: str, config: PretrainConfig, data: torch.Tensor, data_np: np.ndarray,
                 device: torch.device, fast: FastConfig | None, workers: int = 0):
        self.name, self.device, self.fast = name, device, fast
        self.model = build_model(config).to(device)
        self.optimizer = make_optimization(replace(config, fast=fast), self.model, device)[0]
        self.seen: dict = {}
        _watch_dtypes(self.model, self.seen)
        self.loss_sum = torch.zeros((), device=device)
        self.steps_done = 0
        self.active = None
        if name == "reference":
            loader = reference_loop.make_loader(data_np, config.contrast, config.batch_size, workers, config.seed)
            self.trainer = reference_loop.ReferenceTrainer(self.model, self.optimizer, loader, device)
            self.workers = workers
            return
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.stream = batches(data, config.batch_size, config.seed)
        if fast is None:
            self.fn = lambda batch, ids: train_step(self.model, self.optimizer, batch, self.generator, ids)
        else:
            fast_step = make_fast_step(self.model, self.optimizer, fast, device)
            self.active, self.captures = fast_step.active, lambda: fast_step.captures
            self.fn = lambda batch, ids: fast_step(batch, self.generator, ids)
        self.model.train()

    def step(self) -> None:
        if self.name == "reference":
            self.loss_sum += self.trainer.step()
            self.seen["loss"] = "torch.float32"  # .item() of the model's float32 loss
        else:
            ids, batch = next(self.stream)
            out = self.fn(batch, ids)
            self.loss_sum += out["loss"]
            self.seen["loss"] = str(out["loss"].dtype)
        self.steps_done += 1


def time_paths(paths: dict[str, Path_], rounds: int, round_steps: int, device: torch.device,
               matmul_size: int | None, memory: Memory | None, label: str) -> dict:
    """Interleave ``rounds`` rounds of ``round_steps`` steps of every path (rotating the order) and, once per
    round, the fp32 and bf16 matmul rates; returns per-path samples and the rates and load averages."""
    names = list(paths)
    samples = {name: {"ms": [], "cpu_ms": [], "peak": [], "rise": []} for name in names}
    rates = {"fp32": [], "bf16": []}
    loads = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            base = memory.start() if memory is not None else 0
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(round_steps):
                paths[name].step()
            synchronize(device)
            samples[name]["ms"].append(1000 * (time.perf_counter() - wall) / round_steps)
            samples[name]["cpu_ms"].append(1000 * (time.process_time() - cpu) / round_steps)
            if memory is not None:
                peak = memory.peak()
                samples[name]["peak"].append(peak)
                samples[name]["rise"].append(max(0, peak - base))
        if matmul_size:
            rates["fp32"].append(matmul_gflops(torch.float32, matmul_size, device))
            rates["bf16"].append(matmul_gflops(torch.bfloat16, matmul_size, device))
        loads.append(list(os.getloadavg()))
        summary = " ".join(f"{n} {samples[n]['ms'][-1]:.1f}" for n in names)
        print(f"  [{label}] round {r + 1}/{rounds}: ms/step {summary}; load {loads[-1][0]:.2f}", flush=True)
    return {"samples": samples, "rates": rates, "loads": loads}


def warm_up(path: Path_, steps: int) -> float:
    began = time.perf_counter()
    for _ in range(steps):
        path.step()
    synchronize(path.device)
    return time.perf_counter() - began


def summarise_path(path: Path_, samples: dict, flops: int, batch_size: int, rates: dict, datasheet: float | None,
                   train_sequences: int, epochs: int, warmup_seconds: float, warmup_steps: int) -> dict:
    ms = statistics.median(samples["ms"])
    gflops = flops / ms / 1e6
    steps_per_epoch = train_sequences // batch_size
    seconds = epochs * steps_per_epoch * ms / 1000
    result = {"ms_per_step": ms, "ms_per_step_min": min(samples["ms"]), "ms_per_step_max": max(samples["ms"]),
              "ms_per_step_rounds": samples["ms"], "cpu_ms_per_step": statistics.median(samples["cpu_ms"]),
              "sequences_per_second": 1000 * batch_size / ms, "achieved_gflops": gflops,
              "achieved_tflops": gflops / 1000,
              "fraction_of_fp32_matmul": gflops / rates["fp32"] if rates.get("fp32") else None,
              "fraction_of_bf16_matmul": gflops / rates["bf16"] if rates.get("bf16") else None,
              "fraction_of_bf16_peak": gflops / 1000 / datasheet if datasheet else None,
              "warmup_seconds": warmup_seconds, "warmup_steps": warmup_steps,
              "mean_loss": float(path.loss_sum / max(path.steps_done, 1)),
              "encoder_dtype": path.seen.get("encoder"), "loss_dtype": path.seen.get("loss"),
              "fast_config": path.fast.to_dict() if path.fast is not None else None, "active": path.active,
              "projection": {"label": PROJECTION_LABEL, "epochs": epochs, "train_sequences": train_sequences,
                             "steps_per_epoch": steps_per_epoch, "seconds": seconds, "minutes": seconds / 60}}
    if samples["peak"]:
        result["peak_memory_bytes"] = max(samples["peak"])
        result["peak_memory_rise_bytes"] = max(samples["rise"])
    if path.name == "reference":
        result["workers"] = path.workers
    if path.active is not None and path.active.get("cuda_graphs"):
        result["graph_captures"] = path.captures()
    return result


def bench_paths(args, config: PretrainConfig, data: torch.Tensor, data_np: np.ndarray, device: torch.device,
                flops: int, datasheet: float | None) -> tuple[dict, dict]:
    memory = Memory(device)
    paths, warm = {}, {}
    for name in args.paths:
        fast = None if name in ("reference", "eager") else fast_config(args, name)
        path = Path_(name, config, data, data_np, device, fast, args.workers)
        warmup = args.warmup
        if path.active is not None and path.active["cuda_graphs"]:
            warmup = max(warmup, fast.warmup_steps + 2)  # eager warm-up, the capture, one replay
        warm[name] = (warm_up(path, warmup), warmup)
        print(f"  built and warmed up {name} ({warm[name][0]:.1f} s, {warmup} steps)", flush=True)
        paths[name] = path
    timed = time_paths(paths, args.rounds, args.round_steps, device, args.matmul_size, memory, "paths")
    rates = {k: statistics.median(v) if v else None for k, v in timed["rates"].items()}
    results = {name: summarise_path(path, timed["samples"][name], flops, args.batch_size, rates, datasheet,
                                    args.train_sequences, args.epochs, *warm[name]) for name, path in paths.items()}
    for result in results.values():
        if not memory.resettable and device.type == "cpu":
            result.pop("peak_memory_rise_bytes", None)
        result["peak_memory_kind"] = memory.kind
        for base in ("reference", "eager"):
            if base in results:
                result[f"ratio_to_{base}"] = results[base]["ms_per_step"] / result["ms_per_step"]
    matmul = {"size": args.matmul_size, "fp32_gflops": rates["fp32"], "bf16_gflops": rates["bf16"],
              "fp32_gflops_rounds": timed["rates"]["fp32"], "bf16_gflops_rounds": timed["rates"]["bf16"],
              "method": "best of short trials of torch.mm(out=) on n x n matrices, median over rounds"}
    return results, {"matmul": matmul, "load_average_per_round": timed["loads"]}


def bench_methods(args, data: torch.Tensor, device: torch.device, matmul: dict | None = None) -> dict:
    """Eager fp32 vs fast (FastConfig() on this device) per registered method, interleaved: ms/step,
    sequences/s, GFLOP/s and its fraction of the matmul rates measured by the paths' rounds (``matmul``), the
    step's memory. No reference-style loop per method: its NumPy workers reproduce CAGE's augmentations only."""
    rows, memory = {}, Memory(device)
    for method in args.methods:
        config = make_config(args, device, method)
        try:
            flops = count_flops(config, data, device)
            paths = {"eager": Path_("eager", config, data, None, device, None),
                     "fast": Path_("fast", config, data, None, device, fast_config(args, "fast"))}
            for path in paths.values():
                warm_up(path, max(1, min(args.warmup, 2)))
            timed = time_paths(paths, args.method_rounds, args.round_steps, device, None, memory, method)
        except Exception as error:  # noqa: BLE001 -- reported in the JSON, never hidden
            rows[method] = {"error": f"{type(error).__name__}: {error}"[:1000]}
            print(f"  {method}: failed: {rows[method]['error'][:200]}", flush=True)
            continue
        eager, fast = (statistics.median(timed["samples"][n]["ms"]) for n in ("eager", "fast"))
        rows[method] = {"flops_per_step": flops, "eager_ms_per_step": eager, "fast_ms_per_step": fast,
                        "fast_over_eager": eager / fast, "eager_gflops": flops / eager / 1e6,
                        "fast_gflops": flops / fast / 1e6, "active": paths["fast"].active,
                        "fast_encoder_dtype": paths["fast"].seen.get("encoder"),
                        "fast_loss_dtype": paths["fast"].seen.get("loss"),
                        "eager_ms_rounds": timed["samples"]["eager"]["ms"], "fast_ms_rounds": timed["samples"]["fast"]["ms"],
                        "load_average_per_round": timed["loads"], "peak_memory_kind": memory.kind}
        for name, ms in (("eager", eager), ("fast", fast)):
            rows[method][f"{name}_sequences_per_second"] = 1000 * args.batch_size / ms
            for dtype in ("fp32", "bf16"):
                rate = (matmul or {}).get(f"{dtype}_gflops")
                rows[method][f"{name}_fraction_of_{dtype}_matmul"] = flops / ms / 1e6 / rate if rate else None
            got = timed["samples"][name]
            if got["peak"]:
                rows[method][f"{name}_peak_memory_bytes"] = max(got["peak"])
                if memory.resettable or device.type != "cpu":
                    rows[method][f"{name}_peak_memory_rise_bytes"] = max(got["rise"])
        del paths
    return rows


def profile_fast(config: PretrainConfig, data: torch.Tensor, device: torch.device, fast: FastConfig, out_dir: Path,
                 tag: str, steps: int = 5) -> dict:
    """torch.profiler over ``steps`` fast steps without the CUDA graph (kernels attributed to ops)."""
    from torch.profiler import ProfilerActivity, profile

    fast = replace(fast, cuda_graphs=False)
    path = Path_("fast", config, data, None, device, fast)
    warm_up(path, 3)  # compilation, cuDNN autotuning
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            path.step()
        synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    path_txt = out_dir / f"profile_{tag}.txt"
    atomic_write_text(path_txt, table)
    time_of = (lambda e: e.device_time_total) if device.type == "cuda" else (lambda e: e.cpu_time_total)
    events = prof.key_averages()
    phases = {e.key: time_of(e) / steps / 1000 for e in events if e.key.startswith("cage.")}
    self_of = (lambda e: e.self_device_time_total) if device.type == "cuda" else (lambda e: e.self_cpu_time_total)
    total = sum(self_of(e) for e in events) / steps / 1000
    top = sorted(events, key=self_of, reverse=True)[:15]
    return {"table": str(path_txt), "steps": steps, "fast_config": fast.to_dict(), "active": path.active,
            "load_average": list(os.getloadavg()), "self_ms_per_step_total": total,
            "ms_per_step_by_phase (inclusive)": phases,
            "top_ops_self_ms_per_step": {e.key: self_of(e) / steps / 1000 for e in top}}


def inductor_cache() -> dict:
    """Where torch.compile's on-disk cache is and whether it held anything before this run (a warm cache
    turns the first compilation's minutes into much less)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        folder = Path(cache_dir())
    except Exception:  # noqa: BLE001 -- private API; report what is known
        folder = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "unknown"))
    return {"dir": str(folder), "existed_before": folder.is_dir() and any(folder.iterdir())}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def targets(paths: dict) -> dict:
    """The issue's targets for the best fast path (fast or fast_compile) against eager and reference."""
    fast = [n for n in ("fast", "fast_compile") if n in paths]
    if not fast:
        return {}
    best = min(fast, key=lambda n: paths[n]["ms_per_step"])
    values = {"fast_over_eager": paths[best].get("ratio_to_eager"),
              "fast_over_reference": paths[best].get("ratio_to_reference"),
              "fraction_of_bf16_matmul": paths[best].get("fraction_of_bf16_matmul")}
    return {"path": best, **{k: {"value": v, "target": TARGETS[k], "met": v is not None and v >= TARGETS[k]}
                             for k, v in values.items()}}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    config = make_config(args, device)
    data_np = load_data(args)
    data = torch.from_numpy(data_np).to(device)  # (N, T, V, 3) resident on the device
    name = device_name(device)
    if "reference" in args.paths and not isinstance(build_model(config), CAGE):
        raise SystemExit(f"the reference path feeds CAGE's augmentation hooks; {args.method} is not CAGE")
    print(f"pretrain throughput [{args.preset}] on {name}: {args.method}, {args.model} A-GCN, batch {args.batch_size}, "
          f"T={data.shape[1]}, {len(data)} sequences ({args.data}); {args.rounds} rounds x {args.round_steps} steps "
          f"per path, interleaved; load average {load_before[0]:.2f}", flush=True)
    flops = count_flops(config, data, device)
    datasheet = datasheet_bf16_peak(device, name, args.peak_tflops)
    report = {"benchmark": "pretrain_throughput", "preset": args.preset, "command": " ".join(sys.argv),
              "device": name, "device_type": device.type, "torch": torch.__version__, "git_commit": _git_commit(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "cpu": cpu_features() if device.type == "cpu" else None,
              "settings": {"method": args.method, "model": args.model, "model_config": asdict(config.model),
                           "batch_size": args.batch_size, "frames": int(data.shape[1]), "sequences": int(len(data)),
                           "data": args.data, "queue_size": args.queue_size, "rounds": args.rounds,
                           "round_steps": args.round_steps, "warmup": args.warmup, "seed": args.seed,
                           "torch_threads": torch.get_num_threads(), "paths": args.paths, "methods": args.methods},
              "host_load_average_1_5_15_min": {"before": list(load_before)},
              "flops_per_step": flops, "flop_counter": "torch.utils.flop_counter.FlopCounterMode, forward + backward",
              "bf16_peak_tflops": datasheet,
              "inductor_cache": inductor_cache() if "fast_compile" in args.paths else None}
    report["paths"], extra = bench_paths(args, config, data, data_np, device, flops, datasheet)
    report.update(extra)
    if {"reference", "fast"} <= set(report["paths"]):
        report["ratio_fast_over_reference"] = report["paths"]["fast"]["ratio_to_reference"]
    report["targets"] = targets(report["paths"])
    report["methods"] = bench_methods(args, data, device, report["matmul"])
    out_dir = Path(args.out)
    tag = f"{args.preset}_{device.type}"
    if args.profile:
        report["profile"] = profile_fast(config, data, device, fast_config(args, "fast"), out_dir, tag)
    report["host_load_average_1_5_15_min"]["after"] = list(os.getloadavg())  # other processes skew CPU timings
    path = out_dir / f"pretrain_throughput_{tag}.json"
    atomic_write_text(path, json.dumps(report, indent=2))
    print_report(report)
    print(f"written: {path}")
    return report


def print_report(report: dict) -> None:
    matmul = report["matmul"]
    print(f"FLOPs per step: {report['flops_per_step'] / 1e9:.2f} GFLOP; matmul {matmul['size']}^2: "
          f"fp32 {matmul['fp32_gflops'] or 0:.0f} GFLOP/s, bf16 {matmul['bf16_gflops'] or 0:.0f} GFLOP/s "
          f"(median over rounds)")
    print(f"{'path':<20} {'ms/step':>9} {'(min-max)':>15} {'seq/s':>7} {'GFLOP/s':>8} {'%fp32mm':>8} {'%bf16mm':>8} "
          f"{'peak MB':>8} {'x ref':>6} {'x eager':>7}")
    for name, r in report["paths"].items():
        pct = lambda v: f"{100 * v:.0f}%" if v is not None else "-"  # noqa: E731
        ratio = lambda k: f"{r[k]:.2f}" if k in r else "-"  # noqa: E731
        print(f"{name:<20} {r['ms_per_step']:>9.1f} {r['ms_per_step_min']:>7.0f}-{r['ms_per_step_max']:<7.0f} "
              f"{r['sequences_per_second']:>7.1f} {r['achieved_gflops']:>8.1f} {pct(r['fraction_of_fp32_matmul']):>8} "
              f"{pct(r['fraction_of_bf16_matmul']):>8} {r.get('peak_memory_bytes', 0) / 2**20:>8.0f} "
              f"{ratio('ratio_to_reference'):>6} {ratio('ratio_to_eager'):>7}")
    if "ratio_fast_over_reference" in report:
        print(f"fast / reference throughput: {report['ratio_fast_over_reference']:.2f}x")
    for key, target in report["targets"].items():
        if isinstance(target, dict):
            value = f"{target['value']:.2f}" if target["value"] is not None else "-"
            print(f"target {key} >= {target['target']}: {value} ({'met' if target['met'] else 'not met'})")
    for method, row in report["methods"].items():
        if "error" in row:
            print(f"method {method:<14} failed: {row['error'][:120]}")
        else:
            memory = "".join(f", {n} peak {row[f'{n}_peak_memory_bytes'] / 2**20:.0f} MB"
                             f" (+{row.get(f'{n}_peak_memory_rise_bytes', 0) / 2**20:.0f})"
                             for n in ("eager", "fast") if f"{n}_peak_memory_bytes" in row)
            print(f"method {method:<14} eager {row['eager_ms_per_step']:7.1f} ms  fast {row['fast_ms_per_step']:7.1f} ms  "
                  f"{row['fast_over_eager']:.2f}x  ({row['flops_per_step'] / 1e9:.2f} GFLOP/step{memory})")
    load = report["host_load_average_1_5_15_min"]
    print(f"load average (1 min) before {load['before'][0]:.2f}, after {load['after'][0]:.2f}; per round: "
          + ", ".join(f"{l[0]:.2f}" for l in report["load_average_per_round"]))
    print("projected times: " + PROJECTION_LABEL)


if __name__ == "__main__":
    main()
