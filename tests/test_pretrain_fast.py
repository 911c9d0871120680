"""The fast pretraining step (cagelib.pretrain.fast): the CPU fallback is exactly train_step; the autocast
mechanism keeps losses and banks in float32; CUDA-only checks run where a GPU is present."""
from __future__ import annotations

import copy

import pytest
import torch

from cagelib.methods.cage import ContrastBranch, ContrastConfig
from cagelib.pretrain.fast import FastConfig, FastStep, branches, compile_branches, make_fast_step, optimizer_options, set_autocast
from cagelib.methods.encoders import AGCNConfig
from cagelib.data.synthetic import synthetic_gaits
from cagelib.pretrain.checkpoint import load_pretrained
from cagelib.pretrain.loop import PretrainConfig, build_model, pretrain, train_step

CUDA = torch.cuda.is_available()


def _config(method: str = "cage", **overrides) -> PretrainConfig:
    return PretrainConfig(batch_size=8, model=AGCNConfig.small(), contrast=ContrastConfig.preset(method, queue_size=16),
                          progress=False, device="cpu", **overrides)


def _model_and_optimizer(config: PretrainConfig, device="cpu", fast: FastConfig | None = None):
    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                                **optimizer_options(fast, device))
    return model, optimizer


def test_fast_config_validation_and_resolution():
    with pytest.raises(ValueError, match="warmup_steps"):
        FastConfig(warmup_steps=0)
    with pytest.raises(ValueError, match="captures its own CUDA graphs"):
        FastConfig(compile_mode="reduce-overhead")
    FastConfig(compile_mode="reduce-overhead", cuda_graphs=False)  # fine without the step's own graph
    assert not any(FastConfig().resolve("cpu").values())  # every feature is CUDA-only
    assert all(FastConfig().resolve("cuda").values())
    assert FastConfig(amp=False).resolve("cuda:0")["amp"] is False
    assert not any(FastConfig.off().resolve("cuda").values())
    assert optimizer_options(FastConfig(), "cuda") == {"fused": True}
    assert optimizer_options(FastConfig(), "cpu") == {} and optimizer_options(None, "cuda") == {}


@pytest.mark.parametrize("method", ["cage", "hsmb"])
def test_cpu_fast_step_is_exactly_train_step(method):
    config = _config(method)
    x = torch.from_numpy(synthetic_gaits(16, 16, seed=0))
    model_a, opt_a = _model_and_optimizer(config)
    model_b, opt_b = _model_and_optimizer(config)
    step = make_fast_step(model_b, opt_b, FastConfig())  # default config: everything on, but only on CUDA
    assert not any(step.active.values())
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for i in range(3):
        ids = torch.arange(8) + 8 * (i % 2)
        out_a = train_step(model_a, opt_a, x[ids], gen_a, ids)
        out_b = step(x[ids], gen_b, ids)
        assert out_a.keys() == out_b.keys()
        for key in out_a:
            assert torch.equal(out_a[key], out_b[key]), key
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name


def test_pretrain_with_fast_config_on_cpu_matches_and_round_trips(tmp_path):
    x = synthetic_gaits(16, 16, seed=0)
    plain = pretrain(_config(epochs=2), x, run_dir=tmp_path / "plain")
    fast = pretrain(_config(epochs=2, fast=FastConfig()), x, run_dir=tmp_path / "fast")
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in fast.history]
    loaded = load_pretrained(tmp_path / "fast")  # config.json with a FastConfig inside
    assert torch.equal(loaded.state_dict()["query_nets.cartesian.head.net.0.weight"],
                       fast.model.state_dict()["query_nets.cartesian.head.net.0.weight"])
    config = PretrainConfig.from_dict(_config(fast=FastConfig(compile=False)).to_dict())
    assert config.fast == FastConfig(compile=False)
    resumed = pretrain(_config(epochs=3), x, run_dir=tmp_path / "fast", resume=True)  # fast may change
    assert len(resumed.history) == 3


