"""benchmarks/: the reference loop's NumPy augmentations have cagelib.methods.augment's semantics, and the
throughput benchmark runs end to end at --tiny on CPU and writes its JSON report (not timed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cagelib.methods import augment
from cagelib.pretrain.fast import cpu_native_bf16
from cagelib.data.synthetic import synthetic_gaits

REPO_ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import reference_loop as ref  # noqa: E402


@pytest.fixture(scope="module")
def padded():
    """Eight synthetic gaits of 30 frames, zero-padded after random lengths (15-30)."""
    return synthetic_gaits(8, 30, seed=3)


def _matches_some(torch_out: np.ndarray, candidates) -> bool:
    return any(np.allclose(torch_out, c, atol=1e-5) for c in candidates)


def test_crop_equals_cagelib_crop_for_some_offset(padded):
    out = augment.Crop()(torch.from_numpy(padded), torch.Generator().manual_seed(0)).numpy()
    for x, y in zip(padded, out):
        pad = ref.valid_length(x) // 6
        assert _matches_some(y, (ref.crop_at(x, o) for o in range(2 * pad + 1)))
        assert ref.valid_length(ref.crop(x, np.random.default_rng(0))) == ref.valid_length(x)


def test_speed_up_and_speed_down_equal_cagelib_for_some_start(padded):
    up = augment.SpeedUp(4)(torch.from_numpy(padded), torch.Generator().manual_seed(0)).numpy()
    down = augment.SpeedDown(0.3)(torch.from_numpy(padded), torch.Generator().manual_seed(0)).numpy()
    for x, y_up, y_down in zip(padded, up, down):
        length = ref.valid_length(x)
        assert _matches_some(y_up, (ref.speed_up_at(x, s, 4) for s in range(min(4, length))))
        window = max(1, int(np.floor(0.3 * length + 0.5)))
        assert _matches_some(y_down, (ref.speed_down_at(x, s, 0.3) for s in range(length - window + 1)))


def test_jitter_and_shear_transform_the_stated_joints(padded):
    rng = np.random.default_rng(0)
    x = padded[0]
    changed = lambda y: np.flatnonzero(np.abs(y - x).reshape(len(x), 16, 3).max(axis=(0, 2)) > 0)  # noqa: E731
    assert len(changed(ref.joint_jitter(x, rng))) == 10
    sheared = ref.shear(x, rng)
    joints = changed(sheared)
    assert len(joints) == 8
    # one matrix with a unit diagonal for every sheared joint: recover it by least squares
    source = x[:, joints].reshape(-1, 3)
    matrix, *_ = np.linalg.lstsq(source, sheared[:, joints].reshape(-1, 3), rcond=None)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-4)
    assert np.all(np.abs(matrix - np.diag(np.diag(matrix))) <= 0.5 + 1e-4)
    length = ref.valid_length(x)
    tilde = ref.ambiguity(x, rng, "up")  # every 4th frame from a start in [0, 4), then a shear
    assert ref.valid_length(tilde) in {-(-(length - start) // 4) for start in range(4)}


def test_dataset_and_view_feeder(padded):
    dataset = ref.ContrastiveViewDataset(padded)
    query, key, tilde, index = dataset[2]
    assert query.shape == key.shape == tilde.shape == padded.shape[1:] and index == 2
    assert query.dtype == np.float32 and not np.array_equal(query, key)
    feeder = ref.ViewFeeder()
    views = [torch.full((1,), float(v)) for v in range(3)]
    feeder.load(*views)
    assert [feeder.augment(None, None), feeder.augment(None, None), feeder.ambiguity(None, None)] == views


def test_tiny_benchmark_on_cpu_writes_the_report(tmp_path):
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "pretrain_throughput.py"), "--tiny", "--device", "cpu",
               "--threads", "1", "--methods", "geclr,mamp", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fast / reference throughput" in done.stdout
    report = json.loads((tmp_path / "pretrain_throughput_tiny_cpu.json").read_text())
    assert report["device_type"] == "cpu" and report["device"] and report["torch"] == torch.__version__
    assert report["flops_per_step"] > 0 and report["bf16_peak_tflops"] is None
    assert report["cpu"]["native_bf16"] == cpu_native_bf16()
    assert report["matmul"]["fp32_gflops"] > 0 and report["matmul"]["bf16_gflops"] > 0
    assert len(report["load_average_per_round"]) == report["settings"]["rounds"] == 2
    assert list(report["paths"]) == ["reference", "eager", "fast"]
    for name, path in report["paths"].items():
        for field in ("sequences_per_second", "ms_per_step", "cpu_ms_per_step", "peak_memory_bytes", "achieved_gflops",
                      "fraction_of_fp32_matmul", "fraction_of_bf16_matmul", "ratio_to_reference", "ratio_to_eager"):
            assert path[field] > 0, (name, field)
        assert path["peak_memory_kind"] and len(path["ms_per_step_rounds"]) == 2
        assert np.isfinite(path["mean_loss"]) and path["fraction_of_bf16_peak"] is None
        assert path["sequences_per_second"] == pytest.approx(1000 * report["settings"]["batch_size"] / path["ms_per_step"])
        assert path["achieved_gflops"] == pytest.approx(report["flops_per_step"] / path["ms_per_step"] / 1e6)
        assert path["fraction_of_bf16_matmul"] == pytest.approx(path["achieved_gflops"] / report["matmul"]["bf16_gflops"])
        assert path["loss_dtype"] == "torch.float32"  # losses stay float32 on every path
        projection = path["projection"]
        assert projection["label"].startswith("projection from measured step time")
        assert projection["seconds"] == pytest.approx(300 * projection["steps_per_epoch"] * path["ms_per_step"] / 1000)
    fast, eager = report["paths"]["fast"], report["paths"]["eager"]
    assert eager["encoder_dtype"] == "torch.float32" and eager["active"] is None
    assert fast["encoder_dtype"] == ("torch.bfloat16" if cpu_native_bf16() else "torch.float32")  # bf16 inside
    assert fast["active"]["amp"] == cpu_native_bf16() and fast["active"]["channels_last"]
    assert not fast["active"]["compile"] and not fast["active"]["cuda_graphs"]  # no compile for a short run
    assert report["ratio_fast_over_reference"] == pytest.approx(
        report["paths"]["reference"]["ms_per_step"] / fast["ms_per_step"])
    assert fast["ratio_to_eager"] == pytest.approx(eager["ms_per_step"] / fast["ms_per_step"])
    assert report["targets"]["path"] == "fast" and set(report["targets"]) == {
        "path", "fast_over_eager", "fast_over_reference", "fraction_of_bf16_matmul"}
    assert set(report["methods"]) == {"geclr", "mamp"}
    for method, row in report["methods"].items():
        assert "error" not in row, row
        assert row["flops_per_step"] > 0 and row["eager_ms_per_step"] > 0 and row["fast_ms_per_step"] > 0
        assert row["fast_loss_dtype"] == "torch.float32"
        # peak memory of each path's rounds (the process's resident high-water mark on CPU): at least the
        # resident model and data, so well above zero
        assert row["eager_peak_memory_bytes"] > 2**20 and row["fast_peak_memory_bytes"] > 2**20
        assert row["peak_memory_kind"]
        for name in ("eager", "fast"):
            assert row[f"{name}_sequences_per_second"] == pytest.approx(1000 * 8 / row[f"{name}_ms_per_step"])
            assert row[f"{name}_fraction_of_bf16_matmul"] == pytest.approx(
                row["flops_per_step"] / row[f"{name}_ms_per_step"] / 1e6 / report["matmul"]["bf16_gflops"])
