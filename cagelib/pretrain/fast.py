"""The fast pretraining step: bf16 autocast, channels-last weights, batched graph convolutions and
``torch.compile`` (CPU and CUDA); on CUDA also a fused optimizer and one CUDA graph per step.

The data path is already device-resident in ``cagelib.pretrain.loop``: the data set is one tensor on the device,
a batch is an index gather, and ``cagelib.methods.augment`` draws every sample's views and ambiguity transform in
a handful of batched kernels from one device generator. This module speeds up what remains, for every
registered method (``cagelib.methods.registry``):

- **bf16 autocast**: during the training step every ``ContrastBranch`` (encoder + projection head of the
  query and momentum networks: CAGE and the peers built on it) runs under ``torch.autocast(device, bfloat16)``
  and casts its output to float32 before the L2 normalisation, so features, logits, losses and memory
  banks stay float32. A method without a ``ContrastBranch`` (MAMP) runs in float32 unless ``amp=True`` asks
  for bf16; then its whole forward runs under autocast and its outputs are cast to float32 (MAMP's loss is
  float32 anyway: its target is). MAMP's small transformer measured slower in bf16 than in float32 on this
  CPU (185 vs 127 ms/step, 1 thread), hence no automatic bf16 there. Autocast is on only
  inside the step: health metrics and evaluation run the encoders in float32. Parameters, gradients and
  optimizer state stay float32; no grad scaler (bf16 has float32's exponent range).
- **channels-last** (CPU): the model's 4-D weights in ``torch.channels_last``, so oneDNN runs the A-GCN's
  convolutions in its fast layout (a plain-layout 1x1 convolution with 16 joints is several times slower on
  this CPU, and a bf16 one copies its input to channels-last first). Values and state-dict keys do not change.
- **fused graph convolution** (CPU): every ``AdaptiveGraphConv`` computes its K = 3 adjacency subsets in one
  batched pass (``AdaptiveGraphConv.fused``: one 1x1 convolution for all theta, one for all phi, one graph
  product, one 1x1 convolution over the stacked products), a third of the operations, the same function up
  to float summation order and the same parameters.
- **torch.compile**: each ``ContrastBranch`` is compiled in place (``nn.Module.compile``: the state-dict keys
  do not change). The first compilation costs minutes on CPU (6 min measured on the 2-core machine under
  load); Inductor's on-disk cache (``$TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_$USER``)
  makes later ones in the same environment much cheaper.
- **shared key pass** (option, off by default): the key view and the ambiguity view of a stream go through
  the momentum network in ONE pass (``CAGE.shared_key_pass``), concatenated along the batch, every batch norm
  normalising each view by that view's own statistics (``cagelib.methods.split_batch_norm``): the
  same features and running statistics as MoCo's two passes (up to summation order). Plain concatenation
  would normalise keys and ambiguity views with their joint statistics (features differ by up to 0.09 in
  L2-normalised units, and the speed-changed ambiguity views, 3/4 zero frames, would shift the keys'
  statistics); MoCo's shuffle-BN concern (query and key in one BN batch) does not arise, as query and key
  encoders are separate networks and each view keeps its own statistics. Measured on the step with the
  other CPU features on (1 thread, CAGE, demo settings): no gain (within +-5 %, the noise), so it stays
  off; the batching saved ~20 % of the key passes only before the graph convolutions were fused.
- **CUDA only**: ``SGD(fused=True)`` (:func:`optimizer_options`) and the whole step (augmentations, both
  streams' forward passes, losses, backward, SGD, momentum update, bank enqueue) captured in one CUDA graph
  after ``warmup_steps`` eager steps and replayed; the batch and sample ids are copied into static
  buffers, the step never syncs with the host, and the graph is recaptured when the learning rate changes.

How each default is chosen (``None`` = auto, :meth:`FastConfig.resolve`):

====================  ==================================  =========================================================
feature               CUDA                                CPU
====================  ==================================  =========================================================
``amp``               on                                  on where the CPU computes bf16 natively (AVX512-BF16 or
                                                          AMX, :func:`cpu_native_bf16`); else off (bf16 would be
                                                          converted in software; not measured here). Both: only
                                                          for methods with ``ContrastBranch`` es (not MAMP)
``channels_last``     off (not measured on a GPU)         on
``fused_graph_conv``  off (not measured on a GPU)         on
``compile``           on                                  on only when the run plans >= ``cpu_compile_min_steps``
                                                          (5,000) steps (``cagelib.pretrain.loop`` passes the
                                                          run's remaining steps): compile saved ~20 % of a
                                                          ~0.45 s step, ~0.1 s, so its minutes pay back only
                                                          after thousands of steps; the demo (8 x 32 = 256 steps)
                                                          never compiles, a paper-length CPU run (300 x 54) does
``shared_key_pass``   off                                 off (no gain measured; option)
``cuda_graphs``,      on                                  (CUDA only)
``fused_optimizer``
====================  ==================================  =========================================================

The CPU figures (``benchmarks/pretrain_throughput.py``; ``benchmarks/README.md`` has the tables, commands and
load averages): demo settings, CAGE, 1 torch thread on the 2-core machine (Intel Xeon with AVX512-BF16 and
AMX), medians of interleaved rounds: eager float32 871 ms/step, bf16 autocast alone 620 (1.40x), the fast
step 449 (1.94x; without bf16 624, without fused graph convolution 490, without channels-last 466).
Under DDP the CPU's automatic choices and the CUDA graph are off. ``FastConfig.off()`` (or
``PretrainConfig.fast = None``) is the eager float32 step of ``cagelib.pretrain.loop.train_step``, bitwise.
The trained model keeps its channels-last weights and fused graph convolutions (the same function); a
checkpoint loads into a fresh eager model and back.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..methods.cage import ContrastBranch, can_split_batch_norm
from ..methods.encoders import AdaptiveGraphConv

# torch.compile modes that capture their own CUDA graphs (they cannot be nested in the step's graph)
_GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")
CPU_COMPILE_MIN_STEPS = 5000  # auto compile on CPU from this many planned steps (module docstring)
FEATURES = ("amp", "channels_last", "fused_graph_conv", "shared_key_pass", "compile", "cuda_graphs", "fused_optimizer", "cudnn_benchmark")


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), where bf16 autocast pays."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return torch.backends.mkldnn.is_available() and any(check is not None and check() for check in checks)


@dataclass
class FastConfig:
    amp: bool | None = None  # bf16 autocast around encoders + heads (losses, logits, banks: fp32); None = auto
    compile: bool | None = None  # torch.compile every ContrastBranch; None = auto (CUDA; CPU: long runs only)
    compile_mode: str = "default"  # torch.compile mode ("default", "max-autotune-no-cudagraphs", ...)
    cuda_graphs: bool = True  # capture the whole training step in one CUDA graph on CUDA
    warmup_steps: int = 3  # eager steps before the capture (lazy init, cuDNN autotuning, compilation)
    fused_optimizer: bool = True  # SGD(fused=True) on CUDA
    cudnn_benchmark: bool = True  # set torch.backends.cudnn.benchmark (process-wide) on CUDA
    channels_last: bool | None = None  # 4-D weights in channels-last memory format; None = auto (CPU)
    shared_key_pass: bool | None = None  # one momentum pass for key + ambiguity views; None = off (measured)
    fused_graph_conv: bool | None = None  # A-GCN graph convolutions batched over their subsets; None = auto (CPU)
    cpu_compile_min_steps: int = CPU_COMPILE_MIN_STEPS  # compile=None on CPU: compile from this many steps

    def __post_init__(self) -> None:
        if self.warmup_steps < 1:
            raise ValueError(f"FastConfig: warmup_steps must be >= 1 (the capture needs a warm model), "
                             f"got {self.warmup_steps}")
        if self.cuda_graphs and self.compile is not False and self.compile_mode in _GRAPHING_COMPILE_MODES:
            raise ValueError(f"FastConfig: compile_mode={self.compile_mode!r} captures its own CUDA graphs; "
                             "use 'default' or 'max-autotune-no-cudagraphs' with cuda_graphs=True")

    @classmethod
    def off(cls) -> "FastConfig":
        """Every feature off: the eager float32 step on every device."""
        return cls(amp=False, compile=False, cuda_graphs=False, fused_optimizer=False, cudnn_benchmark=False,
                   channels_last=False, shared_key_pass=False, fused_graph_conv=False)

    def resolve(self, device: torch.device | str, planned_steps: int | None = None,
                distributed: bool = False) -> dict[str, bool]:
        """The features that take effect on ``device`` (the table of the module docstring). ``planned_steps``:
        the training steps the run will take (None = unknown: no automatic compile on CPU); ``distributed``:
        the model is DDP-wrapped (no CUDA graph; the CPU's automatic choices off)."""
        kind = torch.device(device).type
        cuda, cpu = kind == "cuda", kind == "cpu"
        auto_cpu = cpu and not distributed

        def chosen(value: bool | None, automatic: bool) -> bool:
            return automatic if value is None else bool(value)

        long_run = planned_steps is not None and planned_steps >= self.cpu_compile_min_steps
        return {"amp": (cuda or cpu) and chosen(self.amp, cuda or (auto_cpu and cpu_native_bf16())),
                "channels_last": (cuda or cpu) and chosen(self.channels_last, auto_cpu),
                "fused_graph_conv": chosen(self.fused_graph_conv, auto_cpu),
                "shared_key_pass": chosen(self.shared_key_pass, False),  # measured: no gain (module docstring)
                "compile": (cuda or cpu) and chosen(self.compile, cuda or (auto_cpu and long_run)),
                "cuda_graphs": cuda and self.cuda_graphs and not distributed,
                "fused_optimizer": cuda and self.fused_optimizer,
                "cudnn_benchmark": cuda and self.cudnn_benchmark}

    def to_dict(self) -> dict:
        return asdict(self)


def optimizer_options(config: FastConfig | None, device: torch.device | str) -> dict:
    """Extra ``torch.optim`` keyword arguments for ``config`` on ``device`` (``fused=True`` on CUDA)."""
    if config is not None and config.resolve(device)["fused_optimizer"]:
        return {"fused": True}
    return {}


def branches(model: nn.Module) -> list[ContrastBranch]:
    """Every ``ContrastBranch`` (query and momentum networks of every stream) inside ``model``."""
    return [m for m in model.modules() if isinstance(m, ContrastBranch)]


def set_autocast(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Run every ``ContrastBranch`` of ``model`` under autocast to ``dtype`` (``None``: float32), until reset.

    The branch enters ``torch.autocast`` on its input's device type and casts its output to float32.
    :class:`FastStep` sets it for the duration of each step only (:func:`branch_autocast`).
    """
    for branch in branches(model):
        branch.autocast_dtype = dtype


@contextlib.contextmanager
def branch_autocast(model_branches: list[ContrastBranch], dtype: torch.dtype | None):
    """Inside the block, ``model_branches`` run under autocast to ``dtype``; their previous dtypes afterwards."""
    before = [branch.autocast_dtype for branch in model_branches]
    for branch in model_branches:
        branch.autocast_dtype = dtype
    try:
        yield
    finally:
        for branch, previous in zip(model_branches, before):
            branch.autocast_dtype = previous


def compile_branches(model: nn.Module, mode: str = "default") -> None:
    """``torch.compile`` every ``ContrastBranch`` of ``model`` in place (state-dict keys unchanged)."""
    for branch in branches(model):
        branch.compile(mode=mode)


def set_shared_key_pass(model: nn.Module, on: bool) -> int:
    """Set ``shared_key_pass`` on every module of ``model`` that has it (CAGE and its subclasses) and whose
    momentum networks' batch norms can be split; returns how many modules now share the key pass."""
    count = 0
    for module in model.modules():
        if hasattr(module, "shared_key_pass"):
            nets = getattr(module, "momentum_nets", None)
            allowed = getattr(module, "ambiguity", None) is not None and (  # a key and an ambiguity view
                nets is None or all(can_split_batch_norm(net) for net in nets.values()))
            module.shared_key_pass = bool(on and allowed)
            count += int(module.shared_key_pass)
    return count


def set_fused_graph_conv(model: nn.Module, on: bool) -> int:
    """Set ``fused`` on every module of ``model`` that has it (``AdaptiveGraphConv``: one batched pass over the
    adjacency subsets); returns how many modules have it."""
    modules = [m for m in model.modules() if isinstance(m, AdaptiveGraphConv)]
    for module in modules:
        module.fused = bool(on)
    return len(modules)


def _float_outputs(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in out.items()}


def _eager_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
                generator: torch.Generator, sample_ids: torch.Tensor | None,
                forward_autocast: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """``cagelib.pretrain.loop.train_step`` with profiler ranges: zero grad, forward + loss, backward, SGD.
    ``forward_autocast``: run the whole forward under autocast to that dtype (methods without a
    ``ContrastBranch``), the outputs cast to float32."""
    optimizer.zero_grad(set_to_none=True)
    with torch.profiler.record_function("cage.forward_and_loss"):
        if forward_autocast is None:
            out = model(batch, generator, sample_ids)
        else:
            with torch.autocast(batch.device.type, dtype=forward_autocast, cache_enabled=False):
                out = model(batch, generator, sample_ids)
            out = _float_outputs(out)
    with torch.profiler.record_function("cage.backward"):
        out["loss"].backward()
    with torch.profiler.record_function("cage.optimizer"):
        optimizer.step()
    out["loss"] = out["loss"].detach()
    return out


class FastStep:
    """The training step ``step(batch, generator, sample_ids) -> metrics`` with the features of a
    :class:`FastConfig` that apply to the model's device (see the module docstring).

    Same contract as ``cagelib.pretrain.loop.train_step``: ``batch`` (N, T, V, 3) on the model's device, the
    augmentation ``generator`` on that device, ``sample_ids`` (N,) or None; returns detached metric
    tensors (no host sync). ``active`` says which features are on. ``planned_steps``: the steps the run
    will take (the automatic compile decision on CPU). With CUDA graphs, a new generator object, batch
    shape or learning rate triggers a new capture (``captures`` counts them).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: FastConfig | None = None,
                 device: torch.device | str | None = None, planned_steps: int | None = None):
        self.model, self.optimizer = model, optimizer
        self.config = config = config or FastConfig()
        if device is None:
            device = next(iter(model.parameters())).device
        self.device = torch.device(device)
        distributed = isinstance(model, nn.parallel.DistributedDataParallel)
        self.active = config.resolve(self.device, planned_steps, distributed)
        if distributed:  # DDP's gradient buckets follow the parameters' layout at wrapping time
            self.active["channels_last"] = False
        inner = model.module if distributed else model
        self._branches = branches(inner)
        if config.amp is None and not self._branches:  # auto bf16 only around ContrastBranches (module docstring)
            self.active["amp"] = False
        if self.active["cudnn_benchmark"]:
            torch.backends.cudnn.benchmark = True
        if self.active["channels_last"]:
            inner.to(memory_format=torch.channels_last)  # 4-D parameters and buffers only; values unchanged
            self.active["channels_last"] = any(p.dim() == 4 for p in inner.parameters())
        if self.active["fused_graph_conv"]:
            self.active["fused_graph_conv"] = set_fused_graph_conv(inner, True) > 0
        if self.active["shared_key_pass"]:
            self.active["shared_key_pass"] = set_shared_key_pass(inner, True) > 0
        if self.active["compile"]:
            compile_branches(inner, config.compile_mode)
            self.active["compile"] = bool(self._branches)  # nothing to compile without a ContrastBranch
        self.calls = 0
        self.captures = 0  # how many times the step was captured (1 + one per learning-rate change)
        self._graph = None
        self._key = None  # (generator, batch shape, has ids, learning rates) of the captured graph
        self._static: dict = {}

    def _eager(self, batch, generator, sample_ids) -> dict[str, torch.Tensor]:
        """One eager step with autocast on for its duration (branches, or the whole forward)."""
        if not self.active["amp"]:
            return _eager_step(self.model, self.optimizer, batch, generator, sample_ids)
        if not self._branches:
            return _eager_step(self.model, self.optimizer, batch, generator, sample_ids, torch.bfloat16)
        with branch_autocast(self._branches, torch.bfloat16):
            return _eager_step(self.model, self.optimizer, batch, generator, sample_ids)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator,
                 sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.calls += 1
        if not self.active["cuda_graphs"] or not self.model.training:
            return self._eager(batch, generator, sample_ids)
        if self.calls <= self.config.warmup_steps:
            return self._side_stream_step(batch, generator, sample_ids)
        key = (id(generator), tuple(batch.shape), sample_ids is None,
               tuple(float(g["lr"]) for g in self.optimizer.param_groups))
        if self._graph is None or key != self._key:
            self._capture(batch, generator, sample_ids)
            self._key = key
        self._static["batch"].copy_(batch)
        if sample_ids is not None:
            self._static["ids"].copy_(sample_ids)
        self._graph.replay()
        return {name: value.clone() for name, value in self._static["out"].items()}

    def _side_stream_step(self, batch, generator, sample_ids) -> dict[str, torch.Tensor]:
        """A warm-up step on a side stream, as PyTorch's whole-network capture recipe does."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            out = self._eager(batch, generator, sample_ids)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return out

    def _capture(self, batch, generator, sample_ids) -> None:
        """Record one whole step (it is not executed by the capture; the caller replays it)."""
        self._graph, self._static = None, {}  # free the previous graph and its static tensors first
        static_batch = batch.clone()  # (N, T, V, 3)
        static_ids = sample_ids.clone() if sample_ids is not None else None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device):
            graph.register_generator_state(generator)  # replays advance the generator's offset
        self.optimizer.zero_grad(set_to_none=True)  # gradients are allocated in the graph's pool
        with torch.cuda.graph(graph):
            out = self._eager(static_batch, generator, static_ids)
        self._graph, self.captures = graph, self.captures + 1
        self._static = {"batch": static_batch, "ids": static_ids, "out": out}


def make_fast_step(model: nn.Module, optimizer: torch.optim.Optimizer, config: FastConfig | None = None,
                   device: torch.device | str | None = None, planned_steps: int | None = None) -> FastStep:
    """The fast training step for ``model`` (a registered method, possibly DDP-wrapped) and its ``optimizer``.

    Build the optimizer with ``torch.optim.SGD(..., **optimizer_options(config, device))`` for the fused
    kernel. Call before the first step: it converts the memory format, fuses the graph convolutions,
    compiles the branches in place and turns the shared key pass on, as ``config`` resolves for ``device``.
    ``planned_steps``: the steps of the run (the CPU's compile decision).
    """
    return FastStep(model, optimizer, config, device, planned_steps)
