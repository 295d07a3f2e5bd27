"""The reference loader: the webdataset library and a torch DataLoader, no DALI.

For platforms without DALI (macOS, Windows) and as the oracle for DALI's output. It splits
the data across ranks exactly as DALI's reader does (rank r reads sample range r of W in the
first epoch, and moves one range on each epoch), yields the same number of full batches per
epoch, and uses the same value ranges. Only the shuffle order differs: webdataset's buffer
shuffle, seeded by (seed, epoch, rank).

Workers: every worker reads the rank's byte stream (cheap) in the same seeded order and
decodes only the batches b with (b - first) % workers == its id; the DataLoader takes batches
from the workers in turn, so the batch order does not depend on the number of workers.
"""

from __future__ import annotations

import io
import itertools
import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.data.config import (
    Batch,
    EpochPosition,
    LoaderConfig,
    batches_per_epoch,
    epoch_shard,
    rank_range,
)
from pipeline.data.shardset import SplitShards
from pipeline.runtime.distributed import ProcessPlace

log = logging.getLogger(__name__)


def decode_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy wants


def to_lr_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> CHW float in [0, 1]."""
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)


def to_hr_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> CHW float in [-1, 1]."""
    return torch.from_numpy(pixels).permute(2, 0, 1).float().sub_(127.5).div_(127.5)


class _EpochBatches(IterableDataset):
    """Batches of one epoch for one rank, from batch `start` on."""

    def __init__(self, cfg: LoaderConfig, shards: SplitShards, place: ProcessPlace) -> None:
        self.cfg, self.shards, self.place = cfg, shards, place
        self.per_tar = [e["samples"] for e in shards.manifest["splits"][shards.split]["shards"]]
        self.epoch = 0
        self.start = 0

    def _raw_samples(self) -> Iterator[dict[str, Any]]:
        """The rank's samples for this epoch, undecoded, in the seeded order."""
        shard = epoch_shard(self.place.rank, self.epoch, self.place.world_size)
        first, last = rank_range(self.shards.samples, self.place.world_size, shard)
        # Open only the tars that hold part of [first, last).
        offsets = list(itertools.accumulate(self.per_tar, initial=0))
        urls, skip = [], None
        for number, tar in enumerate(self.shards.tars):
            if offsets[number + 1] > first and offsets[number] < last:
                if skip is None:
                    skip = first - offsets[number]
                urls.append(str(tar))
        stream = iter(
            wds.WebDataset(
                urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
            )
        )
        samples = itertools.islice(stream, skip, skip + (last - first))
        if self.cfg.shuffle:
            seed = f"{self.cfg.seed}/{self.epoch}/{self.place.rank}"
            samples = wds.filters._shuffle(
                samples, bufsize=self.cfg.initial_fill, initial=self.cfg.initial_fill, seed=seed
            )
        return samples

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        size = self.cfg.batch_size
        shard = epoch_shard(self.place.rank, self.epoch, self.place.world_size)
        total = batches_per_epoch(
            self.shards.samples, self.place.world_size, size, self.cfg.drop_last, shard
        )
        samples = self._raw_samples()
        for number in range(total):
            chunk = list(itertools.islice(samples, size))
            if number < self.start or (number - self.start) % workers != worker:
                continue
            yield self._decode(chunk, number)

    def _decode(self, chunk: list[dict[str, Any]], number: int) -> Batch:
        lrs, hrs, keys = [], [], []
        for position, sample in enumerate(chunk):
            lr = to_lr_tensor(decode_rgb(sample[self.shards.lr_component]))
            hr = to_hr_tensor(decode_rgb(sample[self.shards.hr_component]))
            if self.cfg.flip:
                coin = random.Random(
                    f"{self.cfg.seed}/{self.epoch}/{self.place.rank}/{number}/{position}"
                ).random()
                if coin < 0.5:  # the same flip for both, so LR and HR stay aligned
                    lr, hr = lr.flip(-1), hr.flip(-1)
            lrs.append(lr)
            hrs.append(hr)
            keys.append(sample["__key__"])
        return Batch(torch.stack(lrs), torch.stack(hrs), keys)


class ReferenceLoader(EpochPosition):
    """Same interface as DaliLoader: iterating gives one epoch of `len(self)` batches."""

    backend = "reference"
    decoder = "pil"

    def __init__(
        self,
        cfg: LoaderConfig,
        shards: SplitShards,
        place: ProcessPlace,
    ) -> None:
        self.cfg, self.shards, self.place = cfg, shards, place
        cuda = torch.cuda.is_available()  # the training device, as the DALI loader's
        self.device = torch.device(f"cuda:{place.local_rank}" if cuda else "cpu")
        self._dataset = _EpochBatches(cfg, shards, place)
        where = f"{shards.data} {shards.split}"
        EpochPosition.__init__(self, cfg, shards.samples, place.world_size, place.rank, where)
        log.info(
            "reference loader on %s: %s split, %d batches of %d per epoch per rank",
            shards.data,
            shards.split,
            self._batches,
            cfg.batch_size,
        )

    def __iter__(self) -> Iterator[Batch]:
        self._dataset.epoch, self._dataset.start = self.epoch, self.batch_in_epoch
        workers = max(0, self.cfg.threads) if self._batches - self.batch_in_epoch > 1 else 0
        # Pinned host memory, so the copies to the GPU are asynchronous (from pageable memory
        # every copy would make the host wait for the GPU).
        cuda = self.device.type == "cuda"
        loader = DataLoader(
            self._dataset,
            batch_size=None,
            num_workers=workers,
            prefetch_factor=self.cfg.prefetch if workers else None,
            pin_memory=cuda,
        )
        for batch in loader:
            self.batch_in_epoch += 1
            keys = batch.keys if self.cfg.with_keys else None
            lr = batch.lr.to(self.device, non_blocking=cuda)
            yield Batch(lr, batch.hr.to(self.device, non_blocking=cuda), keys)
        self.next_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "epoch": self.epoch, "batch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("backend") != self.backend:
            raise ValueError(
                f"loader state is from the {state.get('backend')} loader, not the reference loader"
            )
        self.move_to(state["epoch"], state["batch"])
