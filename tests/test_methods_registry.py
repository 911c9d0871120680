"""The method registry: every registered method builds, runs one step on a tiny batch and exposes its
encoders; notebooks, the demo and the grid list the methods from it."""
from __future__ import annotations

import json

import pytest
import torch

from cagelib.data.synthetic import synthetic_gaits
from cagelib.methods.cage import ContrastConfig
from cagelib.methods.encoders import AGCNConfig
from cagelib.methods.registry import available_methods, build_method, method, register
from cagelib.pretrain.config import PretrainConfig, build_model

TINY = AGCNConfig.small(widths=(32, 64), strides=(1, 2))
OWN_STREAMS = {"crossclr": {"joint", "motion", "bone"}, "isc": {"graph", "sequence"},  # peers naming their streams
               "cage_mamp": {"cartesian", "spherical"}}  # its base preset's (CAGE's) streams


def test_the_paper_methods_are_registered():
    assert available_methods() == (
        "geclr", "hsmb", "asmb", "csmb", "c3l", "cage", "spherical", "spherical_acl", "mamp", "aimclr", "crossclr",
        "isc", "cage_mamp")
    with pytest.raises(ValueError, match="registered already"):
        register("cage", lambda config: None)


@pytest.mark.parametrize("name", available_methods())
def test_every_method_builds_steps_and_exposes_encoders(name):
    config = PretrainConfig(device="cpu", model=TINY, contrast=ContrastConfig.preset(name, queue_size=16))
    method = build_model(config)
    x = torch.as_tensor(synthetic_gaits(8, 24, seed=1))  # (N, T, V, 3)
    out = method(x, torch.Generator().manual_seed(0), torch.arange(8))
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"]) and out["loss"].requires_grad
    encoders = method.encoders()
    assert set(encoders) == OWN_STREAMS.get(name, set(config.contrast.streams)) and encoders
    for stream, encoder in encoders.items():  # each on its own input (stream_input: e.g. bone vectors)
        inputs = method.stream_input(x, stream) if hasattr(method, "stream_input") else x
        assert encoder.eval()(inputs).shape == (8, encoder.out_dim)


def test_an_unknown_method_is_refused():
    config = PretrainConfig(contrast=ContrastConfig.preset("cage"))
    config.contrast.method = "nope"
    with pytest.raises(ValueError, match="registered: geclr"):
        build_method(config)


@pytest.mark.parametrize("name", [m for m in available_methods() if method(m).options is not None])
def test_a_schema_1_config_of_a_peer_loads_with_its_own_field_as_options(name):
    """A config.json written before ``options`` (schema 1) held the peer's settings in a field named after it."""
    config = PretrainConfig(contrast=ContrastConfig(method=name), model=AGCNConfig.small()).with_options()
    old = {**json.loads(json.dumps(config.to_dict())), "schema": 1}
    old[name] = old.pop("options")
    assert PretrainConfig.load(old) == config
    assert PretrainConfig.from_dict({}) == PretrainConfig()
