"""Pretraining throughput: a reference-style loop vs cagelib's fast path, same model, same config, one run.

    python benchmarks/pretrain_throughput.py                        # demo settings (make demo), auto device
    python benchmarks/pretrain_throughput.py --device cuda --full   # the target: full A-GCN, T=250, CAGE
    python benchmarks/pretrain_throughput.py --device cpu --tiny    # CI size (not a measurement)

(a) ``reference``: per-sample NumPy augmentations in DataLoader workers, float32, eager, ``.to(device)``
    per batch, ``loss.item()`` per step (``benchmarks/reference_loop.py``).
(b) ``fast``: the data set resident on the device, batched on-device augmentations, ``cagelib.pretrain.fast``
    (bf16 autocast, torch.compile, one CUDA graph per step, fused SGD: each on CUDA only).

Prints a table and writes ``<out>/pretrain_throughput_<preset>_<device>.json``: sequences/s, ms/step,
peak memory, FLOPs per step (``torch.utils.flop_counter.FlopCounterMode``, one training step's forward
and backward), achieved TFLOP/s, fraction of the device's dense bf16 peak, the ratio fast / reference,
and the 300-epoch time *projected* from the measured step time. ``--profile`` adds a torch.profiler
table of the fast step (without the CUDA graph, so that kernels are attributed).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_loop  # noqa: E402  (benchmarks/ is not a package)

from cagelib.methods.cage import ContrastConfig  # noqa: E402
from cagelib.pretrain.fast import FastConfig, make_fast_step, optimizer_options  # noqa: E402
from cagelib.methods.encoders import AGCNConfig  # noqa: E402
from cagelib.device import resolve_device  # noqa: E402
from cagelib.data.synthetic import load_sequences  # noqa: E402
from cagelib.atomic import atomic_write_text  # noqa: E402
from cagelib.pretrain.loop import PretrainConfig, build_model, epoch_seed  # noqa: E402

PRESETS = {  # name -> settings; the command line overrides any of them
    "tiny": dict(model="small", frames=16, sequences=16, batch_size=8, queue_size=32, steps=2, warmup=1,
                 workers=1, data="synthetic", train_sequences=16),
    "demo": dict(model="small", frames=48, sequences=1024, batch_size=32, queue_size=512, steps=20, warmup=3,
                 workers=2, data="embedded", train_sequences=1024),
    "full": dict(model="full", frames=250, sequences=1742, batch_size=32, queue_size=2048, steps=50, warmup=10,
                 workers=4, data="synthetic", train_sequences=1742),
}
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s; first match wins.
BF16_PEAK_TFLOPS = (("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4),
                    ("A100", 312.0), ("L40S", 362.05), ("L4", 121.0))
PROJECTION_LABEL = ("projection from measured step time: epochs x floor(train_sequences / batch) x ms_per_step "
                    "(excludes warm-up/compilation, evaluation and checkpoint I/O)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="CI size: tiny model and data, 2 steps")
    size.add_argument("--full", action="store_true", help="target: full A-GCN, T=250, 1,742 sequences, CAGE")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--steps", type=int, help="timed steps per path")
    p.add_argument("--warmup", type=int, help="untimed steps before timing (the fast path adds capture steps)")
    p.add_argument("--batch-size", type=int, help="batch size (paper: 32)")
    p.add_argument("--frames", type=int, help="frames T per sequence (synthetic data)")
    p.add_argument("--sequences", type=int, help="sequences in the benchmark data (synthetic data)")
    p.add_argument("--data", help="synthetic | embedded (the demo corpus) | a .npy of (N, T, 16, 3)")
    p.add_argument("--method", default="cage", help="ContrastConfig preset (default: cage, both streams)")
    p.add_argument("--workers", type=int, help="DataLoader workers of the reference path")
    p.add_argument("--paths", default="reference,fast", help="comma-separated subset of reference,fast")
    p.add_argument("--no-amp", action="store_true", help="fast path without bf16 autocast")
    p.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    p.add_argument("--no-cuda-graphs", action="store_true", help="fast path without the CUDA graph")
    p.add_argument("--profile", action="store_true", help="also profile the fast step (torch.profiler)")
    p.add_argument("--epochs", type=int, default=300, help="epochs of the projected run (CAGE: 300)")
    p.add_argument("--train-sequences", type=int, help="training-set size of the projected run")
    p.add_argument("--peak-tflops", type=float, help="override the device's dense bf16 peak, TFLOP/s")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/bench", help="folder of the JSON report")
    args = p.parse_args(argv)
    args.preset = "tiny" if args.tiny else "full" if args.full else "demo"
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("need --steps >= 1, --warmup >= 0, --batch-size >= 1")
    args.paths = [s for s in args.paths.split(",") if s]
    if not args.paths or set(args.paths) - {"reference", "fast"}:
        p.error(f"--paths must name reference and/or fast, got {args.paths}")
    return args


def make_config(args, device: torch.device) -> PretrainConfig:
    model = AGCNConfig() if args.model == "full" else AGCNConfig.small()
    contrast = ContrastConfig.preset(args.method, queue_size=args.queue_size)
    return PretrainConfig(batch_size=args.batch_size, seed=args.seed, device=str(device), model=model,
                          contrast=contrast, progress=False)


def make_fast_config(args) -> FastConfig:
    return FastConfig(amp=not args.no_amp, compile=not args.no_compile, cuda_graphs=not args.no_cuda_graphs)


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


def bf16_peak(device: torch.device, name: str, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_memory_kind": "torch.cuda.max_memory_allocated during this path"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"peak_memory_bytes": int(rss),
            "peak_memory_kind": "host max RSS of the main process so far (ru_maxrss; workers not included)"}


def count_flops(config: PretrainConfig, data: torch.Tensor, device: torch.device) -> int:
    """FLOPs of one training step's forward and backward (fresh eager float32 model; SGD not counted)."""
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


