"""Choosing and building the loader for a run."""

from __future__ import annotations

import importlib.util
import logging

from pipeline.data.config import Loader, LoaderConfig
from pipeline.data.shardset import open_split
from pipeline.distributed import ProcessPlace

log = logging.getLogger(__name__)


def dali_available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


def build_loader(cfg: LoaderConfig, place: ProcessPlace | None = None) -> Loader:
    """DALI when installed (or asked for), else the reference loader; shards checked first."""
    place = place or ProcessPlace.from_env()
    shards = open_split(cfg.data, cfg.split, cfg.scale)
    backend = cfg.backend
    if backend == "auto":
        backend = "dali" if dali_available() else "reference"
        if backend == "reference":
            log.warning("DALI is not installed: using the reference loader (slower)")
    if backend == "dali":
        if not dali_available():
            raise RuntimeError("the DALI loader was asked for, but nvidia-dali is not installed")
        from pipeline.data.dali import DaliLoader

        return DaliLoader(cfg, shards, place)
    from pipeline.data.reference import ReferenceLoader

    return ReferenceLoader(cfg, shards, place)
