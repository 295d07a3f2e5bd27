"""Scoring a generator on a split, every rank its part: PSNR/SSIM (Y and RGB) of SR and of
bicubic, optional LPIPS and FID, and a sample grid.

Every rank scores a disjoint part of the split (its reader shard: rank r of W reads samples
[N*r/W, N*(r+1)/W), every sample once, uneven splits included) on its training device; the
per-image sums are all-reduced, so the numbers do not depend on the number of processes.
SR is rounded to 8 bits before it is scored, as the literature scores saved images (BasicSR's
tensor2img, MATLAB on PNGs), and the generator runs in fp32 whatever the training precision,
unless asked otherwise. Bicubic scores are computed once per split and cached
(pipeline.evaluation.bicubic_cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.data import Batch, LoaderConfig, SplitShards, build_loader, open_split_once
from pipeline.data.folder import FolderImages
from pipeline.evaluation.bicubic_cache import SCORES, BicubicBaseline
from pipeline.evaluation.metrics import bicubic_upscale, psnr, ssim
from pipeline.evaluation.perceptual import (
    LPIPS,
    InceptionFeatures,
    SetStatistics,
    frechet_distance,
)
from pipeline.evaluation.sample_grid import SampleGrid
from pipeline.runtime.distributed import ProcessPlace, gather_objects, sum_over_ranks
from pipeline.runtime.precision import autocast

log = logging.getLogger("pipeline.evaluate")

# Summed per image for SR, in this order, then the image count.
SR_SUMS = (*SCORES, "colour_shift")


@dataclass(frozen=True)
class Scores:
    """Means over the split; images_per_rank says how the work was shared."""

    split: str
    images: int
    sr: dict[str, float]
    bicubic: dict[str, float]
    images_per_rank: list[int]
    seconds: float
    skipped: int = 0  # unreadable images of an image folder, left out

    def metrics(self) -> dict[str, float]:
        """Flat, for MLflow: '<split>/sr_psnr_y', '<split>/bicubic_ssim_rgb', '<split>/images'."""
        flat = {f"{self.split}/sr_{k}": v for k, v in self.sr.items()}
        flat |= {f"{self.split}/bicubic_{k}": v for k, v in self.bicubic.items()}
        flat[f"{self.split}/images"] = float(self.images)
        return flat


def to_8bit(image01: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> the nearest of the 256 levels a saved image holds."""
    return torch.round(image01.clamp(0, 1) * 255.0) / 255.0


