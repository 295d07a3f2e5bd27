"""A trained generator: loaded (the one loader of evaluate, upscale and export) from a checkpoint,
a run folder, a released weights file or an MLflow model URI, and applied to images of any size
in tiles, so that memory does not grow with the image.

Tiles overlap: each tile is run with `overlap` LR pixels of context on every side and only its
core is kept, so a pixel sees the same neighbourhood as in the whole image as long as the
overlap covers the network's reach. SRResNet-B16 reaches about 40 LR pixels, but nearly all of
the weight is close: `python bench/tile_seams.py` (B16 as initialised, 128x128 LR, tiles of 32)
measured a largest difference of 11 grey levels without overlap, 1 with 8 and 16 (mean 0.0114,
0.0000); tests/serving/test_upscale.py checks 1 level on a 300x200 image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.archs import to_uint8
from pipeline.runtime.checkpoint import (
    CheckpointError,
    agreed_choice,
    find_checkpoint,
    generator_from,
    generator_weights,
)
from pipeline.runtime.distributed import ProcessPlace, first_problem
from pipeline.runtime.messages import first_line
from pipeline.runtime.precision import autocast
from pipeline.serving.generator_file import (
    GeneratorFileError,
    is_generator_file,
    read_generator_file,
)
from pipeline.serving.mlflow_model import is_model_uri, load_generator_uri


class GeneratorSourceError(Exception):
    """An MLflow model URI that does not give a generator (one line, naming the URI)."""


# what load_generator raises for a source that is not a generator, each with a one-line message
LOAD_ERRORS = (CheckpointError, GeneratorFileError, GeneratorSourceError)


@dataclass
class Generator:
    """A generator ready to run and what it is: LR [0, 1] -> SR [-1, 1] at `scale`; made by
    `phase` at `step` (None where the source does not say: an MLflow model), its `weights` ema,
    raw, or "logged" (an MLflow model: whichever the run logged)."""

    model: nn.Module
    scale: int
    source: str
    step: int | None = 0
    phase: str | None = None
    weights: str = "ema"


def load_generator(
    source: str | Path, device: torch.device, which: str = "ema", place: ProcessPlace | None = None
) -> Generator:
    """The one way a command gets a generator: from a checkpoint file, a run folder (its newest
    readable checkpoint), a released weights file (`.safetensors`), or an MLflow model URI
    (`models:/srgan-celeba-x4/latest`, `runs:/RUN_ID/generator`). With `place`, every rank
    loads the checkpoint that rank 0 found (a run folder's newest can change while it trains),
    and a URI that one rank cannot load stops every rank; each rank resolves a URI itself, so
    name a version (`models:/NAME/3`) where one may be registered during the evaluation."""
    if isinstance(source, str) and is_model_uri(source):
        loaded, problem = None, None
        try:
            loaded = load_generator_uri(source, device)  # exported in eval mode
        except Exception as exc:  # noqa: BLE001 - MLflow's many errors, as one line
            problem = f"{source}: {first_line(exc)}"
        if place is not None:  # a rank that cannot load it stops them all
            problem = first_problem(problem)
        if problem is not None or loaded is None:
            raise GeneratorSourceError(problem or f"{source}: not loaded")
        return Generator(loaded[0], loaded[1], source, step=None, weights="logged")
    if is_generator_file(source):
        model, meta = read_generator_file(Path(source), which)
        return Generator(model.to(device), model.scale, str(source), int(meta.get("step", 0)),
                         meta.get("phase"), meta.get("weights", "ema"))  # fmt: skip
    path = Path(source)
    if place is None:
        found, state = find_checkpoint(path)
    else:  # a run folder's newest can change while it trains: rank 0 picks for every rank
        chosen = agreed_choice(lambda: find_checkpoint(path), place)
        if chosen is None:  # find_checkpoint raises rather than finding nothing
            raise CheckpointError(f"{path}: no checkpoint")
        found, state = chosen
    model = generator_from(state, found, which)
    return Generator(model.to(device), model.scale, str(found), int(state.get("step", 0)),
                     state.get("config", {}).get("phase"),
                     generator_weights(state["model"], which)[1])  # fmt: skip


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
