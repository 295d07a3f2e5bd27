"""`srgan-preprocess`: CelebA -> WebDataset shards (shard), their check (verify), demo faces."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from preprocess.celeba import CelebAError
from preprocess.demo_faces import write_demo_celeba
from preprocess.images import CODEC_EXTENSIONS, Encoding
from preprocess.job import default_workers, run_shard_job
from preprocess.manifest import ManifestError
from preprocess.plan import ShardJob
from preprocess.protocol import DEFAULT_PRESET, PRESETS, parse_scales
from preprocess.verify import verify_output


def _fail(message: str) -> None:
    click.echo(f"srgan-preprocess: error: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Turn CelebA into shuffled WebDataset shards for SRGAN training, and check them."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


CODECS = click.Choice(sorted(CODEC_EXTENSIONS))


@main.command()
@click.option(
    "--celeba-root",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder with img_align_celeba/ (or img_align_celeba.zip) and list_eval_partition.txt.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=DEFAULT_PRESET,
    show_default=True,
    help="Named protocol of crop and sizes (see README).",
)
@click.option("--scales", default=None, help="Comma-separated SR factors [preset: 4,8].")
@click.option("--crop", type=int, default=None, help="Centre crop side in pixels [preset].")
@click.option("--hr-size", type=int, default=None, help="HR image side in pixels [preset].")
@click.option(
    "--codec",
    type=CODECS,
    default="jpeg",
    show_default=True,
    help="HR images: jpeg decodes on the GPU (nvJPEG); png is lossless.",
)
@click.option(
    "--lr-codec",
    type=CODECS,
    default="png",
    show_default=True,
    help="LR images: png keeps the clean bicubic LR that papers start from.",
)
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=95, show_default=True)
@click.option("--samples-per-shard", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Worker processes [all cores]."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffle seed.")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
def shard(
    celeba_root: Path,
    out: Path,
    preset: str,
    scales: str | None,
    crop: int | None,
    hr_size: int | None,
    codec: str,
    lr_codec: str,
    jpeg_quality: int,
    samples_per_shard: int,
    workers: int | None,
    seed: int,
    no_progress: bool,
) -> None:
    """Write shuffled shards per split, a DALI index beside each, and manifest.json.

    Re-running with the same settings finishes an interrupted job: complete shards are kept.
    """
    try:
        protocol = PRESETS[preset].with_overrides(
            crop=crop, hr_size=hr_size, scales=parse_scales(scales) if scales else None
        )
        job = ShardJob(
            celeba_root=celeba_root,
            out=out,
            protocol=protocol,
            encoding=Encoding(codec=codec, jpeg_quality=jpeg_quality, lr_codec=lr_codec),  # type: ignore[arg-type]
            samples_per_shard=samples_per_shard,
            workers=workers or default_workers(),
            seed=seed,
        )
        run_shard_job(job, progress=not no_progress)
    except (ValueError, CelebAError) as exc:
        _fail(str(exc))


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--no-dali", is_flag=True, help="Skip the DALI reader check.")
def verify(out: Path, no_dali: bool) -> None:
    """Re-read every shard (tarfile, webdataset, DALI) and check it against the manifest."""
    try:
        problems = verify_output(out, use_dali=not no_dali)
    except ManifestError as exc:
        _fail(str(exc))
    if problems:
        for problem in problems:
            click.echo(f"FAIL {problem}", err=True)
        click.echo(f"srgan-preprocess verify: {len(problems)} problems in {out}", err=True)
        sys.exit(1)
    readers = "tarfile, webdataset" + ("" if no_dali else " and DALI")
    click.echo(f"srgan-preprocess verify: {out} is sound ({readers} agree with the manifest)")


@main.command("demo-data")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--count", type=click.IntRange(min=3), default=1000, show_default=True)
def demo_data(root: Path, count: int) -> None:
    """Draw COUNT synthetic faces in the CelebA layout under ROOT (for machines without CelebA)."""
    write_demo_celeba(root, count)
    click.echo(f"srgan-preprocess: wrote {count} synthetic faces to {root}")


if __name__ == "__main__":
    main()
