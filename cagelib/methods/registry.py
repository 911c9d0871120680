"""The pretraining methods, by name: the one extension point of the workbench.

A method is an ``nn.Module`` with

- ``forward(batch, generator, sample_ids) -> dict``: one self-supervised step on a Cartesian batch
  ``(N, T, V, 3)``, drawing its randomness from ``generator``; ``sample_ids`` ``(N,)`` are the dataset
  indices of the rows (or None). The dict holds ``loss`` (a scalar with gradient) and detached metrics
  (``acc``, ``loss_*``); ``cagelib.pretrain`` sums them per epoch.
- ``encoders() -> dict[str, nn.Module]``: stream name -> the encoder that evaluation probes,
  ``(N, T, V, C) -> (N, F)``; the first stream is the method's main one.

Optional: ``stream_input(x, stream)``, a Cartesian batch as the stream's encoder sees it; ``embed(x, stream)``,
the L2-normalised features the loss compares (``pretrain.health``); ``set_epoch(epoch)``, called by the loop
before every epoch.

A method registers a ``Method``: its builder (``PretrainConfig -> nn.Module``: it reads ``config.contrast``,
``config.model``, ``config.representation`` and its own ``config.options``), the class of its own settings
(``options``), its paper's recipe (``paper``: the ``PretrainConfig`` fields of its schedule and optimiser)
and how it adapts a run's recipe to itself (``adapt``: e.g. MAMP's AdamW at SGD's lr scale). A new method is
one module that calls ``register`` (the built-in ones are imported by ``cagelib.methods``, so importing any
part of the package registers them); nothing else in the package names a method.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from torch import nn

Builder = Callable[[Any], nn.Module]


@dataclass(frozen=True)
class Method:
    """A registered method (module docstring)."""

    build: Builder  # PretrainConfig -> a freshly initialised method (the caller seeds the global RNG)
    options: type | None = None  # the class of PretrainConfig.options for this method; None: it has none
    paper: dict = field(default_factory=dict)  # PretrainConfig fields of its paper's (or code's) recipe
    adapt: Callable[[Any], dict] | None = None  # PretrainConfig -> the fields this method changes in it
    listed: bool = True  # False: buildable by name but not offered (CAGE's "custom")


_METHODS: dict[str, Method] = {}


def register(name: str, build: Builder, options: type | None = None, paper: dict | None = None,
             adapt: Callable[[Any], dict] | None = None, listed: bool = True) -> None:
    """Make ``build(config) -> method`` available as ``name`` (refuses a name already taken)."""
    if name in _METHODS:
        raise ValueError(f"method {name!r} is registered already")
    _METHODS[name] = Method(build, options, dict(paper or {}), adapt, listed)


def unregister(name: str) -> None:
    """Remove ``name`` (a test's toy method); unknown names are ignored."""
    _METHODS.pop(name, None)


def available_methods() -> tuple[str, ...]:
    """The names of the registered pretraining methods, in registration order."""
    return tuple(name for name, m in _METHODS.items() if m.listed)


def method(name: str) -> Method:
    """The registered ``Method`` of ``name``; a ``ValueError`` listing the registered ones."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(available_methods())}")
    return _METHODS[name]


def build_method(config) -> nn.Module:
    """A fresh method of ``config.contrast.method`` (seed the global RNG around this call); ``config.options``
    None: the method's default options."""
    m = method(config.contrast.method)
    if m.options is not None and config.options is None:
        config = replace(config, options=m.options())
    return m.build(config)
