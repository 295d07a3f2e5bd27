"""FLOP counting and peak measurement behind the benchmarks' MFU figures."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.archs import SRResNet
from pipeline.training import perf
from pipeline.training.config import ModelConfig, TrainConfig
from pipeline.training.perf import forward_flops, peak_label, step_flops
from pipeline.training.steps import SRGANModel

TINY = ModelConfig(blocks=2, channels=8, d_channels=4)


def _conv(c_in: int, c_out: int, kernel: int, side: int) -> int:
    """FLOPs of a square conv per image, by hand: a multiply and an add per weight per pixel."""
    return 2 * c_in * c_out * kernel * kernel * side * side


def srresnet_flops(scale: int, blocks: int, channels: int, lr_side: int) -> tuple[int, int]:
    """(first conv, whole forward) of SRResNet, counted from its layers as the paper draws
    them: 9x9 head, 2 convs per block, the conv after the blocks, a conv to 4C per doubling,
    9x9 tail. Independent of torch's FlopCounterMode."""
    head = _conv(3, channels, 9, lr_side)
    body = (2 * blocks + 1) * _conv(channels, channels, 3, lr_side)
    stages = range(int(math.log2(scale)))
    upsample = sum(_conv(channels, 4 * channels, 3, lr_side * 2**i) for i in stages)
    return head, head + body + upsample + _conv(channels, 3, 9, lr_side * scale)


def test_pretrain_step_costs_three_generator_forwards_less_the_first_convs_input_gradient():
    # backward = grad of inputs + grad of weights, each one forward's FLOPs; the LR image
    # needs no gradient, so the first conv's input gradient is not computed
    head, forward = srresnet_flops(4, TINY.blocks, TINY.channels, lr_side=16)
    counter = FlopCounterMode(display=False)
    with counter:
        SRResNet(4, TINY.blocks, TINY.channels)(torch.rand(1, 3, 16, 16))
    assert counter.get_total_flops() == forward  # torch's counter counts as the hand does
    counted = step_flops(TrainConfig(phase="pretrain", scale=4, model=TINY), hr_size=64)
    assert counted == 3 * forward - head


def test_gan_step_adds_vgg_and_discriminator_work_that_grows_with_them():
    pretrain = step_flops(TrainConfig(phase="pretrain", scale=4, model=TINY), hr_size=64)
    gan = step_flops(TrainConfig(phase="gan", scale=4, model=TINY), hr_size=64)
    wider_d = ModelConfig(blocks=TINY.blocks, channels=TINY.channels, d_channels=8)
    gan_wider_d = step_flops(TrainConfig(phase="gan", scale=4, model=wider_d), hr_size=64)
    # VGG19 to relu5_4 forward on SR and HR plus backward to SR dwarfs this tiny G
    assert gan > 10 * pretrain
    assert gan_wider_d > gan  # D's convolutions are counted too


