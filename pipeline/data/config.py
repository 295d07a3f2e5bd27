"""The loader's settings and what it yields."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import torch

Backend = Literal["auto", "dali", "reference"]
DecodeDevice = Literal["auto", "gpu", "cpu"]


class Batch(NamedTuple):
    """lr: N x 3 x h x w in [0, 1]; hr: N x 3 x H x W in [-1, 1] (as in Ledig et al.).

    keys: the CelebA ids of the samples, only when the loader was asked for them.
    """

    lr: torch.Tensor
    hr: torch.Tensor
    keys: list[str] | None = None


@dataclass
class ReadSettings:
    """How a training run reads its shards: TrainConfig.loader (a config file's [loader] table,
    the --loader* flags). Its defaults are LoaderConfig's too, and the trainer passes these
    fields on to LoaderConfig by name, so a setting added here reaches the loader."""

    backend: Backend = "auto"
    decode_device: DecodeDevice = "auto"
    threads: int = 2
    prefetch: int = 2
    initial_fill: int = 4096
    flip: bool = True


_READ = ReadSettings()


@dataclass(frozen=True)
class LoaderConfig:
    """How one split is read. `batch_size` is per process.

    shuffle/flip: on for training, off for evaluation. initial_fill: the shuffle buffer per
    process (DALI shuffles within it; shards are shuffled globally at preprocessing).
    threads: DALI CPU threads, or the reference loader's worker processes.
    """

    data: Path
    split: str = "train"
    scale: int = 4
    batch_size: int = 16
    shuffle: bool = True
    flip: bool = _READ.flip
    seed: int = 0
    backend: Backend = _READ.backend
    decode_device: DecodeDevice = _READ.decode_device
    threads: int = _READ.threads
    prefetch: int = _READ.prefetch
    initial_fill: int = _READ.initial_fill
    with_keys: bool = False
    drop_last: bool = True  # training: equal full batches on every rank; eval: every sample

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.backend not in ("auto", "dali", "reference"):
            raise ValueError(f"backend must be auto, dali or reference, got {self.backend!r}")
        if self.decode_device not in ("auto", "gpu", "cpu"):
            raise ValueError(f"decode device must be auto, gpu or cpu, got {self.decode_device!r}")


def batches_per_epoch(
    samples: int, world_size: int, batch_size: int, drop_last: bool = True, shard: int = 0
) -> int:
    """Batches that a rank yields per epoch.

    The readers give the rank reading `shard` the samples [N*shard/W, N*(shard+1)/W), so the
    shards differ by at most one sample. With drop_last (training) every rank stops after the
    full batches of the smallest shard, so DDP never waits on a rank that has run out; without
    it (evaluation) a rank yields all of its own shard, the last batch partial.
    """
    if drop_last:
        return (samples // world_size) // batch_size
    first, last = rank_range(samples, world_size, shard)
    return -(-(last - first) // batch_size)


def epoch_batches(
    cfg: LoaderConfig, samples: int, world_size: int, where: str, shard: int = 0
) -> int:
    """batches_per_epoch, refusing a split too small to give any batch."""
    batches = batches_per_epoch(samples, world_size, cfg.batch_size, cfg.drop_last, shard)
    # decided the same way on every rank (never by the rank's own shard), so no rank raises
    # while the others go on into a collective
    if batches == 0 or samples < world_size:
        wanted = "full batch" if cfg.drop_last else "sample for every process"
        raise ValueError(
            f"{where}: {samples} samples over {world_size} processes give no {wanted} "
            f"(batch {cfg.batch_size})"
        )
    return batches


def epoch_shard(place_rank: int, epoch: int, world_size: int) -> int:
    """The reader shard a rank reads in an epoch: DALI's readers move one shard per epoch."""
    return (place_rank + epoch) % world_size


def rank_range(samples: int, world_size: int, shard: int) -> tuple[int, int]:
    """The sample range of one reader shard, as DALI splits a dataset."""
    return samples * shard // world_size, samples * (shard + 1) // world_size


class EpochPosition:
    """Where a loader is in its data: the epoch, the batches yielded in it, and its length.

    Both loaders keep it the same way, so a checkpoint's position means the same whichever
    loader wrote it.
    """

    def __init__(self, cfg: LoaderConfig, samples: int, world_size: int, rank: int, where: str):
        self._count_args = (cfg, samples, world_size, where)
        self._rank = rank
        self.epoch = 0
        self.batch_in_epoch = 0
        self._batches = self._count()

    def _count(self, epoch: int | None = None) -> int:
        """Batches in `epoch` (the current one by default)."""
        cfg, samples, world_size, where = self._count_args
        shard = epoch_shard(self._rank, self.epoch if epoch is None else epoch, world_size)
        return epoch_batches(cfg, samples, world_size, where, shard)

    def __len__(self) -> int:
        return self._batches

    def next_epoch(self) -> None:
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self._batches = self._count()

    def move_to(self, epoch: int, batch: int) -> None:
        """Go to a saved position.

        A position saved after an epoch's last batch but before the loader saw the epoch end
        is the start of the next epoch: DALI's checkpoint taken there already starts it
        (tests/data/test_loader.py::test_resume_at_an_epoch_end_starts_the_next_epoch).
        """
        self.epoch, self.batch_in_epoch = epoch, batch
        self._batches = self._count()
        if self.batch_in_epoch >= self._batches:
            self.next_epoch()


class Loader(Protocol):
    """What the trainer relies on; DaliLoader and ReferenceLoader both provide it."""

    backend: str
    decoder: str  # what decodes the JPEGs: "dali-nvjpeg", "dali-cpu" or "pil"
    device: torch.device
    epoch: int
    batch_in_epoch: int

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Batch]: ...
    def move_to(self, epoch: int, batch: int) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
