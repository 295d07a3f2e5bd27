"""What a `shard` job is asked to do, and its plan: which image goes to which shard, in which
order, fixed by the inputs and the seed before any image is read (preprocess/job.py runs it,
preprocess/manifest.py records it)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from preprocess.celeba import SPLITS
from preprocess.images import Encoding
from preprocess.protocol import Protocol

PROGRESS_DIR = ".progress"


@dataclass(frozen=True)
class ShardJob:
    celeba_root: Path
    out: Path
    protocol: Protocol
    encoding: Encoding
    samples_per_shard: int = 1000
    workers: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError(f"samples per shard must be >= 1, got {self.samples_per_shard}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class ShardPlan:
    split: str
    number: int
    names: tuple[str, ...]

    @property
    def tar(self) -> str:
        """Path of the tar relative to the output folder."""
        return f"{self.split}/{self.split}-{self.number:06d}.tar"

    @property
    def record(self) -> str:
        return f"{PROGRESS_DIR}/{self.split}-{self.number:06d}.json"


@dataclass(frozen=True)
class Plan:
    shards: list[ShardPlan]
    listed: dict[str, int]
    missing: int
    unlisted: int


def plan_shards(
    partition: dict[str, list[str]], present: set[str], seed: int, samples_per_shard: int
) -> Plan:
    """Shuffle each split's present images with the seed and cut them into shards.

    DALI and webdataset only shuffle within a small buffer, so the global shuffle has to be
    in the shards themselves. Sorting first makes the order independent of how the
    file system lists the folder.
    """
    shards: list[ShardPlan] = []
    listed_all: set[str] = set()
    missing = 0
    for split in SPLITS:
        listed = partition[split]
        listed_all.update(listed)
        names = sorted(name for name in listed if name in present)
        missing += len(listed) - len(names)
        random.Random(f"{seed}/{split}").shuffle(names)
        for number, start in enumerate(range(0, len(names), samples_per_shard)):
            shards.append(ShardPlan(split, number, tuple(names[start : start + samples_per_shard])))
    return Plan(
        shards=shards,
        listed={split: len(partition[split]) for split in SPLITS},
        missing=missing,
        unlisted=len(present - listed_all),
    )
