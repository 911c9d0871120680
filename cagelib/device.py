"""Where tensors live: ``resolve_device`` (``"auto"`` -> CUDA when available) and ``module_device``."""
from __future__ import annotations

import torch
from torch import nn


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")
