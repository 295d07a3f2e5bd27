"""FLOP counting and peak measurement behind the benchmarks' MFU figures."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.archs import SRResNet
from pipeline.config import ModelConfig, TrainConfig
from pipeline.perf import matmul_peak, step_flops

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


def test_matmul_peak_is_a_plausible_rate():
    peak = matmul_peak(torch.device("cpu"), "fp32", seconds=0.3)
    assert 1e8 < peak < 1e14  # between a slow core and far more than any CPU here