def image_scores(image: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """N x len(SCORES) per-image scores (float64), the border of `scale` pixels left out."""
    return torch.stack(
        [
            psnr(image, hr, scale, y_channel=True),
            ssim(image, hr, scale, y_channel=True),
            psnr(image, hr, scale, y_channel=False),
            ssim(image, hr, scale, y_channel=False),
        ],
        dim=1,
    )


@torch.no_grad()
def evaluate(
    generator: nn.Module,
    loader_cfg: LoaderConfig,
    place: ProcessPlace,
    *,
    precision: str = "fp32",
    max_batches: int = 0,
    grid_path: Path | None = None,
    grid_images: int = 8,
    shards: SplitShards | None = None,
    baseline: BicubicBaseline | None = None,
    lpips: LPIPS | None = None,
    fid: InceptionFeatures | None = None,
    images: Path | None = None,
) -> Scores:
    """Scores of `generator` on `loader_cfg.split`, every rank taking its part.

    max_batches: at most this many batches per process (0: the whole split; a quick look
    whose numbers depend on the number of processes). shards: the split as `open_split`
    checked it. baseline: the split's bicubic cache, kept by the caller across evaluations
    (made here, beside the shards, when not given). lpips, fid: the perceptual metrics
    (pipeline.evaluation.perceptual), on the generator's device; LPIPS is a mean over images
    like PSNR, FID compares the SR (and bicubic) set with the HR set from statistics summed over
    ranks. images: score the images of this folder as HR (lossless LR made here,
    pipeline.data.folder) instead of the shards of `loader_cfg`.
    """
    start = time.perf_counter()
    cfg = dataclasses.replace(loader_cfg, shuffle=False, flip=False, drop_last=False)
    cfg = dataclasses.replace(cfg, with_keys=True)
    loader: Iterable[Batch]
    if images is not None:
        loader = FolderImages(images, cfg.scale, cfg.batch_size, place)
        baseline = BicubicBaseline(None, [], loader.decoder)
    else:
        shards = shards or open_split_once(cfg.data, cfg.split, cfg.scale, place)
        loader = build_loader(cfg, place, shards)
        baseline = baseline or BicubicBaseline(shards, [shards.data / "baselines"], loader.decoder)
    device = next(generator.parameters()).device
    sr_sums = torch.zeros(len(SR_SUMS) + 1, dtype=torch.float64, device=device)
    bicubic_sums = torch.zeros(len(SCORES), dtype=torch.float64)
    lpips_sums = torch.zeros(2, dtype=torch.float64, device=device)  # SR, bicubic
    # 2048 + 2048^2 float64 sums per set (32 MiB): only when FID is asked for
    fid_sets = {
        name: SetStatistics(2048, device) for name in ("sr", "bicubic", "hr") if fid is not None
    }
    fresh: dict[str, list[float]] = {}
    grid = SampleGrid(grid_images, cfg.scale)
    was_training = generator.training
    _set_training(generator, False)
    try:
        for number, batch in enumerate(loader):
            if max_batches and number >= max_batches:
                break
            lr = batch.lr.to(device)
            hr01 = (batch.hr.to(device).float() + 1) / 2
            with _strict(precision), autocast(device, precision):
                sr = generator(lr)
            sr01 = to_8bit((sr.float() + 1) / 2)
            # A colour cast shows as a shift of the mean colour of SR against HR.
            shift = (sr01.mean(dim=(2, 3)) - hr01.mean(dim=(2, 3))).abs().mean(dim=1)
            sr_sums[: len(SCORES)] += image_scores(sr01, hr01, cfg.scale).sum(dim=0)
            sr_sums[len(SCORES)] += shift.double().sum()
            sr_sums[-1] += hr01.shape[0]
            bicubic_sums += _bicubic_scores(batch.lr, hr01, batch.keys or [], cfg.scale,
                                            baseline, fresh)  # fmt: skip
            if lpips is not None or fid is not None:
                bicubic01 = bicubic_upscale(batch.lr, cfg.scale).to(device)
                if lpips is not None:
                    lpips_sums[0] += lpips(sr01, hr01).sum()
                    lpips_sums[1] += lpips(bicubic01, hr01).sum()
                if fid is not None:
                    for name, pixels in (("sr", sr01), ("bicubic", bicubic01), ("hr", hr01)):
                        fid_sets[name].add(fid(pixels))
            if place.is_main and grid_path is not None:
                grid.add(batch.lr, sr01, hr01)
    finally:
        if was_training:
            _set_training(generator, True)
    totals = sum_over_ranks(torch.cat([sr_sums, bicubic_sums.to(device)])).cpu()
    sum_over_ranks(lpips_sums)
    for statistics in fid_sets.values():
        sum_over_ranks(statistics.sums)
    images_per_rank = gather_objects(int(sr_sums[-1].item()))
    if images is None and not max_batches and sum(images_per_rank) != shards.samples:
        # every score is a mean over the split: a loader that lost or repeated samples must
        # not give one quietly (the same on every rank: the counts are gathered)
        scored = sum(images_per_rank)
        raise RuntimeError(
            f"{shards.data} {cfg.split}: {scored} images scored "
            f"({images_per_rank} per rank), the split holds {shards.samples}"
        )
    skipped = sum(gather_objects(len(loader.skipped) if isinstance(loader, FolderImages) else 0))
    cached_before = len(baseline.scores)
    for entries in gather_objects(fresh):
        baseline.add(entries)
    if place.is_main:
        computed = len(baseline.scores) - cached_before
        log.info("bicubic baseline: %d computed, %d from the cache",
                 computed, int(totals[len(SR_SUMS)].item()) - computed)  # fmt: skip
        baseline.save()
        if grid_path is not None:
            grid.write(grid_path)
    count = max(int(totals[len(SR_SUMS)].item()), 1)
    sr_means = totals[: len(SR_SUMS)] / count
    bicubic_means = totals[len(SR_SUMS) + 1 :] / count
    sr = dict(zip(SR_SUMS, sr_means.tolist(), strict=True))
    bicubic = dict(zip(SCORES, bicubic_means.tolist(), strict=True))
    if lpips is not None:
        sr["lpips"], bicubic["lpips"] = (lpips_sums.cpu() / count).tolist()
    if fid_sets:
        moments = {name: s.mean_and_covariance(s.sums) for name, s in fid_sets.items()}
        sr["fid"] = frechet_distance(moments["sr"], moments["hr"])
        bicubic["fid"] = frechet_distance(moments["bicubic"], moments["hr"])
    return Scores(
        split=cfg.split if images is None else images.name,
        images=int(totals[len(SR_SUMS)].item()),
        sr=sr,
        bicubic=bicubic,
        images_per_rank=images_per_rank,
        seconds=time.perf_counter() - start,
        skipped=skipped,
    )


def _set_training(module: nn.Module, mode: bool) -> None:
    """train()/eval(), where the module has them: a torch.export program (an MLflow model) is
    fixed in the mode it was exported in (eval) and refuses both."""
    with contextlib.suppress(NotImplementedError):
        module.train(mode)


@contextlib.contextmanager
def _strict(precision: str) -> Iterator[None]:
    """fp32 means fp32: without this, cuDNN runs fp32 convolutions in TF32 (PyTorch's default)."""
    if precision != "fp32":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    was = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                         deterministic=cudnn.deterministic, allow_tf32=False):  # fmt: skip
            yield
    finally:
        matmul.allow_tf32 = was


def _bicubic_scores(
    lr: torch.Tensor,
    hr01: torch.Tensor,
    keys: list[str],
    scale: int,
    baseline: BicubicBaseline,
    fresh: dict[str, list[float]],
) -> torch.Tensor:
    """Summed bicubic scores of a batch: cached ones looked up, the rest computed (CPU, PIL)
    and added to `fresh`."""
    missing = [i for i, key in enumerate(keys) if baseline.get(key) is None]
    if missing:
        rows = torch.tensor(missing)
        bicubic = bicubic_upscale(lr[rows].cpu(), scale)
        scores = image_scores(bicubic, hr01[rows.to(hr01.device)].cpu(), scale)
        for i, values in zip(missing, scores.tolist(), strict=True):
            fresh[keys[i]] = values
    per_image = [baseline.get(key) or fresh[key] for key in keys]
    return torch.tensor(per_image, dtype=torch.float64).sum(dim=0)
