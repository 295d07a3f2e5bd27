"""Counting what a training step costs and what the device could do: FLOPs and peak FLOP/s.

Model FLOP utilisation (MFU) = achieved model FLOP/s / the device's peak for the dtype, with
the peak measured on the same device in the same process (a large matmul), so a figure never
rests on a datasheet.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.training.config import TrainConfig
from pipeline.training.steps import SRGANModel

PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def step_flops(cfg: TrainConfig, hr_size: int) -> float:
    """FLOPs per image of one `SRGANModel.train_step` (batch 1, CPU, fp32).

    FlopCounterMode counts matmuls and convolutions, forward and backward; optimizer updates
    and elementwise ops are left out, as MFU conventionally does. Only the total is returned:
    its per-module split double-counts backward work when G, VGG and D interleave (seen: the
    parts of a GAN step summed to 1.33x the total).
    """
    model = SRGANModel(_fp32_eager(cfg), hr_size, torch.device("cpu"), world_size=1)
    side = hr_size // cfg.scale
    lr, hr = torch.rand(1, 3, side, side), torch.rand(1, 3, hr_size, hr_size) * 2 - 1
    counter = FlopCounterMode(display=False)
    with counter:
        model.train_step(lr, hr)
    return float(counter.get_total_flops())


def forward_flops(cfg: TrainConfig, hr_size: int) -> tuple[float, float]:
    """FLOPs per image of one forward of G and one of D (batch 1, CPU, fp32): the units a
    step's count is made of, so a count can be checked against the work the step should do."""
    gan_cfg = dataclasses.replace(cfg, phase="gan")
    model = SRGANModel(_fp32_eager(gan_cfg), hr_size, torch.device("cpu"), world_size=1)
    assert model.d_raw is not None
    side = hr_size // cfg.scale
    counts = []
    for net, image in (
        (model.g, torch.rand(1, 3, side, side)),
        (model.d_raw, torch.rand(1, 3, hr_size, hr_size)),
    ):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(image)
        counts.append(float(counter.get_total_flops()))
    return counts[0], counts[1]


def _fp32_eager(cfg: TrainConfig) -> TrainConfig:
    vgg = cfg.vgg_weights if cfg.phase == "pretrain" else "random"  # counting needs no weights
    return dataclasses.replace(
        cfg, precision="fp32", compile="off", channels_last=False, vgg_weights=vgg
    )


def matmul_peak(device: torch.device, precision: str, seconds: float = 2.0) -> float:
    """FLOP/s of a large square matmul in `precision` on `device`: the practical peak.

    fp32 on CUDA is timed in TF32 when cuDNN may use TF32 (PyTorch's default): convolutions,
    nearly all of a step's FLOPs, run in it, and against a strict-fp32 peak the H200's fp32 GAN
    step showed an MFU of 191%."""
    if device.type == "cuda" and precision == "fp32":
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
        try:
            return _timed_matmul(device, precision, seconds)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    return _timed_matmul(device, precision, seconds)


def peak_label(device: torch.device, precision: str) -> str:
    """The precision the peak was timed in, as the benchmark tables print it."""
    if device.type == "cuda" and precision == "fp32" and torch.backends.cudnn.allow_tf32:
        return "fp32 as tf32"
    return precision


def _timed_matmul(device: torch.device, precision: str, seconds: float) -> float:
    """The best rate of short windows, not the mean over `seconds`: a peak timed while other
    work shared the device (a test beside it, another job) came out low on average, and an
    MFU against it read 151% (CI, two xdist workers on 2 cores)."""
    dtype = PEAK_DTYPES[precision]
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    window = 5 if device.type == "cuda" else 1  # on CUDA a few queued launches hide each sync
    for _ in range(3):
        a @ b
    sync()
    best, start = 0.0, time.perf_counter()
    while True:
        began = time.perf_counter()
        for _ in range(window):
            a @ b
        sync()
        ended = time.perf_counter()
        best = max(best, 2 * n**3 * window / (ended - began))
        if ended - start >= seconds:
            return best


def seconds_per_step(
    cfg: TrainConfig, hr_size: int, device: torch.device, warmup: int, steps: int
) -> float:
    """Seconds per `train_step` of a fresh one-process model on one batch already on the
    device, after `warmup` steps (compilation, allocator): the model alone, no loader."""
    torch.manual_seed(0)
    model = SRGANModel(cfg, hr_size, device, world_size=1)
    side = hr_size // cfg.scale
    lr = torch.rand(cfg.batch_size, 3, side, side, device=device)
    hr = torch.rand(cfg.batch_size, 3, hr_size, hr_size, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model.train_step(lr, hr)
    if model.compile_state == "failed":  # never time eager steps as compiled ones
        raise RuntimeError(f"torch.compile failed: {model.compile_error}")
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        model.train_step(lr, hr)
    sync()
    return (time.perf_counter() - start) / steps
