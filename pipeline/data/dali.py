"""The DALI loader: webdataset shards -> decoded, normalised NCHW batches on the device.

On a GPU machine JPEGs are decoded by nvJPEG (`device="mixed"`) and normalised on the GPU;
without CUDA the same graph runs in DALI's CPU-only mode (`device_id=None`), which is how CI
and the tests run it. The reader shards by sample: every rank is given every tar, with
`shard_id` = global rank and `device_id` = local rank.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from pipeline.data.config import Batch, EpochPosition, LoaderConfig, epoch_shard
from pipeline.data.shardset import SplitShards
from pipeline.runtime.distributed import ProcessPlace

log = logging.getLogger(__name__)

READER = "reader"
# Keys come out of DALI as the bytes of "tar path:offset:member name", padded to this length.
SOURCE_INFO_BYTES = 1024


def use_gpu_decoding(requested: str) -> bool:
    """'auto' follows CUDA; 'gpu' without CUDA is an error rather than a silent fallback."""
    available = torch.cuda.is_available()
    if requested == "gpu" and not available:
        raise RuntimeError("--decode-device gpu asked for, but CUDA is not available")
    return available if requested == "auto" else requested == "gpu"


def _pipeline(
    cfg: LoaderConfig,
    shards: SplitShards,
    place: ProcessPlace,
    gpu: bool,
    checkpoint: str | None,
    first_epoch: int = 0,
) -> Any:
    """`first_epoch`: the epoch a reader without a checkpoint starts in (a run resumed on other
    ranks or at another batch): its shard, and a shuffle seed of its own."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=cfg.batch_size,
        num_threads=cfg.threads,
        device_id=place.local_rank if gpu else None,
        prefetch_queue_depth=cfg.prefetch,
        seed=(cfg.seed * 100_003 + place.rank + first_epoch * 1_000_003) % 2**31,
        enable_checkpointing=True,
    )
    def sr_pipeline():  # type: ignore[no-untyped-def]
        hr_bytes, lr_bytes = fn.readers.webdataset(
            paths=[str(p) for p in shards.tars],
            index_paths=[str(p) for p in shards.indexes],
            ext=[shards.hr_component, shards.lr_component],
            missing_component_behavior="error",
            shard_id=epoch_shard(place.rank, first_epoch, place.world_size),
            num_shards=place.world_size,
            random_shuffle=cfg.shuffle,
            initial_fill=cfg.initial_fill,
            pad_last_batch=True,
            name=READER,
        )
        decode = "mixed" if gpu else "cpu"
        hr = fn.decoders.image(hr_bytes, device=decode, output_type=types.RGB)
        lr = fn.decoders.image(lr_bytes, device=decode, output_type=types.RGB)
        mirror = fn.random.coin_flip(probability=0.5) if cfg.flip else 0

        # One coin per sample, applied to both images, so LR and HR stay aligned.
        def to_chw_float(image, mean: float, std: float):  # type: ignore[no-untyped-def]
            return fn.crop_mirror_normalize(
                image,
                dtype=types.FLOAT,
                output_layout="CHW",
                mean=[mean] * 3,
                std=[std] * 3,
                mirror=mirror,
            )

        lr = to_chw_float(lr, 0.0, 255.0)  # [0, 1]
        hr = to_chw_float(hr, 127.5, 127.5)  # [-1, 1]
        if not cfg.with_keys:
            return lr, hr
        info = fn.get_property(hr_bytes, key="source_info")
        return lr, hr, fn.pad(info, fill_value=0, axes=0, shape=SOURCE_INFO_BYTES)

    return sr_pipeline(checkpoint=checkpoint) if checkpoint else sr_pipeline()


def _key_of(info: torch.Tensor) -> str:
    text = bytes(info[info > 0].tolist()).decode()
    return text.rsplit(":", 1)[-1].split(".", 1)[0]


