"""bench/noise_scale.py: the paper's estimator recovers a known noise scale, and the script
measures a generator on real shards."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import torch
from helpers import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("noise_scale", PROJECT_ROOT / "bench/noise_scale.py")
noise_scale = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
sys.modules["noise_scale"] = noise_scale  # its dataclass looks its module up there
spec.loader.exec_module(noise_scale)  # type: ignore[union-attr]


def test_the_estimator_recovers_the_true_gradient_and_the_noise_from_expected_norms():
    # E|G_b|^2 = |G|^2 + tr(Sigma) / b: from these expectations the estimates are exact
    true_sq, trace = 0.5, 40.0
    small_sq = [true_sq + trace / 16] * 3
    big_sq = [true_sq + trace / 128] * 3
    found = noise_scale.estimate(small_sq, big_sq, 16, 128)
    assert found.true_gradient_sq == pytest.approx(true_sq)
    assert found.trace_sigma == pytest.approx(trace)
    assert found.batch == pytest.approx(80.0)
    with pytest.raises(ValueError, match="must exceed"):
        noise_scale.estimate(small_sq, big_sq, 16, 16)


def test_the_estimator_on_sampled_gradients_finds_their_noise_scale():
    # per-sample gradients G + N(0, s^2 I) in d dimensions: B_noise = d s^2 / |G|^2 = 64
    generator = torch.Generator().manual_seed(0)
    d, s, small, big = 256, 0.5, 4, 32
    true = torch.full((d,), (d * s**2 / 64 / d) ** 0.5, dtype=torch.float64)
    small_sq, big_sq = [], []
    for _ in range(400):
        samples = true + s * torch.randn(big, d, generator=generator, dtype=torch.float64)
        micro = samples.view(big // small, small, d).mean(1)
        small_sq.append(float(micro.square().sum(1).mean()))
        big_sq.append(float(micro.mean(0).square().sum()))
    assert noise_scale.estimate(small_sq, big_sq, small, big).batch == pytest.approx(64, rel=0.15)


def test_images_needed_grow_with_the_batch_beyond_the_noise_scale():
    assert noise_scale.images_relative(16, 16, 10.0) == pytest.approx(1.0)
    assert noise_scale.images_relative(256, 16, 16.0) == pytest.approx(17 / 2)
    assert noise_scale.images_relative(256, 16, float("inf")) == pytest.approx(1.0)
    unresolved = noise_scale.NoiseScale(-0.001, 0.2)
    assert not unresolved.resolved and "unresolved" in unresolved.summary()
    assert "batch 256" not in unresolved.summary()  # no cost predicted from a meaningless ratio


def _line(name: str, true_sq: float, trace: float, small: int = 16, big: int = 256) -> str:
    """What the script prints for a checkpoint whose draws give these two estimates."""
    small_sq, big_sq = [true_sq + trace / small] * 2, [true_sq + trace / big] * 2
    return noise_scale.describe(name, small_sq, big_sq, small, big, 1.0) + "\n"


def test_checkpoints_of_a_stretch_are_combined_as_the_ratio_of_their_averages(tmp_path):
    log = tmp_path / "noise.log"
    log.write_text(
        _line("run/step-00000100.pt (step 100, raw)", 0.04, 0.4)
        + _line("run/step-00000200.pt (step 200, raw)", 0.002, 0.2)
        + _line("fresh B4 C32 x4", 2.4, 3.5)  # not a checkpoint of the run
        + _line("run/step-00000300.pt (step 300, raw)", -0.001, 0.1)
    )
    assert "step-00000300.pt (step 300, raw): B_noise unresolved" in log.read_text()
    line = noise_scale.combine([log], 100, 200)
    # (0.4 + 0.2) / 2 over (0.04 + 0.002) / 2, not the mean of 10 and 100
    assert line.startswith(f"steps 100 200, 2 checkpoints averaged: B_noise {0.3 / 0.021:.1f} ")
    assert f"batch 256 x{(1 + 256 * 0.07) / (1 + 16 * 0.07):.2f}" in line, line
    # an unresolved checkpoint's estimates still count: they are unbiased, only their ratio is not
    assert noise_scale.combine([log], 100, 300).startswith(
        f"steps 100 200 300, 3 checkpoints averaged: B_noise {0.7 / 3 / (0.041 / 3):.1f} "
    )
    assert "unresolved" in noise_scale.combine([log], 300, 300)
    with pytest.raises(ValueError, match="no checkpoint line of steps 400-500"):
        noise_scale.combine([log], 400, 500)
    with pytest.raises(ValueError, match=r"step-00000100\.pt \(step 100\) measured twice"):
        noise_scale.combine([log, log], 100, 200)


@pytest.mark.system
def test_noise_scale_bench_measures_a_generator_and_names_a_missing_model(shards_faces128,
                                                                         tmp_path):  # fmt: skip
    result = subprocess.run(
        [sys.executable, "bench/noise_scale.py", "--data", str(shards_faces128),
         "--fresh", "1,8", "--draws", "2", "--micro-batch", "2", "--micro-batches", "3",
         "--threads", "1"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = re.search(r"^fresh B1 C8 x4: B_noise (\S+) \(\|G\|\^2 (\S+), tr\(Sigma\) (\S+)\); "
                     r".*batch 256 x(\S+); halves of the draws: \S+ / \S+; 2 draws of 3 x 2 in",
                     result.stdout, re.MULTILINE)  # fmt: skip
    assert line, result.stdout
    noise, true_sq, trace = float(line[1]), float(line[2]), float(line[3])
    assert noise == pytest.approx(trace / true_sq, rel=0.01), result.stdout
    bad = subprocess.run([sys.executable, "bench/noise_scale.py", "--data", str(shards_faces128),
                          "--model", str(tmp_path / "nothing")],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "nothing" in bad.stderr.strip().splitlines()[-1], bad.stderr
