"""Stopping a run cleanly on a signal, with every rank stopping at the same step.

SLURM (preemption, `scancel --signal`) and torchrun send SIGTERM or SIGUSR2 to the ranks,
not necessarily all at the same moment. The ranks must still agree on the step at which they
stop, or DDP hangs in a collective that some ranks never join. The vote travels over the CPU
gloo group (pipeline.runtime.distributed), never through the GPU, and asynchronously: each step
posts this rank's flag and reads the result posted one step earlier, so no step waits for it. All
ranks read the same results at the same steps, so they stop together, one step after the
first rank saw the signal.
"""

from __future__ import annotations

import signal
from typing import Any

import torch
import torch.distributed as dist

from pipeline.runtime.distributed import control_group, distributed

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopRequest:
    """Set by SIGTERM/SIGUSR2 in this process."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None


class StopVote:
    """Whether any rank has asked to stop, agreed by all ranks one step later."""

    def __init__(self, request: StopRequest) -> None:
        self.request = request
        self._flag = torch.zeros(1, dtype=torch.int32)  # CPU: gloo, never the GPU
        self._pending: Any = None

    def should_stop(self) -> bool:
        """Call once per step on every rank."""
        if not distributed():
            return self.request.requested
        agreed = False
        if self._pending is not None:
            self._pending.wait()
            agreed = bool(self._flag[0])
        self._flag = torch.tensor([int(self.request.requested)], dtype=torch.int32)
        self._pending = dist.all_reduce(
            self._flag, op=dist.ReduceOp.MAX, group=control_group(), async_op=True
        )
        return agreed

    def close(self) -> None:
        """Finish the vote in flight, so no rank leaves a collective half done."""
        if self._pending is not None:
            self._pending.wait()
            self._pending = None
