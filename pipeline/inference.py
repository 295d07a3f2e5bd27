"""A trained generator applied to images of any size: loaded from a checkpoint, a run folder or
an MLflow model URI, run in tiles so that memory does not grow with the image, in bf16/fp16 on
GPUs.

Tiles overlap: each tile is run with `overlap` LR pixels of context on every side and only its
core is kept, so a pixel sees the same neighbourhood as in the whole image as long as the
overlap covers the network's reach. SRResNet-B16 reaches about 40 LR pixels, but nearly all of
the weight is close: `python bench/tile_seams.py` (B16 as initialised, 128x128 LR, tiles of 32)
measured a largest difference of 11 grey levels without overlap, 1 with 8 and 16 (mean 0.0114,
0.0000); tests/test_upscale.py checks 1 level on a 300x200 image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.archs import to_uint8
from pipeline.checkpoint import find_checkpoint, generator_from
from pipeline.generator_file import is_generator_file, read_generator_file
from pipeline.mlflow_model import is_model_uri, load_generator_uri

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Generator:
    """A generator ready to run and what it does: LR [0, 1] -> SR [-1, 1] at `scale`."""

    model: nn.Module
    scale: int
    source: str


def load_generator(source: str | Path, device: torch.device, which: str = "ema") -> Generator:
    """From a checkpoint file, a run folder (its newest readable checkpoint), a released
    weights file (`.safetensors`), or an MLflow model URI (`models:/srgan-celeba-x4/latest`,
    `runs:/RUN_ID/generator`)."""
    if isinstance(source, str) and is_model_uri(source):
        model, scale = load_generator_uri(source, device)  # exported in eval mode
        return Generator(model, scale, source)
    if is_generator_file(source):
        model, _ = read_generator_file(Path(source), which)
        return Generator(model.to(device), model.scale, str(source))
    found, state = find_checkpoint(Path(source))
    model = generator_from(state, found, which)
    return Generator(model.to(device), model.scale, str(found))


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """ "auto": bf16 on GPUs that have it, else fp16 on GPUs, fp32 on the CPU (where bf16 is
    slower than fp32 on most cores)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """torch.autocast in `dtype`, or nothing for fp32 (autocast has no fp32 mode)."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def tile_boxes(size: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """Along one axis: (core start, core end, context start, context end) of each tile."""
    step = tile if tile > 0 else size
    for start in range(0, size, step):
        end = min(start + step, size)
        yield start, end, max(start - overlap, 0), min(end + overlap, size)


@torch.no_grad()
def super_resolve(
    generator: Generator,
    lr: torch.Tensor,
    tile: int = 0,
    overlap: int = 16,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """SR of a batch `lr` (N, 3, H, W) in [0, 1] as uint8 (N, 3, sH, sW); `tile` > 0 runs
    tiles of at most tile x tile LR pixels (plus `overlap` of context on each side) and
    returns the result on the CPU."""
    if tile < 0 or overlap < 0:
        raise ValueError(f"tile and overlap must be >= 0, got {tile} and {overlap}")
    s = generator.scale
    n, _, height, width = lr.shape
    device = lr.device
    # tiled, the output gathers in host memory: only tiles live on the device
    out_device = torch.device("cpu") if tile > 0 else device
    out = torch.empty(n, 3, height * s, width * s, dtype=torch.uint8, device=out_device)
    for y0, y1, cy0, cy1 in tile_boxes(height, tile, overlap):
        for x0, x1, cx0, cx1 in tile_boxes(width, tile, overlap):
            with autocast(device, dtype):
                sr = generator.model(lr[:, :, cy0:cy1, cx0:cx1])
            core = sr[:, :, (y0 - cy0) * s : (y1 - cy0) * s, (x0 - cx0) * s : (x1 - cx0) * s]
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = to_uint8(core).to(out_device)
    return out
