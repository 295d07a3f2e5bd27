"""python -m pipeline.release build|table|check: see pipeline/release/__init__.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline.cli import InputError, run_command, with_default
from pipeline.release.build import (
    EXPERIMENT,
    RESULTS_NAME,
    ReleaseError,
    ReleaseJob,
    check_release,
    run_release,
)
from pipeline.release.card import results_block, update_block
from pipeline.release.sizes import SIZES
from pipeline.runtime.checkpoint import CheckpointError
from pipeline.serving.generator_file import read_generator_file
from pipeline.serving.mlflow_model import log_generator, registry_name
from pipeline.tracking import resolve_tracking_uri
from preprocess.atomic import atomic_open
from preprocess.manifest import ManifestError

Folder = click.Path(path_type=Path, file_okay=False, resolve_path=True)


@click.group(
    "pipeline.release",
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
def cli() -> None:
    """Make, check and report releases of the 4x and 8x generators."""


@cli.command()
@click.argument(
    "celeba_root", type=click.Path(path_type=Path, exists=True, resolve_path=True), required=False
)
@click.option(
    "--out", type=Folder, default=Path("runs/release"), help="shards, runs, logs, scores, mlflow.db"
)
@click.option(
    "--release",
    type=Folder,
    default=None,
    help="where the weights, results.json and README.md go  [default: OUT/release]",
)
@click.option(
    "--size",
    type=click.Choice(list(SIZES)),
    default="gpu",
    help="; ".join(f"{s.name}: {s.about}" for s in SIZES.values()),
)
@click.option("--scales", default="4,8", help="comma-separated")
@click.option(
    "--fsrnet",
    type=click.Path(path_type=Path, exists=True, file_okay=False, resolve_path=True),
    default=None,
    help="FSRNet's 1,000 HR test faces, scored too",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    help="training processes (GPUs), each with the size's batch: N of them train with N times "
    "the global batch at the same lr and steps",
)
@click.option(
    "--shards",
    type=Folder,
    default=None,
    help="use these srgan-preprocess shards instead of sharding CELEBA_ROOT",
)
@click.option(
    "--train-arg",
    "train_args",
    multiple=True,
    help="one more pipeline.train argument (repeat; e.g. --train-arg=--loader=reference)",
)
def build(
    celeba_root: Path | None,
    out: Path,
    release: Path | None,
    size: str,
    scales: str,
    fsrnet: Path | None,
    nproc: int,
    shards: Path | None,
    train_args: tuple[str, ...],
) -> None:
    """Shard CELEBA_ROOT, train, score and write a release folder."""
    if celeba_root is None and shards is None:
        raise click.UsageError("give a CelebA root or --shards")
    try:
        wanted = tuple(int(s) for s in scales.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{scales!r}: not a list of scales", param_hint="--scales"
        ) from None
    if not set(wanted) <= {4, 8}:
        raise click.BadParameter(f"{scales!r}: scales are 4 and 8", param_hint="--scales")
    job = ReleaseJob(
        celeba_root=celeba_root,
        out=out,
        release=release or out / "release",
        size=SIZES[size],
        scales=wanted,
        fsrnet=fsrnet,
        nproc=nproc,
        shards=shards,
        train_args=train_args,
    )
    try:
        results = run_release(job)
    except (ReleaseError, CheckpointError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"pipeline.release: {job.release} written in {results['minutes']} min:")
    click.echo(results_block(results))


def read_results(release: Path) -> dict:
    path = release / RESULTS_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the release's results ({exc})") from None


@cli.command()
@click.argument("release", type=Folder)
@click.option(
    "--update",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="rewrite this document's release-results block (docs/RESULTS.md)",
)
def table(release: Path, update: Path | None) -> None:
    """Print (or put into a document) the rows of a release's results.json."""
    block = results_block(read_results(release))
    if update is None:
        click.echo(block)
        return
    try:
        text = update_block(update, block)
    except (OSError, ValueError) as exc:
        raise InputError(str(exc)) from None
    with atomic_open(update, "w") as handle:
        handle.write(text)
    click.echo(f"pipeline.release: {update} updated from {release / RESULTS_NAME}")


@cli.command()
@click.argument("release", type=Folder)
def check(release: Path) -> None:
    """Check that a release's files are there and match results.json's sha256."""
    read_results(release)
    problems = check_release(release)
    for problem in problems:
        click.echo(f"pipeline.release: {problem}", err=True)
    if problems:
        raise click.exceptions.Exit(1)
    click.echo(f"pipeline.release: {release}: every file matches results.json")


@cli.command()
@click.argument("release", type=Folder)
@click.option(
    "--tracking-uri",
    default=None,
    help=with_default("MLflow tracking URI", "MLFLOW_TRACKING_URI, else sqlite:///mlflow.db"),
)
def register(release: Path, tracking_uri: str | None) -> None:
    """Register a release's generators in MLflow's Model Registry (srgan-celeba-x4, -x8),
    tagged with the release's commit, sha256 and test scores, so that `mlflow models serve`
    serves the shipped weights."""
    results = read_results(release)
    problems = check_release(release)
    if problems:
        raise InputError(problems[0])
    import mlflow  # here: `build` runs where MLflow is not installed (bench/gpu_release.sh)

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"release {results['made']}"):
        for name, model in results["models"].items():
            generator, _ = read_generator_file(release / model["file"])
            test = model["scores"].get("test", {}).get("sr", {})
            scores = {f"test_{k}": f"{test[k]:.4f}" for k in ("psnr_y", "ssim_y") if k in test}
            tags = {"release_commit": results["commit"], "sha256": model["sha256"],
                    "step": model["train"]["steps"], "phase": "pretrain", **scores}  # fmt: skip
            registered = registry_name(generator.scale)
            info = log_generator(generator, name, registered, tags)
            version = info.registered_model_version
            click.echo(f"pipeline.release: {model['file']} registered as "
                       f"models:/{registered}/{version}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_command(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
