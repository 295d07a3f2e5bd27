"""What the training loop measures between logging steps: losses, images/s, data wait.

Losses are summed on the device and read back once per logging window (one host-device
sync per window, none per step). Times are host wall-clock: with a GPU they measure what the
host waits for, which is what limits throughput.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
import torch.distributed as dist


class StepMeter:
    def __init__(self, device: torch.device, global_batch: int, world_size: int) -> None:
        self.device, self.global_batch, self.world_size = device, global_batch, world_size
        self._sums: dict[str, torch.Tensor] = defaultdict(
            lambda: torch.zeros((), device=self.device)
        )
        self._steps, self._wait = 0, 0.0
        self._window_start = self._asked = time.perf_counter()
        self.first_batch_at: float | None = None  # perf_counter when the first batch came
        self.steps_done = 0

    def asking(self) -> None:
        """The loop asks the loader for the next batch."""
        self._asked = time.perf_counter()

    def got_batch(self) -> None:
        now = time.perf_counter()
        self._wait += now - self._asked
        if self.first_batch_at is None:
            self.first_batch_at = now
            self._window_start = now

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            self._sums[name] += value
        self._steps += 1
        self.steps_done += 1

    def window(self) -> dict[str, float]:
        """Means over the window and all ranks, images/s and the data-wait fraction; starts
        the next window. The one host read of the window is here."""
        names = sorted(self._sums)
        stacked = torch.stack([self._sums[n].float() / self._steps for n in names])
        if self.world_size > 1:
            dist.all_reduce(stacked)
            stacked /= self.world_size
        means = dict(zip(names, stacked.tolist(), strict=True))
        elapsed = time.perf_counter() - self._window_start
        means["perf/images_per_s"] = self._steps * self.global_batch / elapsed
        means["perf/data_wait_fraction"] = self._wait / elapsed
        self._sums.clear()
        self._steps, self._wait = 0, 0.0
        self._window_start = time.perf_counter()
        return means

    def images_per_s(self) -> float:
        """Since the first batch, evaluations and checkpoints included."""
        if self.first_batch_at is None or self.steps_done == 0:
            return 0.0
        return self.steps_done * self.global_batch / (time.perf_counter() - self.first_batch_at)