class DaliLoader(EpochPosition):
    """Iterating gives one epoch of `len(self)` batches; the next iteration the next epoch."""

    backend = "dali"

    def __init__(self, cfg: LoaderConfig, shards: SplitShards, place: ProcessPlace) -> None:
        self.cfg, self.shards, self.place = cfg, shards, place
        self.gpu = use_gpu_decoding(cfg.decode_device)
        self.device = torch.device(f"cuda:{place.local_rank}" if self.gpu else "cpu")
        self.decoder = "dali-nvjpeg" if self.gpu else "dali-cpu"
        where = f"{shards.data} {shards.split}"
        EpochPosition.__init__(self, cfg, shards.samples, place.world_size, place.rank, where)
        log.info(
            "DALI loader on %s: %s split, %d batches of %d per epoch per rank, decode on %s",
            shards.data,
            shards.split,
            self._batches,
            cfg.batch_size,
            "GPU (nvJPEG)" if self.gpu else "CPU",
        )
        self._first_epoch = 0
        self._iterator = self._make_iterator(checkpoint=None)

    def _make_iterator(self, checkpoint: str | None, first_epoch: int = 0) -> Any:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        names = ["lr", "hr", "info"] if self.cfg.with_keys else ["lr", "hr"]
        pipe = _pipeline(self.cfg, self.shards, self.place, self.gpu, checkpoint, first_epoch)
        # Every batch of the padded shard comes out, so each epoch is read to its end; training
        # keeps only the first len(self) (__iter__). DALI's DROP policy can leave a batch of
        # padding unread, which became the next epoch's first batch: one face repeated, the
        # shard order shifted (DALI 2.4, when floor(N / ranks) is a multiple of the batch and
        # N is not of the ranks).
        return DALIGenericIterator(
            [pipe], names, reader_name=READER, last_batch_policy=LastBatchPolicy.PARTIAL,
            auto_reset=True,
        )  # fmt: skip

    def _outputs(self) -> Iterator[dict[str, torch.Tensor]]:
        """DALI's batches to its epoch end, without the empty ones: without drop_last every
        shard is iterated as often as the longest one, and a shorter shard's extra iteration
        comes out empty (DALI 2.4, seen here)."""
        while True:
            try:
                out = next(self._iterator)[0]
            except StopIteration:
                return
            if out["hr"].shape[0] > 0:
                yield out

    def __iter__(self) -> Iterator[Batch]:
        outputs = self._outputs()
        for out in outputs:
            self.batch_in_epoch += 1
            if self.batch_in_epoch == self._batches:
                # The epoch's last batch: read DALI to its epoch end first (the tail that
                # training drops), so a checkpoint taken while this batch is in use already
                # starts the next epoch, as EpochPosition.move_to takes it.
                extra = sum(1 for _ in outputs)
                if extra and not self.cfg.drop_last:
                    raise RuntimeError(f"DALI gave {self._batches + extra} batches, "
                                       f"expected {self._batches}")  # fmt: skip
            keys = [_key_of(row) for row in out["info"]] if self.cfg.with_keys else None
            yield Batch(out["lr"], out["hr"], keys)
            if self.batch_in_epoch == self._batches:
                break
        if self.batch_in_epoch != self._batches:
            raise RuntimeError(f"DALI gave {self.batch_in_epoch} batches, expected {self._batches}")
        self.next_epoch()

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: restoring it gives the batches that would have come next."""
        return {
            "backend": self.backend,
            "epoch": self.epoch,
            "batch": self.batch_in_epoch,
            "dali": self._iterator.checkpoints()[0],
            # DALI's checkpoint counts epochs from its reader's start: where that start was
            "dali_first_epoch": self._first_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("backend") != self.backend:
            raise ValueError(f"loader state is from the {state.get('backend')} loader, not DALI")
        self._first_epoch = state.get("dali_first_epoch", 0)  # 0: checkpoints made before it
        self._iterator = None  # one pipeline at a time: the old one's buffers go first
        self._iterator = self._make_iterator(state["dali"], self._first_epoch)
        EpochPosition.move_to(self, state["epoch"], state["batch"])

    def move_to(self, epoch: int, batch: int) -> None:
        """Without DALI's checkpoint (a run resumed on other ranks or at another batch): a new
        reader at that epoch's start, reading the shard the rank reads then, so the resumed run
        neither replays epoch 0's order nor leaves the reference loader's. DALI cannot skip
        into an epoch without its checkpoint."""
        if 0 < batch < self._count(epoch):  # checked before anything moves
            raise ValueError(f"DALI moves to an epoch's start without its checkpoint, not to "
                             f"batch {batch} of epoch {epoch}")  # fmt: skip
        EpochPosition.move_to(self, epoch, batch)
        self._first_epoch = self.epoch
        self._iterator = None  # one pipeline at a time: the old one's buffers go first
        self._iterator = self._make_iterator(checkpoint=None, first_epoch=self.epoch)
