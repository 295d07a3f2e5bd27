"""Scores of a generator on a split: PSNR/SSIM (Y and RGB) of SR and of bicubic, and a grid.

    python -m pipeline.evaluate --checkpoint CKPT|RUN_DIR --data OUT --split val|test --scale 4
    torchrun --nproc_per_node=8 -m pipeline.evaluate ...the same flags...

Every rank scores a disjoint part of the split (its reader shard: rank r of W reads samples
[N*r/W, N*(r+1)/W), every sample once, uneven splits included) on its training device; the
per-image sums are all-reduced, so the numbers do not depend on the number of processes.
SR is rounded to 8 bits before it is scored, as the literature scores saved images (BasicSR's
tensor2img, MATLAB on PNGs), and the generator runs in fp32 whatever the training precision,
unless asked otherwise. Bicubic scores are computed once per split and cached
(pipeline.baseline). Training evaluates on val; this command is the only way the test split
is scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import torch
from torch import nn

from pipeline.baseline import SCORES, BicubicBaseline
from pipeline.checkpoint import (
    CheckpointError,
    find_checkpoint,
    generator_from,
    generator_weights,
)
from pipeline.cli import CommandLineDone, on_off, parse, weights_option, with_default
from pipeline.data import (
    Batch,
    LoaderConfig,
    ShardError,
    SplitShards,
    build_loader,
    open_split_once,
)
from pipeline.data.folder import FolderImages
from pipeline.distributed import (
    ProcessPlace,
    configure_logging,
    first_problem,
    gather_objects,
    init_distributed,
    sum_over_ranks,
)
from pipeline.generator_file import GeneratorFileError, is_generator_file, read_generator_file
from pipeline.metrics import bicubic_upscale, psnr, ssim
from pipeline.perceptual import (
    LPIPS,
    InceptionFeatures,
    SetStatistics,
    frechet_distance,
    load_fid,
    load_lpips,
)
from pipeline.sample_grid import SampleGrid
from pipeline.srgan import autocast
from pipeline.weights import WeightsMissing
from preprocess.atomic import write_json

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
    (pipeline.perceptual), on the generator's device; LPIPS is a mean over images like PSNR,
    FID compares the SR (and bicubic) set with the HR set from statistics summed over ranks.
    images: score the images of this folder as HR (lossless LR made here, pipeline.data.folder)
    instead of the shards of `loader_cfg`.
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
    generator.eval()
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
            generator.train()
    totals = sum_over_ranks(torch.cat([sr_sums, bicubic_sums.to(device)])).cpu()
    sum_over_ranks(lpips_sums)
    for statistics in fid_sets.values():
        sum_over_ranks(statistics.sums)
    images_per_rank = gather_objects(int(sr_sums[-1].item()))
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


# ---- the command ---------------------------------------------------------------------------


def _metric(
    metric: str, weights: str, what: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--METRIC/--no-METRIC and --WEIGHTS-weights, for each perceptual metric alike."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        # click lists options in the reverse order of the decorators applied
        command = click.option(
            f"--{weights}-weights",
            help=with_default(f"{what} weights file", "the torch hub cache"),
        )(command)
        return click.option(
            f"--{metric}/--no-{metric}",
            default=None,
            callback=on_off("auto"),
            show_default=False,  # click would name a switch for neither given
            help=with_default(
                f"{what}: required (absent weights are an error), or left out",
                "auto, used when its weights are present",
            ),
        )(command)

    return add


# Parses only (main runs the job, outside click's exception handling); tests read its options.
@click.command(
    "pipeline.evaluate",
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    required=True,
    help="a checkpoint file, a run folder (its newest readable checkpoint), or a released "
    ".safetensors file",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="output folder of srgan-preprocess  [required unless --images]",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    help="a folder of HR images, scored losslessly (LR made here by PIL bicubic), e.g. "
    "FSRNet's CelebA test faces  [required unless --data]",
)
@click.option("--split", type=click.Choice(["val", "test"]), default="val")
@click.option("--scale", type=click.Choice([2, 4, 8]), required=True)
@click.option(
    "--json",
    type=click.Path(path_type=Path),
    help=with_default("write the scores here as JSON", "none"),
)
@click.option(
    "--markdown", is_flag=True, help="print the bicubic and SR rows of docs/RESULTS.md's table"
)
@click.option(
    "--label",
    help=with_default("the SR row's name in --markdown", "SRResNet or SRGAN, step, weights"),
)
@click.option("--batch-size", type=int, default=16, help="per process")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    help="the generator's autocast while scoring",
)
@click.option("--loader", type=click.Choice(["auto", "dali", "reference"]), default="auto")
@click.option("--loader-threads", type=int, default=2)
@click.option(
    "--grid",
    type=click.Path(path_type=Path),
    help=with_default("PNG: LR | bicubic | SR | HR of the first faces", "none"),
)
@weights_option
@_metric("lpips", "alexnet", "LPIPS (AlexNet)")
@_metric("fid", "inception", "FID (InceptionV3)")
def command_line(**args: Any) -> SimpleNamespace:
    """Score a generator on a split of the shards, or on a folder of images."""
    if (args["data"] is None) == (args["images"] is None):
        raise click.UsageError("exactly one of --data and --images is needed")
    return SimpleNamespace(**args)


def parse_args(argv: list[str] | None) -> SimpleNamespace:
    """The command line's values; --help and usage errors exit (0, 2) as under argparse."""
    return parse(command_line, argv)


