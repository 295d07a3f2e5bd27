"""Scores of a generator on a split: PSNR/SSIM (Y and RGB) of SR and of bicubic, and a grid.

    python -m pipeline.evaluate --checkpoint CKPT|RUN_DIR --data OUT --split val|test --scale 4
    torchrun --nproc_per_node=8 -m pipeline.evaluate ...the same flags...

How the scores are made (every rank its part, 8-bit SR, fp32 unless asked, cached bicubic):
pipeline/evaluation/evaluator.py. Training evaluates on val; this command is the only way the
test split is scored.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import torch

from pipeline.archs.pretrained import WeightsMissing
from pipeline.cli import CommandLineDone, on_off, parse, weights_option, with_default
from pipeline.data import LoaderConfig, ShardError
from pipeline.evaluation import evaluate, load_fid, load_lpips, markdown_rows, report
from pipeline.runtime.distributed import ProcessPlace, configure_logging, init_distributed
from pipeline.serving.generators import LOAD_ERRORS, load_generator
from preprocess.atomic import write_json

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
    required=True,
    metavar="PATH|URI",
    help="a checkpoint file, a run folder (its newest readable checkpoint), a released "
    ".safetensors file, or an MLflow model URI (models:/srgan-celeba-x4/latest)",
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


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except CommandLineDone as done:
        return done.status
    place = ProcessPlace.from_env()
    configure_logging(place)
    device = init_distributed(place)
    try:
        generator = load_generator(args.checkpoint, device, args.weights, place)
        path, weights = generator.source, generator.weights
        if generator.scale != args.scale:
            raise ValueError(f"{path}: made for scale {generator.scale}, not {args.scale}")
        lpips = load_lpips(args.lpips, args.alexnet_weights, place)
        fid = load_fid(args.fid, args.inception_weights, place)
        loader_cfg = LoaderConfig(data=args.data or Path(), split=args.split, scale=args.scale,
                                  batch_size=args.batch_size, backend=args.loader,
                                  threads=args.loader_threads)  # fmt: skip
        scores = evaluate(generator.model, loader_cfg, place, precision=args.precision,
                          grid_path=args.grid, images=args.images,
                          lpips=lpips.to(device) if lpips else None,
                          fid=fid.to(device) if fid else None)  # fmt: skip
    except (*LOAD_ERRORS, ShardError, ValueError, WeightsMissing) as exc:
        print(f"pipeline.evaluate: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if place.is_main:
        step = generator.step
        print(report(scores, path, step, f"{args.precision}, {weights} weights"))
        if args.markdown:
            model = "SRGAN" if generator.phase == "gan" else "SRResNet"
            at = "" if step is None else f"step {step:,}, "
            label = args.label or f"{model} (this pipeline, {at}{weights} weights)"
            print(markdown_rows(scores, label))
        if args.json is not None:
            write_json(args.json, {
                "checkpoint": path, "step": step,
                "data": str(args.images or args.data), "skipped": scores.skipped,
                "split": scores.split, "scale": args.scale, "precision": args.precision,
                "weights": weights,
                "images": scores.images, "images_per_rank": scores.images_per_rank,
                "sr": scores.sr, "bicubic": scores.bicubic, "seconds": scores.seconds,
            })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
