"""Evaluation batches from a folder of HR images, none of them ever stored lossy by us.

Published tables score SR against lossless HR with a bicubic LR made from it (FSRNet's 1,000
CelebA test faces, for one). `pipeline.evaluate --images DIR` reads every image in DIR as HR
(PIL, any format PIL reads), makes its LR with the same PIL bicubic `srgan-preprocess` uses,
and yields the loaders' `Batch`es. Rank r of W takes images [N*r/W, N*(r+1)/W) of the sorted
names, as the shard readers do, so every image is scored once whatever the process count.
Images that cannot be read, or whose sides the scale does not divide, are skipped with one
warning each and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pipeline.data.config import Batch
from pipeline.runtime.distributed import ProcessPlace
from preprocess.images import resize_bicubic

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


class FolderImages:
    """Iterable of `Batch` (lr in [0, 1], hr in [-1, 1], keys = file names, which key the
    bicubic scores of a batch) for one rank."""

    backend = "folder"
    decoder = "pil-lossless"

    def __init__(self, folder: Path, scale: int, batch_size: int, place: ProcessPlace) -> None:
        files = image_files(folder)
        start = len(files) * place.rank // place.world_size
        stop = len(files) * (place.rank + 1) // place.world_size
        self.files = files[start:stop]
        self.scale, self.batch_size = scale, batch_size
        self.skipped: list[str] = []

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with Image.open(path) as image:
                hr = image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            self.skipped.append(path.name)
            log.warning("%s: skipped, not a readable image (%s)", path, exc)
            return None
        width, height = hr.size
        if width != height or width % self.scale:
            self.skipped.append(path.name)
            log.warning("%s: skipped, %dx%d is not a square whose side %d divides",
                        path, width, height, self.scale)  # fmt: skip
            return None
        lr = resize_bicubic(hr, width // self.scale)
        return np.asarray(lr), np.asarray(hr)

    def __iter__(self) -> Iterator[Batch]:
        self.skipped = []
        pending: list[tuple[str, np.ndarray, np.ndarray]] = []
        for path in self.files:
            pair = self._read(path)
            if pair is not None:
                pending.append((path.name, *pair))  # a.png and a.jpg: two keys
            same_size = all(p[2].shape == pending[0][2].shape for p in pending)
            if pending and (len(pending) == self.batch_size or not same_size):
                *full, last = pending
                batch, pending = (pending, []) if same_size else (full, [last])
                yield _batch(batch)
        if pending:
            yield _batch(pending)


def _batch(items: list[tuple[str, np.ndarray, np.ndarray]]) -> Batch:
    def tensor(images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0

    lr = tensor([item[1] for item in items])
    hr = tensor([item[2] for item in items]) * 2 - 1
    return Batch(lr=lr, hr=hr, keys=[item[0] for item in items])