def bench_fast(config: PretrainConfig, data: torch.Tensor, device: torch.device, fast: FastConfig,
               steps: int, warmup: int) -> dict:
    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.sgd_momentum,
                                weight_decay=config.weight_decay, **optimizer_options(fast, device))
    step = make_fast_step(model, optimizer, fast, device)
    if step.active["cuda_graphs"]:
        warmup = max(warmup, fast.warmup_steps + 2)  # eager warm-up, the capture, one replay
    generator = torch.Generator(device=device).manual_seed(config.seed)
    stream = batches(data, config.batch_size, config.seed)
    model.train()
    began = time.perf_counter()
    for _ in range(warmup):
        ids, batch = next(stream)
        step(batch, generator, ids)
    synchronize(device)
    timed_from = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    for _ in range(steps):
        ids, batch = next(stream)
        loss_sum += step(batch, generator, ids)["loss"]  # no host sync inside the loop
    synchronize(device)
    end = time.perf_counter()
    return {"seconds": end - timed_from, "warmup_seconds": timed_from - began, "warmup_steps": warmup,
            "mean_loss": (loss_sum / steps).item(), "fast_config": fast.to_dict(), "active": step.active,
            "graph_captures": step.captures}


def bench_reference(config: PretrainConfig, data: np.ndarray, device: torch.device, workers: int,
                    steps: int, warmup: int) -> dict:
    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.sgd_momentum,
                                weight_decay=config.weight_decay)
    loader = reference_loop.make_loader(data, config.contrast, config.batch_size, workers, config.seed)
    result = reference_loop.run_reference(model, optimizer, loader, device, steps, warmup)
    losses = result.pop("losses")
    return {**result, "warmup_steps": warmup, "mean_loss": float(np.mean(losses[warmup:])), "workers": workers}


def fast_with_fallbacks(config, data, device, fast: FastConfig, steps, warmup) -> dict:
    """Run the fast path; if a CUDA feature fails, record why and retry without it (graphs, then compile)."""
    attempts = [fast, replace(fast, cuda_graphs=False), replace(fast, cuda_graphs=False, compile=False)]
    failures, tried = [], []
    for attempt in attempts:
        if attempt in tried:
            continue
        tried.append(attempt)
        try:
            reset_peak_memory(device)
            result = bench_fast(config, data, device, attempt, steps, warmup)
            return {**result, **peak_memory(device), "failed_attempts": failures}
        except Exception as error:  # noqa: BLE001 -- reported in the JSON, never hidden
            failures.append({"fast_config": attempt.to_dict(), "error": f"{type(error).__name__}: {error}"[:2000]})
            print(f"fast path failed with {attempt}: {failures[-1]['error'][:300]}; retrying", file=sys.stderr)
            torch._dynamo.reset()
    raise RuntimeError(f"every fast-path configuration failed: {failures}")


