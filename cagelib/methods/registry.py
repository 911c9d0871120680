"""The pretraining methods, by name: what notebooks, the demo and the batch grid list and build.

A method is an ``nn.Module`` with

- ``forward(batch, generator, sample_ids) -> dict``: one self-supervised step on a Cartesian batch
  ``(N, T, V, 3)``, drawing its randomness from ``generator``; ``sample_ids`` ``(N,)`` are the dataset
  indices of the rows (or None). The dict holds ``loss`` (a scalar with gradient) and detached metrics
  (``acc``, ``loss_*``); ``cagelib.pretrain`` sums them per epoch.
- ``encoders() -> dict[str, nn.Module]``: stream name (``"cartesian"``, ``"spherical"``; a peer may name its
  own, e.g. CrosSCLR's ``"joint"``, ``"motion"``, ``"bone"``) -> the encoder that evaluation probes,
  ``(N, T, V, C) -> (N, F)``; the first stream is the method's main one.

Optional: ``stream_input(x, stream)``, a Cartesian batch as the stream's encoder sees it (spherical
coordinates, bone vectors, ...; absent: the batch as it is; ``evaluate.features.StreamEncoder``);
``embed(x, stream)``, the L2-normalised features the loss compares (``pretrain.health``); ``set_epoch(epoch)``,
called by the loop before every epoch (a phase switch, e.g. CrosSCLR's cross-view training).

A builder takes the pretraining configuration (``cagelib.pretrain.config.PretrainConfig``: it reads
``config.contrast``, ``config.model`` and ``config.representation``; a peer method its own field, e.g.
``config.mamp``) and returns a freshly initialised method; the caller seeds the
global RNG around it. A new method is one module in ``cagelib/methods/`` and one ``register`` line below.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .aimclr import AimCLR
from .cage import CAGE, PEER_METHODS, PRESETS
from .cage_mamp import CAGEMAMP
from .crossclr import CrossCLR
from .encoders import AGCN
from .isc import ISC
from .mamp import MAMP

Builder = Callable[[Any], nn.Module]
_BUILDERS: dict[str, Builder] = {}
_UNLISTED = {"custom"}  # ContrastConfig(method="custom"): CAGE with hand-set fields, not a named method


def register(name: str, builder: Builder) -> None:
    """Make ``builder(config) -> method`` available as ``name`` (refuses a name already taken)."""
    if name in _BUILDERS:
        raise ValueError(f"method {name!r} is registered already")
    _BUILDERS[name] = builder
    if name not in PRESETS and name not in _UNLISTED:  # a peer of CAGE: ContrastConfig(method=name) is valid
        PEER_METHODS.add(name)


def available_methods() -> tuple[str, ...]:
    """The names of the registered pretraining methods, in registration order."""
    return tuple(name for name in _BUILDERS if name not in _UNLISTED)


def build_method(config) -> nn.Module:
    """A fresh method of ``config.contrast.method`` (seed the global RNG around this call)."""
    name = config.contrast.method
    if name not in _BUILDERS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(available_methods())}")
    return _BUILDERS[name](config)


def _cage(config) -> CAGE:
    """CAGE and its ablations (the presets of ``ContrastConfig``), with A-GCN encoders."""
    return CAGE(config.contrast, lambda: AGCN(config.model), representation=config.representation)


for _name in (*PRESETS, "custom"):  # GE-CLR, HSMB, ASMB, CSMB, C3L, CAGE, spherical, spherical ACL (Tables 1-3)
    register(_name, _cage)


def _mamp(config) -> MAMP:
    """MAMP (Mao et al., ICCV 2023): masked motion prediction with a transformer over joint-time tokens."""
    return MAMP(config.mamp, config.model.num_joints, representation=config.representation)


register("mamp", _mamp)


def _aimclr(config) -> AimCLR:
    """AimCLR (Guo et al., AAAI 2022): MoCo with extreme views, attention-guided drop, D3M loss and mining."""
    return AimCLR(config.aimclr, config.contrast, lambda: AGCN(config.model), representation=config.representation)


register("aimclr", _aimclr)


def _crossclr(config) -> CrossCLR:
    """3s-CrosSCLR (Li et al., CVPR 2021): joint, motion and bone MoCo streams with cross-view knowledge mining."""
    return CrossCLR(config.crossclr, config.contrast, lambda: AGCN(config.model), representation=config.representation,
                    epochs=config.epochs)


register("crossclr", _crossclr)


def _isc(config) -> ISC:
    """ISC (Thoker et al., ACM MM 2021): inter-skeleton contrast of an A-GCN and a bi-GRU sequence encoder."""
    return ISC(config.isc, config.contrast, config.model, representation=config.representation)


register("isc", _isc)


def _cage_mamp(config) -> CAGEMAMP:
    """CAGE + MAMP (this workbench's combination): a CAGE preset's loss plus masked motion prediction."""
    return CAGEMAMP(config.cage_mamp, config.contrast, lambda: AGCN(config.model), representation=config.representation)


register("cage_mamp", _cage_mamp)
