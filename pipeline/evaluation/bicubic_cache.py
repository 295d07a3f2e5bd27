"""The bicubic baseline of a split, computed once and reused.

Bicubic upscaling of the LR images (PIL, as MATLAB's imresize) scored against HR never changes
for given shards, yet it costs as much CPU time as scoring SR (about 33 ms per face at HR 128 on
one core). Its per-image scores are kept in one JSON file per split and scale, keyed by what
they depend on: the shards (a digest of their manifest), the split, the scale and the metric
definition. A file whose key differs is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import PIL

from pipeline.data import SplitShards
from preprocess.atomic import write_bytes

log = logging.getLogger(__name__)

# Bump when pipeline.evaluation.metrics changes what a score means (border, colour space, window).
METRIC_VERSION = 1
# Per image, in this order.
SCORES = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")


def baseline_key(shards: SplitShards, decoder: str) -> dict[str, object]:
    """decoder: nvJPEG and libjpeg differ by a few grey levels, PIL builds (pillow-simd) by one
    in bicubic resizing; either moves the scores a little."""
    manifest = json.dumps(shards.manifest, sort_keys=True).encode()
    return {
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "split": shards.split,
        "scale": shards.scale,
        "decoder": decoder,
        "pil": PIL.__version__,
        "metric_version": METRIC_VERSION,
        "scores": list(SCORES),
    }


class BicubicBaseline:
    """Per-image bicubic scores of one split: read from the cache file, added to, saved."""

    def __init__(self, shards: SplitShards | None, folders: list[Path], decoder: str) -> None:
        """folders: where the file may live, in order of preference (the shards' folder
        first, a run folder for read-only datasets); the first holding a valid file is read,
        the first writable one is written. decoder: the loader's (`Loader.decoder`). Without
        shards (a folder of images), nothing is cached."""
        self.key = baseline_key(shards, decoder) if shards is not None else None
        self.name = f"bicubic-{shards.split}-x{shards.scale}.json" if shards is not None else ""
        self.folders = folders if shards is not None else []
        self.scores: dict[str, list[float]] = {}
        self.added = 0
        for folder in folders:
            path = folder / self.name
            if path.is_file():
                try:
                    stored = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    log.warning("%s: unreadable bicubic baseline, recomputing it (%s)", path, exc)
                    continue
                if stored.get("key") == self.key:
                    self.scores = stored["images"]
                    break
                log.info("%s: made for other shards or metrics, recomputing it", path)

    def get(self, sample_key: str) -> list[float] | None:
        return self.scores.get(sample_key)

    def add(self, scores: dict[str, list[float]]) -> None:
        fresh = {k: v for k, v in scores.items() if k not in self.scores}
        self.scores.update(fresh)
        self.added += len(fresh)

    def save(self) -> Path | None:
        """Write the file if anything was added; None when no folder is writable."""
        if not self.added or not self.folders:
            return None
        for folder in self.folders:
            path = folder / self.name
            try:
                # one line: about 1.5 MB for the 19,867 val faces
                write_bytes(path, json.dumps({"key": self.key, "images": self.scores}).encode())
            except OSError as exc:
                log.info("%s: cannot write the bicubic baseline here (%s)", path, exc)
                continue
            self.added = 0
            return path
        log.warning("bicubic baseline not cached: no writable folder among %s", self.folders)
        return None