def test_gan_step_runs_g_once_and_keeps_d_weights_out_of_the_g_update():
    # Our GAN step: G forward + backward (3 G forwards), the content loss's VGG work, D on SR
    # for G's adversarial term with D frozen (forward + backward to SR: 2 D forwards), then D
    # forward + backward on real and fake (3 each): 3G + content + 8D, less the first convs'
    # input gradients that nobody needs. A second G forward (regenerating SR for the D update)
    # or D weight gradients in the G update would each add a whole G or D forward.
    model_cfg = ModelConfig(blocks=2, channels=8, d_channels=16)
    cfg = TrainConfig(phase="gan", scale=4, model=model_cfg, vgg_weights="random",
                      precision="fp32", channels_last=False)  # fmt: skip
    g_forward, d_forward = forward_flops(cfg, hr_size=64)
    content_loss = SRGANModel(cfg, 64, torch.device("cpu"), world_size=1).content
    assert content_loss is not None
    sr = torch.rand(1, 3, 64, 64, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        content_loss(sr, torch.rand(1, 3, 64, 64)).backward()
    expected = 3 * g_forward + counter.get_total_flops() + 8 * d_forward
    counted = step_flops(cfg, hr_size=64)
    assert expected - 0.25 * d_forward < counted <= expected


def test_matmul_peak_is_the_flops_of_the_matmuls_run_over_their_time(monkeypatch):
    """A clock that moves 0.1 s per matmul: the peak must then be the FLOPs of one of the
    matmuls actually run (2 m k n, from their shapes) over 0.1 s, whatever the loop does."""
    shapes: list[tuple[int, int, int]] = []
    real_matmul = torch.Tensor.__matmul__

    def counted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        shapes.append((a.shape[0], a.shape[1], b.shape[1]))
        return real_matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", counted)
    monkeypatch.setattr(perf.time, "perf_counter", lambda: 0.1 * len(shapes))
    peak = perf.matmul_peak(torch.device("cpu"), "fp32", seconds=0.3)
    (shape,) = set(shapes)
    assert peak == pytest.approx(2 * math.prod(shape) / 0.1, rel=1e-9)
    assert len(shapes) >= 3 + 3  # the warm-up, then at least 0.3 s of the fake clock


def test_matmul_peak_is_the_best_window_when_other_work_slows_some(monkeypatch):
    """Other work on the device makes some matmuls take 4x as long: the peak is still the rate
    of the unhindered ones (the mean would be 2.5x lower, and an MFU against it above 100%)."""
    durations: list[float] = []
    real_matmul = torch.Tensor.__matmul__

    def hindered(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        durations.append(0.4 if len(durations) % 2 else 0.1)  # every other one slowed
        return real_matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", hindered)
    monkeypatch.setattr(perf.time, "perf_counter", lambda: sum(durations))
    peak = perf.matmul_peak(torch.device("cpu"), "fp32", seconds=1.0)
    assert peak == pytest.approx(2 * 1024**3 / 0.1, rel=1e-9)
    assert sum(durations[3:]) >= 1.0  # it still ran for the time asked


@pytest.mark.system
def test_train_step_benchmark_prints_a_row_per_setting_and_the_fastest(tmp_path):
    import json
    import subprocess
    import sys

    from helpers import PROJECT_ROOT

    out = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, "bench/train_step.py", "--phases", "pretrain", "--precisions", "fp32",
         "--layouts", "nchw,cl", "--batch-sizes", "2", "--steps", "1", "--warmup", "1",
         "--blocks", "1", "--channels", "8", "--d-channels", "4", "--peak-seconds", "0.2",
         "--json", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads(out.read_text())
    rows = written["rows"]
    assert [(r["phase"], r["layout"]) for r in rows] == [("pretrain", "nchw"), ("pretrain", "cl")]
    # the FLOPs behind each row's FLOP/s: a pretrain step of B1 C8 at HR 128 x4, by hand
    head, forward = srresnet_flops(4, blocks=1, channels=8, lr_side=32)
    for row in rows:
        assert row["flop_per_s"] / row["images_per_s"] == pytest.approx(3 * forward - head)
        # against the peak the run timed (not <= 1: a neighbour on the CPU while the peak was
        # timed makes it low, seen on CI's two xdist workers)
        assert row["mfu"] == pytest.approx(row["flop_per_s"] / written["peaks"]["fp32"])
        assert 0 < row["mfu"] < 3  # a peak timed beside other work may be low, not 3x low
    assert "fastest pretrain: fp32 eager" in result.stdout


def test_fp32_peak_on_cuda_is_labelled_by_the_precision_convolutions_run_in():
    # On the H200 a strict-fp32 peak made TF32 convolutions show 191% MFU; the label (and
    # the peak) follow cuDNN's TF32 flag. Touches no CUDA API, so it holds without a GPU.
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
        assert peak_label(cuda, "fp32") == "fp32 as tf32"
        assert peak_label(cpu, "fp32") == "fp32"
        assert peak_label(cuda, "bf16") == "bf16"
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        assert peak_label(cuda, "fp32") == "fp32"