def test_autocast_runs_the_encoders_in_bf16_and_keeps_losses_and_banks_fp32():
    """The mechanism FastStep enables on CUDA, exercised with CPU autocast."""
    config = _config("hsmb")
    x = torch.from_numpy(synthetic_gaits(8, 16, seed=0))
    ids = torch.arange(8)
    reference, _ = _model_and_optimizer(config)
    model = copy.deepcopy(reference)
    set_autocast(model, torch.bfloat16)
    assert len(branches(model)) == 2 and all(b.autocast_dtype is torch.bfloat16 for b in branches(model))
    seen = []
    conv = model.query_nets["cartesian"].encoder.units[0].tcn.conv
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    features = model.query_nets["cartesian"](x)
    assert seen == [torch.bfloat16] and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=1), torch.ones(8))
    out = model(x, torch.Generator().manual_seed(0), ids)
    ref = reference(x, torch.Generator().manual_seed(0), ids)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=0.05)  # bf16 encoders, same loss
    out["loss"].backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    bank = model.memory_banks["cartesian"]
    assert bank.features.dtype == torch.float32 and int(bank.num_filled()) == 16  # keys + z~ enqueued
    set_autocast(model, None)
    assert model.query_nets["cartesian"](x).dtype == torch.float32 and seen[-1] == torch.float32


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, on importing torch._dynamo
def test_compile_branches_keeps_state_dict_keys():
    model = build_model(_config())
    keys = list(model.state_dict())
    compile_branches(model)  # lazy: nothing is compiled until the first call
    assert list(model.state_dict()) == keys
    assert all(isinstance(b, ContrastBranch) for b in branches(model))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_every_branch_traces_to_one_graph_without_breaks(dtype):
    """What torch.compile gets on CUDA: each ContrastBranch (encoder + head, with or without autocast) is one
    FX graph. A host sync or Python-side branch on tensor values in the encoder would show up as a break."""
    model = build_model(_config("cage"))
    x = torch.from_numpy(synthetic_gaits(4, 16, seed=0))
    set_autocast(model, dtype)
    for name, branch in model.query_nets.items():
        explanation = torch._dynamo.explain(branch)(x)
        assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), (name, explanation.break_reasons)
    torch._dynamo.reset()


# ---- CUDA-only checks (skipped on the CPU-only CI; run them on a GPU machine) ----

@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_fast_step_never_syncs_and_recaptures_on_lr_change():
    device = torch.device("cuda")
    config = _config("cage")
    fast = FastConfig(compile=False, warmup_steps=2)
    model, optimizer = _model_and_optimizer(config, device, fast)
    step = FastStep(model, optimizer, fast)
    assert step.active["cuda_graphs"] and step.active["amp"]
    x = torch.from_numpy(synthetic_gaits(32, 16, seed=0)).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    for i in range(4):  # warm-up, capture, replay
        ids = torch.arange(8, device=device) + 8 * (i % 4)
        step(x[ids], generator, ids)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync now raises
    try:
        losses = []
        for i in range(4):
            ids = torch.arange(8, device=device) + 8 * (i % 4)
            losses.append(step(x[ids], generator, ids)["loss"])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.captures == 1 and all(torch.isfinite(torch.stack(losses)).tolist())
    bank_ids = model.memory_banks["cartesian"].sample_ids
    assert set(bank_ids.tolist()) == set(range(16, 32))  # queue of 16 keys: the last two batches
    for group in optimizer.param_groups:
        group["lr"] *= 0.1
    step(x[:8], generator, torch.arange(8, device=device))
    assert step.captures == 2


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_pretrain_with_every_feature_learns(tmp_path):
    x = synthetic_gaits(64, 32, seed=0)
    result = pretrain(_config("cage", epochs=3, device="cuda", fast=FastConfig()), x, run_dir=tmp_path / "run")
    losses = [h["loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses)).tolist())
