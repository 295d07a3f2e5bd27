"""Validation: PSNR/SSIM of the generator and of bicubic on the same LR images, and a grid.

Runs on one process over the whole val split (every sample, no shuffle, no flip), so the
numbers do not depend on the world size.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import save_image

from pipeline.data import LoaderConfig, SplitShards, build_loader
from pipeline.distributed import ProcessPlace
from pipeline.metrics import bicubic_upscale, psnr, ssim
from preprocess.atomic import tmp_path


@torch.no_grad()
def evaluate(
    generator: nn.Module,
    loader_cfg: LoaderConfig,
    place: ProcessPlace,
    autocast: object,
    max_batches: int = 0,
    grid_path: Path | None = None,
    grid_images: int = 8,
    shards: SplitShards | None = None,
) -> dict[str, float]:
    """Mean metrics over the split; writes the LR | bicubic | SR | HR grid to grid_path.

    shards: the val split as `open_split` checked it, so each evaluation does not check it again.
    """
    cfg = dataclasses.replace(loader_cfg, split="val", shuffle=False, flip=False, drop_last=False)
    loader = build_loader(cfg, ProcessPlace(0, place.local_rank, 1), shards)
    scale = cfg.scale
    was_training = generator.training
    generator.eval()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    grid_rows: list[torch.Tensor] = []
    for number, batch in enumerate(loader):
        if max_batches and number >= max_batches:
            break
        with autocast:  # type: ignore[attr-defined]
            sr = generator(batch.lr.to(loader.device))
        sr01 = ((sr.float().clamp(-1, 1) + 1) / 2).cpu()
        hr01 = ((batch.hr.float() + 1) / 2).cpu()
        bicubic = bicubic_upscale(batch.lr.cpu(), scale)
        for name, image in (("sr", sr01), ("bicubic", bicubic)):
            for channel, y in (("y", True), ("rgb", False)):
                sums[f"{name}_psnr_{channel}"] += psnr(image, hr01, scale, y).sum().item()
                sums[f"{name}_ssim_{channel}"] += ssim(image, hr01, scale, y).sum().item()
        # A colour cast shows as a shift of the mean colour of SR against HR.
        sums["sr_colour_shift"] += (
            (sr01.mean(dim=(2, 3)) - hr01.mean(dim=(2, 3))).abs().mean(dim=1).sum().item()
        )
        count += hr01.shape[0]
        if grid_path is not None and sum(r.shape[0] for r in grid_rows) < grid_images:
            lr_big = F.interpolate(batch.lr.float().cpu(), scale_factor=scale, mode="nearest")
            take = grid_images - sum(r.shape[0] for r in grid_rows)
            for i in range(min(take, hr01.shape[0])):
                grid_rows.append(torch.stack([lr_big[i], bicubic[i], sr01[i], hr01[i]]))
    if was_training:
        generator.train()
    if grid_path is not None and grid_rows:
        grid_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path(grid_path)
        save_image(torch.cat(grid_rows), tmp, nrow=4, padding=2, format="png")
        tmp.replace(grid_path)
    metrics = {f"val/{k}": v / max(count, 1) for k, v in sums.items()}
    metrics["val/images"] = float(count)
    return metrics
