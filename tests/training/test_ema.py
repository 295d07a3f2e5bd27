"""The generator's weight average (pipeline/training/ema.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.archs import SRResNet
from pipeline.runtime.checkpoint import generator_weights
from pipeline.training.config import ModelConfig, TrainConfig
from pipeline.training.ema import WeightAverage
from pipeline.training.steps import SRGANModel


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SRResNet(4, blocks=1, channels=8)


def test_the_warmed_up_decay_forgets_the_init_in_a_short_run():
    net = _net()
    average = WeightAverage(net, decay=0.999)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():  # the raw net jumps away from its init once
            p.add_(1.0)
    for _ in range(30):
        average.update(net)
    weight = next(iter(net.parameters()))
    name = next(n for n, _ in net.named_parameters())
    got = average.net.state_dict()[name]
    # with a fixed 0.999, 97% of the average would still be the init after 30 updates
    share_of_init = ((weight - got) / (weight - init[name])).abs().max().item()
    assert share_of_init < 1e-6
    assert average.decay_at(0) == pytest.approx(0.1) and average.decay_at(10**6) == 0.999


def test_batchnorm_statistics_are_averaged_like_the_weights():
    net = _net()
    average = WeightAverage(net, decay=0.5)
    stats = "body.0.body.1.running_mean"
    before = average.net.state_dict()[stats].clone()
    net.train()
    net(torch.rand(4, 3, 8, 8) * 5)  # moves the raw net's running statistics
    average.update(net)  # first update: decay (1 + 0) / 10 = 0.1
    expected = 0.1 * before + 0.9 * net.state_dict()[stats]
    assert torch.allclose(average.net.state_dict()[stats], expected)
    assert not torch.equal(average.net.state_dict()[stats], before)
    tracked = "body.0.body.1.num_batches_tracked"
    assert average.net.state_dict()[tracked] == net.state_dict()[tracked] == 1


def test_state_round_trips_and_the_average_is_not_trained():
    net = _net()
    average = WeightAverage(net, decay=0.9)
    average.update(net)
    copy = WeightAverage(_net(seed=1), decay=0.9)  # other weights, replaced by the load
    copy.load_state_dict(average.state_dict())
    assert copy.updates == 1
    for key, value in average.net.state_dict().items():
        assert torch.equal(value, copy.net.state_dict()[key]), key
    assert not any(p.requires_grad for p in average.net.parameters())
    assert not average.net.training


def test_decay_out_of_range_is_refused():
    with pytest.raises(ValueError, match="EMA decay must be in"):
        WeightAverage(_net(), decay=1.0)


def _model(decay: float = 0.9) -> SRGANModel:
    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(blocks=1, channels=8, d_channels=4), ema_decay=decay)
    return SRGANModel(cfg, 32, torch.device("cpu"), world_size=1)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(value, b[key]) for key, value in a.items())


def test_a_checkpoint_without_an_average_starts_one_from_its_weights():
    trained = _model()
    with torch.no_grad():
        for p in trained.g_raw.parameters():
            p.add_(0.5)
    state = trained.state_dict()
    del state["generator_ema"]  # as written with --ema-decay 0, or before averages existed
    resumed = _model()
    resumed.load_state_dict(state)
    assert _same(resumed.ema.net.state_dict(), state["generator"])
    assert resumed.ema.updates == 0


def test_init_weights_restart_the_average_there_and_the_average_is_what_init_takes():
    model = _model()
    model.train_step(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32) * 2 - 1)
    state = model.state_dict()
    weights, which = generator_weights(state, "ema")
    assert which == "ema" and _same(weights, state["generator_ema"]["weights"])
    assert generator_weights(state, "raw")[0] is state["generator"]
    del state["generator_ema"]
    assert generator_weights(state, "ema")[1] == "raw"  # nothing averaged: the raw weights

    fresh = _model()
    fresh.load_generator(weights)
    assert _same(fresh.ema.net.state_dict(), weights) and fresh.ema.updates == 0
    assert fresh.eval_generator() is fresh.ema.net
