"""The random state a checkpoint keeps, restored on another machine."""

from __future__ import annotations

import random

import torch

from pipeline.runtime.rng import set_rng_state


def test_a_checkpoints_gpu_random_state_restores_where_fewer_gpus_are_visible(monkeypatch):
    # saved by a process that saw 8 GPUs, resumed where 2 are (fakes: no GPU needed)
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.append(device))
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    set_rng_state({**state, "cuda": [torch.ByteTensor([d]) for d in range(8)]})
    assert restored == [0, 1]
