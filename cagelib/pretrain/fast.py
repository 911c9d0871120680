"""The fast pretraining step: bf16 autocast, ``torch.compile``, a fused optimizer and one CUDA graph per step.

The data path is already device-resident in ``cagelib.pretrain.loop``: the data set is one tensor on the device,
a batch is an index gather, and ``cagelib.methods.augment`` draws every sample's views and ambiguity transform in
a handful of batched kernels from one device generator. This module speeds up what remains:

- **bf16 autocast** (CUDA): each ``ContrastBranch`` (encoder + projection head) of the query and momentum
  networks runs under ``torch.autocast("cuda", torch.bfloat16)``; its output is cast back to float32
  before the L2 normalisation, so features, logits, losses and the memory banks stay float32. No grad
  scaler is needed (bf16 has float32's exponent range).
- **torch.compile** (CUDA): each ``ContrastBranch`` is compiled in place (``nn.Module.compile``: the
  state-dict keys do not change, so checkpoints stay loadable by the eager model).
- **Fused optimizer** (CUDA): ``SGD(fused=True)``, see :func:`optimizer_options`. The momentum update
  of the key encoders is already fused (``torch._foreach_*`` in ``CAGE.momentum_update``).
- **CUDA graph** (CUDA): after ``warmup_steps`` eager steps the whole step (augmentations, both
  streams' forward passes, losses, backward, SGD, momentum update, memory-bank enqueue) is captured
  once and replayed; the batch and sample ids are copied into static buffers. The step never syncs
  with the host. The graph is recaptured when the learning rate changes (a milestone), since SGD bakes
  a float learning rate into the captured kernels.

Every feature takes effect only on CUDA: on any other device :class:`FastStep` is the eager float32
step of ``cagelib.pretrain.loop.train_step`` (the CPU path, tested to give identical numbers).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..methods.cage import ContrastBranch

# torch.compile modes that capture their own CUDA graphs (they cannot be nested in the step's graph)
_GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


@dataclass
class FastConfig:
    amp: bool = True  # bf16 autocast around every encoder + projection head on CUDA (losses, bank: fp32)
    compile: bool = True  # torch.compile every ContrastBranch on CUDA
    compile_mode: str = "default"  # torch.compile mode ("default", "max-autotune-no-cudagraphs", ...)
    cuda_graphs: bool = True  # capture the whole training step in one CUDA graph on CUDA
    warmup_steps: int = 3  # eager steps before the capture (lazy init, cuDNN autotuning, compilation)
    fused_optimizer: bool = True  # SGD(fused=True) on CUDA
    cudnn_benchmark: bool = True  # set torch.backends.cudnn.benchmark (process-wide) on CUDA

    def __post_init__(self) -> None:
        if self.warmup_steps < 1:
            raise ValueError(f"FastConfig: warmup_steps must be >= 1 (the capture needs a warm model), "
                             f"got {self.warmup_steps}")
        if self.cuda_graphs and self.compile and self.compile_mode in _GRAPHING_COMPILE_MODES:
            raise ValueError(f"FastConfig: compile_mode={self.compile_mode!r} captures its own CUDA graphs; "
                             "use 'default' or 'max-autotune-no-cudagraphs' with cuda_graphs=True")

    @classmethod
    def off(cls) -> "FastConfig":
        """Every feature off: the eager float32 step on every device."""
        return cls(amp=False, compile=False, cuda_graphs=False, fused_optimizer=False, cudnn_benchmark=False)

    def resolve(self, device: torch.device | str) -> dict[str, bool]:
        """The features that take effect on ``device`` (all off except on CUDA)."""
        cuda = torch.device(device).type == "cuda"
        return {"amp": cuda and self.amp, "compile": cuda and self.compile,
                "cuda_graphs": cuda and self.cuda_graphs, "fused_optimizer": cuda and self.fused_optimizer,
                "cudnn_benchmark": cuda and self.cudnn_benchmark}

    def to_dict(self) -> dict:
        return asdict(self)


def optimizer_options(config: FastConfig | None, device: torch.device | str) -> dict:
    """Extra ``torch.optim.SGD`` keyword arguments for ``config`` on ``device`` (``fused=True`` on CUDA)."""
    if config is not None and config.resolve(device)["fused_optimizer"]:
        return {"fused": True}
    return {}


def branches(model: nn.Module) -> list[ContrastBranch]:
    """Every ``ContrastBranch`` (query and momentum networks of every stream) inside ``model``."""
    return [m for m in model.modules() if isinstance(m, ContrastBranch)]


def set_autocast(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Run every ``ContrastBranch`` of ``model`` under autocast to ``dtype`` (``None``: float32).

    The branch enters ``torch.autocast`` on its input's device type and casts its output to float32, so
    this also works on CPU (used by the tests); :class:`FastStep` sets it on CUDA only.
    """
    for branch in branches(model):
        branch.autocast_dtype = dtype


def compile_branches(model: nn.Module, mode: str = "default") -> None:
    """``torch.compile`` every ``ContrastBranch`` of ``model`` in place (state-dict keys unchanged)."""
    for branch in branches(model):
        branch.compile(mode=mode)


def _eager_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
                generator: torch.Generator, sample_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``cagelib.pretrain.loop.train_step`` with profiler ranges: zero grad, forward + loss, backward, SGD."""
    optimizer.zero_grad(set_to_none=True)
    with torch.profiler.record_function("cage.forward_and_loss"):
        out = model(batch, generator, sample_ids)
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
    tensors (no host sync). ``active`` says which features are on. With CUDA graphs, a new generator
    object, batch shape or learning rate triggers a new capture (``captures`` counts them).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: FastConfig | None = None,
                 device: torch.device | str | None = None):
        self.model, self.optimizer = model, optimizer
        self.config = config = config or FastConfig()
        if device is None:
            device = next(iter(model.parameters())).device
        self.device = torch.device(device)
        self.active = config.resolve(self.device)
        if isinstance(model, nn.parallel.DistributedDataParallel):
            self.active["cuda_graphs"] = False  # DDP's gradient hooks are not captured here
        if self.active["cudnn_benchmark"]:
            torch.backends.cudnn.benchmark = True
        if self.active["amp"]:
            set_autocast(model, torch.bfloat16)
        if self.active["compile"]:
            compile_branches(model, config.compile_mode)
        self.calls = 0
        self.captures = 0  # how many times the step was captured (1 + one per learning-rate change)
        self._graph = None
        self._key = None  # (generator, batch shape, has ids, learning rates) of the captured graph
        self._static: dict = {}

    def __call__(self, batch: torch.Tensor, generator: torch.Generator,
                 sample_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.calls += 1
        if not self.active["cuda_graphs"] or not self.model.training:
            return _eager_step(self.model, self.optimizer, batch, generator, sample_ids)
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
            out = _eager_step(self.model, self.optimizer, batch, generator, sample_ids)
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
            out = _eager_step(self.model, self.optimizer, static_batch, generator, static_ids)
        self._graph, self.captures = graph, self.captures + 1
        self._static = {"batch": static_batch, "ids": static_ids, "out": out}


def make_fast_step(model: nn.Module, optimizer: torch.optim.Optimizer, config: FastConfig | None = None,
                   device: torch.device | str | None = None) -> FastStep:
    """The fast training step for ``model`` (a ``CAGE``, possibly DDP-wrapped) and its ``optimizer``.

    Build the optimizer with ``torch.optim.SGD(..., **optimizer_options(config, device))`` for the fused
    kernel. Call before the first step: it sets autocast and compiles the branches in place.
    """
    return FastStep(model, optimizer, config, device)
