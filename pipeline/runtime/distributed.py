"""Where this process sits in a torchrun job, and the few collectives the pipeline needs.

Two process groups: the default one (nccl on GPUs, gloo on CPUs) carries gradients and metric
sums on the training device; a second, gloo on the CPU, carries control messages (stop votes,
shard-check verdicts, cache entries), so agreeing on them never waits for the GPU and never
interleaves with DDP's gradient all-reduces.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessPlace:
    """rank: global rank (picks the data shard); local_rank: the GPU on this node."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"bad process place: {self}")

    @classmethod
    def from_env(cls) -> ProcessPlace:
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def configure_logging(place: ProcessPlace) -> None:
    """Rank 0 tells the story (INFO); the others speak only of problems, and every line names
    its rank."""
    logging.basicConfig(
        level=logging.INFO if place.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {place.rank}] %(levelname)s %(name)s: %(message)s",
    )


_control_group: Any = None  # the CPU gloo group of this job, made by init_distributed
# A third group, gloo, used only when a collective has timed out: the other two may then hold
# a half-done operation that poisons their next one.
_watch_group: Any = None


def init_distributed(place: ProcessPlace, timeout_s: float = 600.0) -> torch.device:
    """The training device, with the process groups set up when there are several ranks.

    timeout_s: how long a collective may wait for the other ranks before it fails (a hung or
    dead rank); torch's own default is 10 minutes for NCCL and 30 for gloo."""
    global _control_group, _watch_group
    if torch.cuda.is_available():
        device = torch.device("cuda", place.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if place.world_size > 1 and not dist.is_initialized():
        store, _, _ = next(dist.rendezvous("env://", rank=place.rank, world_size=place.world_size))
        # torchrun keeps its store across restarts of the workers (pytorch issue 167288): the
        # addresses a dead attempt published would be read as this attempt's, and connecting
        # to them is refused. Each attempt gets keys of its own.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            store=dist.PrefixStore(f"srgan/attempt-{attempt}", store),
            rank=place.rank,
            world_size=place.world_size,
            timeout=timeout,
        )
        _control_group = dist.new_group(backend="gloo", timeout=timeout)
        _watch_group = dist.new_group(backend="gloo", timeout=timeout)
    return device


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def control_group() -> Any:
    """The CPU gloo group (the default group if this process did not make one)."""
    return _control_group if _control_group is not None else dist.group.WORLD


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """In place, on the tensor's device (the default group); unchanged on one process."""
    if distributed():
        dist.all_reduce(tensor)
    return tensor


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (over the CPU group)."""
    if not distributed():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value, group=control_group())
    return values


# What gloo and NCCL say when a collective gave up waiting, and when the other end vanished.
_TIMED_OUT = ("timed out waiting", "collective operation timeout", "socket timeout")
_PEER_GONE = (
    "connection reset by peer",
    "connection closed by peer",
    "broken pipe",
    "remote process exited",
)


def _collective_said(exc: BaseException, words: tuple[str, ...]) -> str | None:
    """The line of a collective's error (a RuntimeError: DistBackendError is one) that holds
    one of `words`, without gloo's [file.cc:line] prefix and its advice; else None. Errors
    that merely mention a timeout elsewhere (a loader's, a file system's) are not matched."""
    if not isinstance(exc, RuntimeError):
        return None
    for line in str(exc).splitlines():
        if any(word in line.lower() for word in words):
            return re.sub(r"^\[[^\]]*\]\s*", "", line.strip()).split(". ")[0]
    return None


def timed_out(exc: BaseException) -> str | None:
    """What a collective said when it gave up waiting (gloo: 'Timed out waiting 10000ms for
    recv operation to complete'; NCCL's watchdog: 'collective operation timeout')."""
    return _collective_said(exc, _TIMED_OUT)


def lost_peer(exc: BaseException) -> str | None:
    """What a collective said when another rank's end of the connection vanished (the process
    died, or its node did): gloo's 'Read error [ADDR]:PORT: Connection reset by peer', NCCL's
    'remote process exited'."""
    return _collective_said(exc, _PEER_GONE)


def silent_ranks(timeout_s: float) -> str:
    """After a collective timed out, on every rank still alive: which ranks do not answer a
    barrier now (torch's monitored barrier, over the CPU group), as rank 0 sees it."""
    try:
        group = _watch_group if _watch_group is not None else dist.group.WORLD
        dist.monitored_barrier(group=group, wait_all_ranks=True,
                               timeout=datetime.timedelta(seconds=timeout_s))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - any failure here is the answer
        found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(exc))
        if found:
            return f"rank(s) {found[1].strip()} did not answer a barrier within {timeout_s:.0f} s"
        return "could not tell which rank: " + (str(exc).splitlines() or [type(exc).__name__])[0]
    return "every rank answered a barrier afterwards"


def first_problem(problem: str | None) -> str | None:
    """The lowest rank's problem, if any rank has one: every rank then fails the same way."""
    return next((p for p in gather_objects(problem) if p is not None), None)
