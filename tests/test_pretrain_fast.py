"""The fast pretraining step (cagelib.pretrain.fast): off, it is exactly train_step; on CPU, bf16 autocast runs
inside the encoders only (losses, logits and banks float32), channels-last and the shared key pass keep the
numbers, state-dict keys and checkpoints; every registered method runs; CUDA-only checks where a GPU is present."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cagelib.data.synthetic import synthetic_gaits
from cagelib.methods.cage import ContrastBranch, ContrastConfig, split_batch_norm
from cagelib.methods.encoders import AGCN, AGCNConfig
from cagelib.methods.registry import available_methods
from cagelib.pretrain.checkpoint import load_pretrained
from cagelib.pretrain.fast import (
    CPU_COMPILE_MIN_STEPS,
    FastConfig,
    FastStep,
    branches,
    compile_branches,
    cpu_native_bf16,
    make_fast_step,
    optimizer_options,
    set_autocast,
)
from cagelib.pretrain.loop import (
    PretrainConfig,
    build_model,
    make_optimization,
    pretrain,
    train_step,
)

CUDA = torch.cuda.is_available()
# every CPU feature, explicitly (also on a CPU without native bf16), no compile
CPU_FAST = FastConfig(amp=True, channels_last=True, shared_key_pass=True, fused_graph_conv=True, compile=False)


def _config(method: str = "cage", **overrides) -> PretrainConfig:
    return PretrainConfig(batch_size=8, model=AGCNConfig.small(), contrast=ContrastConfig.preset(method, queue_size=16),
                          progress=False, device="cpu", health=None, **overrides)


def _model_and_optimizer(config: PretrainConfig, device="cpu", fast: FastConfig | None = None):
    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                                **optimizer_options(fast, device))
    return model, optimizer


def _twin_runs(method: str):
    """A fixed batch source and two identical (model, optimizer) pairs of ``method``: one per path compared."""
    config = _config(method)
    x = torch.from_numpy(synthetic_gaits(16, 16, seed=0))
    return x, _model_and_optimizer(config), _model_and_optimizer(config)


def _steps(step, x, count: int = 3, seed: int = 1) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(count):
        ids = torch.arange(8) + 8 * (i % 2)
        outs.append(step(x[ids], generator, ids))
    return outs


def test_fast_config_validation_and_resolution():
    with pytest.raises(ValueError, match="warmup_steps"):
        FastConfig(warmup_steps=0)
    with pytest.raises(ValueError, match="captures its own CUDA graphs"):
        FastConfig(compile_mode="reduce-overhead")
    FastConfig(compile_mode="reduce-overhead", cuda_graphs=False)  # fine without the step's own graph
    cpu = FastConfig().resolve("cpu")
    assert cpu == {"amp": cpu_native_bf16(), "channels_last": True, "fused_graph_conv": True, "shared_key_pass": False,
                   "compile": False, "cuda_graphs": False, "fused_optimizer": False, "cudnn_benchmark": False}
    assert FastConfig().resolve("cpu", planned_steps=CPU_COMPILE_MIN_STEPS - 1)["compile"] is False  # the demo
    assert FastConfig().resolve("cpu", planned_steps=CPU_COMPILE_MIN_STEPS)["compile"] is True  # a long run
    assert FastConfig(compile=True).resolve("cpu")["compile"] is True
    assert FastConfig(amp=True).resolve("cpu")["amp"] is True  # explicit: also without native bf16
    assert not any(FastConfig().resolve("cpu", planned_steps=10**6, distributed=True).values())  # DDP on CPU
    assert not any(FastConfig.off().resolve("cpu", planned_steps=10**6).values())
    cuda = FastConfig().resolve("cuda")  # the CUDA path as before: every CUDA feature, no CPU-only one
    assert cuda == {"amp": True, "channels_last": False, "fused_graph_conv": False, "shared_key_pass": False,
                    "compile": True, "cuda_graphs": True, "fused_optimizer": True, "cudnn_benchmark": True}
    assert FastConfig(amp=False).resolve("cuda:0")["amp"] is False
    assert not any(FastConfig.off().resolve("cuda").values())
    assert not any(FastConfig().resolve("mps").values())
    assert optimizer_options(FastConfig(), "cuda") == {"fused": True}
    assert optimizer_options(FastConfig(), "cpu") == {} and optimizer_options(None, "cuda") == {}
    saved = PretrainConfig.from_dict(_config(fast=FastConfig(compile=False)).to_dict())  # config.json round trip
    assert saved.fast == FastConfig(compile=False)


@pytest.mark.parametrize("method", ["cage", "hsmb"])
def test_cpu_fast_off_is_exactly_train_step(method):
    x, (model_a, opt_a), (model_b, opt_b) = _twin_runs(method)
    step = make_fast_step(model_b, opt_b, FastConfig.off())
    assert not any(step.active.values())
    outs_a = _steps(lambda b, g, i: train_step(model_a, opt_a, b, g, i), x)
    outs_b = _steps(step, x)
    for out_a, out_b in zip(outs_a, outs_b):
        assert out_a.keys() == out_b.keys()
        for key in out_a:
            assert torch.equal(out_a[key], out_b[key]), key
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name


def test_cpu_fast_bf16_on_a_fixed_batch_is_finite_close_and_float32_outside_the_encoders():
    config = _config("hsmb")
    x = torch.from_numpy(synthetic_gaits(8, 16, seed=0))
    ids = torch.arange(8)
    reference, ref_opt = _model_and_optimizer(config)
    model, optimizer = _model_and_optimizer(config)  # the same initial weights (seeded)
    step = make_fast_step(model, optimizer, CPU_FAST)
    assert all(step.active[k] for k in ("amp", "channels_last", "shared_key_pass", "fused_graph_conv"))
    seen = []
    conv = model.query_nets["cartesian"].encoder.units[0].tcn.conv
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    out = step(x, torch.Generator().manual_seed(0), ids)
    ref = train_step(reference, ref_opt, x, torch.Generator().manual_seed(0), ids)
    assert seen == [torch.bfloat16]  # bf16 inside the encoder ...
    assert all(v.dtype == torch.float32 for v in out.values())  # ... float32 losses and metrics
    assert torch.isfinite(out["loss"]) and out["loss"].item() == pytest.approx(ref["loss"].item(), rel=0.02)
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    bank = model.memory_banks["cartesian"]
    assert bank.features.dtype == torch.float32 and int(bank.num_filled()) == 16  # keys + z~ enqueued
    # autocast is on only inside the step: embeddings outside it (health, evaluation) are float32
    assert all(b.autocast_dtype is None for b in branches(model))
    features = model.embed(x, "cartesian")
    assert seen[-1] == torch.float32 and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=1), torch.ones(8))


def test_set_autocast_mechanism_keeps_losses_and_banks_fp32():
    """The mechanism FastStep scopes to the step (and enables on CUDA), set by hand."""
    model = build_model(_config("hsmb"))
    x = torch.from_numpy(synthetic_gaits(8, 16, seed=0))
    set_autocast(model, torch.bfloat16)
    assert len(branches(model)) == 2 and all(b.autocast_dtype is torch.bfloat16 for b in branches(model))
    features = model.query_nets["cartesian"](x)
    assert features.dtype == torch.float32
    out = model(x, torch.Generator().manual_seed(0), torch.arange(8))
    assert all(v.dtype == torch.float32 for v in out.values())
    set_autocast(model, None)
    assert all(b.autocast_dtype is None for b in branches(model))


def test_split_batch_norm_equals_one_pass_per_part():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(4 * 6 * 5))
    a, b = torch.randn(8, 3, 6, 5), torch.randn(8, 3, 6, 5) * 3 + 1  # two views with different statistics
    separate = copy.deepcopy(net)
    expected = torch.cat([separate(a), separate(b)])
    with split_batch_norm(net, 2):
        shared = net(torch.cat([a, b]))
    torch.testing.assert_close(shared, expected, rtol=1e-5, atol=1e-6)
    for (name, x), y in zip(net.state_dict().items(), separate.state_dict().values()):  # running statistics too
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
    assert list(net.state_dict()) == list(separate.state_dict())
    joint = copy.deepcopy(separate)(torch.cat([a, b]))  # plain concatenation: other statistics, other features
    assert not torch.allclose(joint, expected, atol=1e-3)
    assert all(getattr(m, "batch_chunks", 1) == 1 for m in net.modules())  # plain again outside the block


@pytest.mark.parametrize("overrides", [{}, {"adaptive": False}, {"data_dependent": False}])
def test_fused_graph_conv_equals_the_per_subset_loop(overrides):
    torch.manual_seed(0)
    loop = AGCN(AGCNConfig.small(**overrides)).train()
    for module in loop.modules():  # non-trivial batch-norm scales and adjacency offsets
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
        if getattr(module, "B", None) is not None:
            nn.init.normal_(module.B, 0.0, 0.1)
    fused = copy.deepcopy(loop)
    for module in fused.modules():
        if hasattr(module, "fused"):
            module.fused = True
    x = torch.from_numpy(synthetic_gaits(4, 16, seed=0))
    out_loop, out_fused = loop(x), fused(x)
    torch.testing.assert_close(out_fused, out_loop, rtol=1e-5, atol=1e-5)
    (out_loop ** 2).sum().backward()
    (out_fused ** 2).sum().backward()
    for (name, a), b in zip(loop.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)  # BN-cancelled biases: ~0
    assert list(loop.state_dict()) == list(fused.state_dict())


@pytest.mark.parametrize("method", ["cage", "csmb"])
def test_shared_key_pass_gives_the_separate_passes_numbers(method):
    x, (model_a, opt_a), (model_b, opt_b) = _twin_runs(method)
    separate = make_fast_step(model_a, opt_a, FastConfig.off())
    shared = make_fast_step(model_b, opt_b, FastConfig(amp=False, channels_last=False, compile=False,
                                                       shared_key_pass=True))
    assert shared.active["shared_key_pass"] and model_b.shared_key_pass and not model_a.shared_key_pass
    for out_a, out_b in zip(_steps(separate, x), _steps(shared, x)):
        for key in out_a:
            torch.testing.assert_close(out_a[key], out_b[key], rtol=1e-5, atol=1e-5, msg=key)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)  # also every running statistic


def test_shared_key_pass_only_where_there_is_an_ambiguity_view():
    model, optimizer = _model_and_optimizer(_config("geclr"))
    assert not make_fast_step(model, optimizer, CPU_FAST).active["shared_key_pass"]


def test_fast_step_keeps_state_dict_keys_and_values_of_the_eager_model():
    model = build_model(_config())
    keys, values = list(model.state_dict()), copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    make_fast_step(model, optimizer, CPU_FAST)  # channels-last, shared key pass (split batch norms)
    assert list(model.state_dict()) == keys
    for name, value in model.state_dict().items():
        assert torch.equal(value, values[name]), name
    eager = build_model(_config())
    eager.load_state_dict(model.state_dict())  # strict: the eager model takes the fast model's weights


@pytest.mark.parametrize("method", available_methods())
def test_every_registered_method_runs_the_cpu_fast_step(method):
    config = _config(method)
    model = build_model(config)
    optimizer = make_optimization(config, model, torch.device("cpu"))[0]
    step = make_fast_step(model, optimizer, CPU_FAST)
    x = torch.from_numpy(synthetic_gaits(16, 16, seed=0))
    outs = _steps(step, x, count=2)
    for out in outs:
        assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in out.values() if v.is_floating_point())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_automatic_bf16_only_around_contrast_branches():
    """MAMP (no ContrastBranch) stays float32 under FastConfig(); amp=True runs its whole forward in bf16."""
    config = _config("mamp")
    model = build_model(config)
    step = make_fast_step(model, make_optimization(config, model, torch.device("cpu"))[0], FastConfig())
    assert not step.active["amp"] and not step.active["channels_last"]  # nothing 4-D either
    seen = []
    model.encoder.blocks[0].qkv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    _steps(step, torch.from_numpy(synthetic_gaits(16, 16, seed=0)), count=1)
    forced = make_fast_step(model, make_optimization(config, model, torch.device("cpu"))[0], FastConfig(amp=True))
    out = _steps(forced, torch.from_numpy(synthetic_gaits(16, 16, seed=0)), count=1)[0]
    assert seen == [torch.float32, torch.bfloat16] and out["loss"].dtype == torch.float32


def test_pretrain_fast_on_cpu_round_trips_and_resumes_exactly(tmp_path):
    x = synthetic_gaits(16, 16, seed=0)
    plain = pretrain(_config(epochs=2), x, run_dir=tmp_path / "plain")
    off = pretrain(_config(epochs=2, fast=FastConfig.off()), x, run_dir=tmp_path / "off")
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in off.history]  # fast off: bitwise
    fast = pretrain(_config(epochs=3, fast=CPU_FAST), x, run_dir=tmp_path / "fast")
    assert all(abs(f["loss"] - p["loss"]) < 0.05 * abs(p["loss"]) for f, p in zip(fast.history, plain.history))
    loaded = load_pretrained(tmp_path / "fast")  # config.json with a FastConfig inside -> the eager model
    for name, value in fast.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    first = pretrain(_config(epochs=2, fast=CPU_FAST), x, run_dir=tmp_path / "resumed")
    resumed = pretrain(_config(epochs=3, fast=CPU_FAST), x, run_dir=tmp_path / "resumed", resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in fast.history]  # exact resume, bf16 too
    assert len(first.history) == 2
    switched = pretrain(_config(epochs=4), x, run_dir=tmp_path / "resumed", resume=True)  # fast -> eager
    assert len(switched.history) == 4 and all(torch.isfinite(torch.tensor([h["loss"] for h in switched.history])))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own, on importing torch._dynamo
def test_compile_branches_keeps_state_dict_keys():
    model = build_model(_config())
    keys = list(model.state_dict())
    compile_branches(model)  # lazy: nothing is compiled until the first call
    assert list(model.state_dict()) == keys
    assert all(isinstance(b, ContrastBranch) for b in branches(model))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("dtype,chunks,fused", [(None, 1, False), (torch.bfloat16, 1, False), (torch.bfloat16, 2, True)])
def test_every_branch_traces_to_one_graph_without_breaks(dtype, chunks, fused):
    """What torch.compile gets: each ContrastBranch (encoder + head, with or without autocast, with the shared
    key pass's split batch norm and the fused graph convolution) is one FX graph. A host sync or Python-side
    branch on tensor values in the encoder would show up as a break."""
    model = build_model(_config("cage"))
    model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = fused
    x = torch.from_numpy(synthetic_gaits(4, 16, seed=0))
    set_autocast(model, dtype)
    for name, branch in model.momentum_nets.items():
        with split_batch_norm(branch, chunks):
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
