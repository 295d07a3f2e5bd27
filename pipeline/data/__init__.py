"""Batches of (LR, HR) for training and evaluation, from the shards of `srgan-preprocess`.

Two loaders with one interface: DALI (the default; decodes on the GPU when there is one) and
a reference loader on webdataset + torch DataLoader (platforms without DALI, and the oracle
that DALI's output is tested against). See `build_loader`.
"""

from pipeline.data.config import Batch, Loader, LoaderConfig
from pipeline.data.factory import build_loader
from pipeline.data.shardset import ShardError, SplitShards, open_split, open_split_once

__all__ = [
    "Batch",
    "Loader",
    "LoaderConfig",
    "ShardError",
    "SplitShards",
    "build_loader",
    "open_split",
    "open_split_once",
]
