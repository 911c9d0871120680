"""Where tensors live: ``resolve_device`` (``"auto"`` -> CUDA when available), ``check_device`` (refuses a
device this machine lacks, before anything runs) and ``module_device``."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def seeded_global_rng(seed: int, device: torch.device | str = "cpu"):
    """The global RNG seeded with ``seed`` inside (layer init, dropout), the caller's state restored afterwards
    (on a CUDA ``device``, its generator's too)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def check_device_name(name: str) -> None:
    """Refuse a string that is neither ``"auto"`` nor a torch device name (``"gpu"``), whatever this machine has:
    a configuration for a GPU loads on a CPU machine, a misspelt device does not."""
    if name != "auto":
        try:
            torch.device(name)
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(f"device must be 'auto' or a torch device name (cpu, cuda, cuda:1, mps), got {name!r}") \
                from None


class DeviceError(ValueError):
    """A device that this machine does not have (e.g. ``cuda`` with a CPU-only torch or no GPU)."""


def check_device(name: str | torch.device = "auto", source: str = "device") -> torch.device:
    """``resolve_device(name)``, refusing at once a device this machine lacks, so a long job fails before it
    starts and not deep inside it. ``source`` names the option in the message (e.g. ``"--device"``).
    Raises ``DeviceError`` (a ``ValueError``)."""
    try:
        device = resolve_device(name)
    except (RuntimeError, ValueError) as err:
        raise DeviceError(f"{source} {str(name)!r}: not a torch device ({err}); use auto, cpu, cuda or cuda:<n>") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES)")
            raise DeviceError(f"{source} {str(name)!r}: CUDA is not available on this machine: {why}; "
                              "use --device cpu (or auto, which picks CUDA only where it exists)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"{source} {str(name)!r}: this machine has {count} CUDA device(s), "
                              f"cuda:0 .. cuda:{count - 1}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"{source} {str(name)!r}: MPS (Apple GPU) is not available on this machine; "
                              "use --device cpu")
    return device