METRIC_COLUMNS = (("psnr_y", "PSNR-Y", "8.2f"), ("ssim_y", "SSIM-Y", "8.4f"),
                  ("psnr_rgb", "PSNR-RGB", "9.2f"), ("ssim_rgb", "SSIM-RGB", "9.4f"),
                  ("lpips", "LPIPS", "7.4f"), ("fid", "FID", "8.2f"))  # fmt: skip


def _columns(scores: Scores) -> list[tuple[str, str, str]]:
    return [column for column in METRIC_COLUMNS if column[0] in scores.sr]


def report(scores: Scores, checkpoint: Path, step: int, precision: str) -> str:
    columns = _columns(scores)
    skipped = f", {scores.skipped} skipped" if scores.skipped else ""
    lines = [
        f"{scores.split} split, {scores.images:,} images{skipped}, checkpoint {checkpoint} "
        f"(step {step}),"
        f" SR in {precision}, {len(scores.images_per_rank)} process(es), {scores.seconds:.1f} s",
        f"{'':8} " + " ".join(f"{title:>{fmt.split('.')[0]}}" for _, title, fmt in columns),
    ]
    for name, values in (("SR", scores.sr), ("bicubic", scores.bicubic)):
        lines.append(f"{name:8} " + " ".join(f"{values[key]:{fmt}}" for key, _, fmt in columns))
    return "\n".join(lines)


def markdown_rows(scores: Scores, label: str) -> str:
    """The table of docs/RESULTS.md: method | PSNR | SSIM (Y, as papers) | LPIPS | FID."""
    columns = [c for c in _columns(scores) if c[0] not in ("psnr_rgb", "ssim_rgb")]
    head = "| method | " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [f"| {name} | " + " | ".join(f"{values[key]:.{fmt.split('.')[1]}}"
                                          for key, _, fmt in columns) + " |"
            for name, values in (("bicubic", scores.bicubic), (label, scores.sr))]  # fmt: skip
    return "\n".join([head, rule, *rows])


def _agreed_checkpoint(given: Path, place: ProcessPlace) -> tuple[Path, dict]:
    """Rank 0 picks the file (a run folder's newest can change while a run trains) and every
    rank loads that one; a problem stops every rank."""
    found, problem = None, None
    if place.is_main:
        try:
            found = find_checkpoint(given)[0]
        except CheckpointError as exc:
            problem = str(exc)
    if (problem := first_problem(problem)) is not None:
        raise CheckpointError(problem)
    return find_checkpoint(gather_objects(found)[0])


def _agreed_generator(given: Path, which: str, place: ProcessPlace) -> tuple[Path, nn.Module, dict]:
    """The generator to score and what it is (scale, step, phase, ema or raw weights): from a
    released weights file, or from the checkpoint every rank agreed on."""
    if is_generator_file(given):
        model, meta = read_generator_file(given, which)
        made = {"scale": model.scale, "step": int(meta.get("step", 0)),
                "phase": meta.get("phase"), "weights": meta.get("weights", "ema")}  # fmt: skip
        return given, model, made
    path, state = _agreed_checkpoint(given, place)
    config = state.get("config", {})
    made = {"scale": config.get("scale"), "step": int(state.get("step", 0)),
            "phase": config.get("phase"),
            "weights": generator_weights(state["model"], which)[1]}  # fmt: skip
    return path, generator_from(state, path, which), made


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except CommandLineDone as done:
        return done.status
    place = ProcessPlace.from_env()
    configure_logging(place)
    device = init_distributed(place)
    try:
        path, generator, made = _agreed_generator(args.checkpoint, args.weights, place)
        if made["scale"] != args.scale:
            raise CheckpointError(f"{path}: made for scale {made['scale']}, not {args.scale}")
        generator, weights = generator.to(device), made["weights"]
        lpips = load_lpips(args.lpips, args.alexnet_weights, place)
        fid = load_fid(args.fid, args.inception_weights, place)
        loader_cfg = LoaderConfig(data=args.data or Path(), split=args.split, scale=args.scale,
                                  batch_size=args.batch_size, backend=args.loader,
                                  threads=args.loader_threads)  # fmt: skip
        scores = evaluate(generator, loader_cfg, place, precision=args.precision,
                          grid_path=args.grid, images=args.images,
                          lpips=lpips.to(device) if lpips else None,
                          fid=fid.to(device) if fid else None)  # fmt: skip
    except (CheckpointError, GeneratorFileError, ShardError, ValueError, WeightsMissing) as exc:
        print(f"pipeline.evaluate: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if place.is_main:
        step = made["step"]
        print(report(scores, path, step, f"{args.precision}, {weights} weights"))
        if args.markdown:
            phase = made["phase"]
            model = "SRGAN" if phase == "gan" else "SRResNet"
            label = args.label or f"{model} (this pipeline, step {step:,}, {weights} weights)"
            print(markdown_rows(scores, label))
        if args.json is not None:
            write_json(args.json, {
                "checkpoint": str(path), "step": step,
                "data": str(args.images or args.data), "skipped": scores.skipped,
                "split": scores.split, "scale": args.scale, "precision": args.precision,
                "weights": weights,
                "images": scores.images, "images_per_rank": scores.images_per_rank,
                "sr": scores.sr, "bicubic": scores.bicubic, "seconds": scores.seconds,
            })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