def profile_fast(config, data, device, fast: FastConfig, out_dir: Path, tag: str, steps: int = 5) -> dict:
    """torch.profiler over ``steps`` fast steps without the CUDA graph (kernels attributed to ops)."""
    from torch.profiler import ProfilerActivity, profile

    fast = replace(fast, cuda_graphs=False)
    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.sgd_momentum,
                                weight_decay=config.weight_decay, **optimizer_options(fast, device))
    step = make_fast_step(model, optimizer, fast, device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    stream = batches(data, config.batch_size, config.seed)
    for _ in range(3):  # warm-up (compilation, cuDNN autotuning)
        ids, batch = next(stream)
        step(batch, generator, ids)
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            ids, batch = next(stream)
            step(batch, generator, ids)
        synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    path = out_dir / f"profile_{tag}.txt"
    atomic_write_text(path, table)
    time_of = (lambda e: e.device_time_total) if device.type == "cuda" else (lambda e: e.cpu_time_total)
    events = prof.key_averages()
    phases = {e.key: time_of(e) / steps / 1000 for e in events if e.key.startswith("cage.")}
    self_of = (lambda e: e.self_device_time_total) if device.type == "cuda" else (lambda e: e.self_cpu_time_total)
    top = sorted(events, key=self_of, reverse=True)[:15]
    return {"table": str(path), "steps": steps, "fast_config": fast.to_dict(), "active": step.active,
            "ms_per_step_by_phase (inclusive)": phases,
            "top_ops_self_ms_per_step": {e.key: self_of(e) / steps / 1000 for e in top}}


def summarise(result: dict, config: PretrainConfig, flops: int, steps: int, train_sequences: int,
              epochs: int) -> dict:
    ms = 1000 * result["seconds"] / steps
    steps_per_epoch = train_sequences // config.batch_size
    seconds = epochs * steps_per_epoch * ms / 1000
    return {"sequences_per_second": steps * config.batch_size / result["seconds"], "ms_per_step": ms,
            "achieved_tflops": flops / (ms / 1000) / 1e12, **result,
            "projection": {"label": PROJECTION_LABEL, "epochs": epochs, "train_sequences": train_sequences,
                           "steps_per_epoch": steps_per_epoch, "seconds": seconds, "minutes": seconds / 60}}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    config = make_config(args, device)
    data_np = load_data(args)
    data = torch.from_numpy(data_np).to(device)  # (N, T, V, 3) resident on the device (fast path)
    name = device_name(device)
    print(f"pretrain throughput [{args.preset}] on {name}: {args.method}, {args.model} A-GCN, batch {args.batch_size}, "
          f"T={data.shape[1]}, {len(data)} sequences ({args.data}), {args.steps} timed steps per path")
    flops = count_flops(config, data, device)
    report = {"benchmark": "pretrain_throughput", "preset": args.preset, "command": " ".join(sys.argv),
              "device": name, "device_type": device.type, "torch": torch.__version__, "git_commit": _git_commit(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "settings": {"method": args.method, "model": args.model, "model_config": asdict(config.model),
                           "batch_size": args.batch_size, "frames": int(data.shape[1]), "sequences": int(len(data)),
                           "data": args.data, "queue_size": args.queue_size, "steps": args.steps,
                           "warmup": args.warmup, "seed": args.seed, "torch_threads": torch.get_num_threads()},
              "host_load_average_1_5_15_min": {"before": list(load_before)},
              "flops_per_step": flops, "flop_counter": "torch.utils.flop_counter.FlopCounterMode, forward + backward",
              "paths": {}}
    run = {"reference": lambda: {**bench_reference(config, data_np, device, args.workers, args.steps, args.warmup),
                                 **peak_memory(device)},
           "fast": lambda: fast_with_fallbacks(config, data, device, make_fast_config(args), args.steps, args.warmup)}
    for path in args.paths:
        reset_peak_memory(device)
        report["paths"][path] = summarise(run[path](), config, flops, args.steps, args.train_sequences, args.epochs)
    peak = bf16_peak(device, name, args.peak_tflops)
    report["bf16_peak_tflops"] = peak
    for result in report["paths"].values():
        result["fraction_of_bf16_peak"] = result["achieved_tflops"] / peak if peak else None
    if {"reference", "fast"} <= set(report["paths"]):
        ref, fast = report["paths"]["reference"], report["paths"]["fast"]
        report["ratio_fast_over_reference"] = fast["sequences_per_second"] / ref["sequences_per_second"]
    report["host_load_average_1_5_15_min"]["after"] = list(os.getloadavg())  # other processes skew CPU timings
    out_dir = Path(args.out)
    tag = f"{args.preset}_{device.type}"
    if args.profile:
        report["profile"] = profile_fast(config, data, device, make_fast_config(args), out_dir, tag)
    path = out_dir / f"pretrain_throughput_{tag}.json"
    atomic_write_text(path, json.dumps(report, indent=2))
    print_report(report)
    print(f"written: {path}")
    return report


def print_report(report: dict) -> None:
    print(f"{'path':<10} {'seq/s':>10} {'ms/step':>10} {'TFLOP/s':>9} {'peak MB':>9} {'projected 300 ep':>17}")
    for path, r in report["paths"].items():
        print(f"{path:<10} {r['sequences_per_second']:>10.1f} {r['ms_per_step']:>10.2f} {r['achieved_tflops']:>9.4f} "
              f"{r['peak_memory_bytes'] / 2**20:>9.0f} {r['projection']['minutes']:>13.1f} min")
    print(f"FLOPs per step: {report['flops_per_step'] / 1e9:.2f} GFLOP")
    if "ratio_fast_over_reference" in report:
        print(f"fast / reference throughput: {report['ratio_fast_over_reference']:.2f}x")
    print("projected times: " + PROJECTION_LABEL)


if __name__ == "__main__":
    main()
