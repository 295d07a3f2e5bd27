"""An exponential moving average (EMA) of the generator: the weights that are evaluated,
exported and used for upscaling, unless the raw ones are asked for.

Two traps, both named in issue 13 (measured there on a plain 4x net, not in this project): with
a fixed decay of 0.999 from step 0, 0.999^2000 = 13.5% of the average is still the random init
after 2,000 steps; and BatchNorm statistics copied from the raw net belong to the raw weights,
not to their average (together: 6.7 dB below bicubic there). So the decay warms up as
(1 + t) / (10 + t) (the init's share is 9! t! / (t + 9)!: 1e-7 after 20 updates) before it
reaches `decay`, and the BatchNorm running statistics are averaged like the weights, so they
belong to the averaged net.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """Kept on every rank (the raw weights are the same on all of them, so is the average):
    evaluation is spread over the ranks and each needs it. No collective, no host sync."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """After each optimizer step of `net` (the raw module, not its DDP wrapper). A step that
        fp16's GradScaler skipped (inf gradients) is averaged in too: telling would cost a
        host sync per step, and the weights it averages in are the unchanged previous ones."""
        weight = 1.0 - self.decay_at(self.updates)
        mine, theirs = self.net.state_dict(), net.state_dict()
        floats = [name for name, value in mine.items() if value.is_floating_point()]
        torch._foreach_lerp_([mine[n] for n in floats], [theirs[n] for n in floats], weight)
        for name, value in mine.items():
            if not value.is_floating_point():  # BatchNorm's num_batches_tracked
                value.copy_(theirs[name])
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.net.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
