"""Choosing and building the loader for a run."""

from __future__ import annotations

import importlib.util
import logging

from pipeline.data.config import Loader, LoaderConfig
from pipeline.data.dali import DaliLoader  # imports nvidia.dali itself only when it runs
from pipeline.data.reference import ReferenceLoader
from pipeline.data.shardset import SplitShards, open_split
from pipeline.runtime.distributed import ProcessPlace

log = logging.getLogger(__name__)


def dali_available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


def build_loader(
    cfg: LoaderConfig, place: ProcessPlace | None = None, shards: SplitShards | None = None
) -> Loader:
    """DALI when installed (or asked for), else the reference loader; shards checked first.

    `shards`: the split as `open_split` already checked it. The check reads every tar header
    the index points at (about 160k for full CelebA's train split), so a caller that holds the
    result passes it instead of paying for the check again.
    """
    place = place or ProcessPlace.from_env()
    if shards is None:
        shards = open_split(cfg.data, cfg.split, cfg.scale)
    elif (shards.data, shards.split, shards.scale) != (cfg.data, cfg.split, cfg.scale):
        raise ValueError(
            f"shards of {shards.data} {shards.split} x{shards.scale} given for a loader of "
            f"{cfg.data} {cfg.split} x{cfg.scale}"
        )
    backend = cfg.backend
    if backend == "auto":
        backend = "dali" if dali_available() else "reference"
        if backend == "reference":
            log.warning("DALI is not installed: using the reference loader (slower)")
    if backend == "dali":
        if not dali_available():
            raise RuntimeError("the DALI loader was asked for, but nvidia-dali is not installed")
        return DaliLoader(cfg, shards, place)
    return ReferenceLoader(cfg, shards, place)
