"""FLOP counting and peak measurement behind the benchmarks' MFU figures."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.archs import SRResNet
from pipeline.config import ModelConfig, TrainConfig
from pipeline.perf import forward_flops, matmul_peak, peak_label, step_flops
from pipeline.srgan import SRGANModel

TINY = ModelConfig(blocks=2, channels=8, d_channels=4)


def test_pretrain_step_costs_about_three_generator_forwards():
    # backward = grad of inputs + grad of weights, each about one forward; the first conv
    # needs no input gradient, so a little under 3x
    forward = FlopCounterMode(display=False)
    with forward:
        SRResNet(4, TINY.blocks, TINY.channels)(torch.rand(1, 3, 16, 16))
    counted = step_flops(TrainConfig(phase="pretrain", scale=4, model=TINY), hr_size=64)
    assert 2.8 < counted / forward.get_total_flops() < 3.0


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


def test_matmul_peak_is_a_plausible_rate():
    peak = matmul_peak(torch.device("cpu"), "fp32", seconds=0.3)
    assert 1e8 < peak < 1e14  # between a slow core and far more than any CPU here


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
    rows = json.loads(out.read_text())["rows"]
    assert [(r["phase"], r["layout"]) for r in rows] == [("pretrain", "nchw"), ("pretrain", "cl")]
    assert all(r["images_per_s"] > 0 and 0 < r["mfu"] < 1.5 for r in rows)
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
