"""Train SRResNet (phase `pretrain`) or SRGAN (phase `gan`), on 1 process or many.

    python -m pipeline.train --data OUT --scale 4 --phase pretrain [--config configs/x4.toml] ...
    torchrun --nproc_per_node=8 -m pipeline.train ...the same flags...

nccl on GPUs, gloo on CPUs; every rank scores its part of the val split, only rank 0 logs and
writes. SIGTERM or SIGUSR2 make every rank stop at the same step (pipeline.runtime.stopping), rank 0
write a checkpoint, and all exit 0; `--resume auto` then continues in the same MLflow run (SLURM
preemption relies on this).
"""

from __future__ import annotations

import functools
import logging
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import torch.distributed as dist

from pipeline.archs.pretrained import WeightsMissing
from pipeline.cli import CommandLineDone, on_off, parse, with_default
from pipeline.data import ShardError
from pipeline.runtime.checkpoint import CheckpointError
from pipeline.runtime.distributed import (
    ProcessPlace,
    configure_logging,
    init_distributed,
    lost_peer,
    silent_ranks,
    timed_out,
)
from pipeline.runtime.rng import seed_everything
from pipeline.runtime.stopping import StopRequest
from pipeline.training.config import TrainConfig, load_config
from pipeline.training.trainer import Trainer, TrainingError, resolve_device_defaults
from preprocess.pillow_check import warn_if_plain_pillow

log = logging.getLogger("pipeline.train")

# ---- command line -------------------------------------------------------------------------


class _Setting(click.Option):
    """A flag for one TrainConfig setting (`key`, dotted into its tables: "optim.lr").

    Its value is None unless given, so that a --config file's value stands; its help shows
    TrainConfig's default and its type and choices come from TrainConfig's annotations, so
    pipeline/training/config.py stays the one source of both.
    """

    def __init__(
        self,
        decls: Sequence[str],
        *,
        key: str | None = None,
        none_means: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(decls, default=None, **kwargs)
        self.key = key or str(self.name)
        *tables, leaf = self.key.split(".")
        owner = functools.reduce(getattr, tables, TrainConfig())
        default = getattr(owner, leaf)
        if default is None and none_means is None:
            raise TypeError(f"{self.key}: say in none_means what TrainConfig's None means")
        if "type" not in kwargs and not self.is_flag:
            self.type = _click_type(typing.get_type_hints(type(owner))[leaf])
        shown = none_means if default is None else _shown(default)
        self.help = with_default(self.help, shown)


def _click_type(hint: Any) -> click.ParamType:
    """The click type of a TrainConfig annotation: str, int, float, Path or a Literal's
    choices, None allowed or not (a new kind of setting fails here, at import)."""
    if typing.get_origin(hint) is types.UnionType:  # X | None
        (hint,) = (h for h in typing.get_args(hint) if h is not types.NoneType)
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice(typing.get_args(hint))
    if hint is Path:
        return click.Path(path_type=Path)
    return {str: click.STRING, int: click.INT, float: click.FLOAT}[hint]


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _setting(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(*decls, cls=_Setting, **kwargs)


# Parses only (main runs the job, outside click's exception handling); tests read its options.
@click.command("pipeline.train", context_settings={"help_option_names": ["-h", "--help"]})
@_setting("--data", help="output folder of `srgan-preprocess shard`")
@_setting("--scale", type=click.Choice([2, 4, 8]))
@_setting("--phase")
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    multiple=True,
    help=with_default(
        "TOML file, e.g. configs/x4.toml; repeat to layer files, later ones winning "
        "(--config configs/x4.toml --config configs/h200.toml)",
        "none",
    ),
)
@_setting("--steps")
@_setting("--batch-size", help="per process")
@_setting("--blocks", key="model.blocks", help="residual blocks of G")
@_setting("--channels", key="model.channels", help="G's width")
@_setting("--d-channels", key="model.d_channels", help="D's width at its first conv")
@_setting("--output", key="model.output", help="G's last activation (linear: the paper's figure)")
@_setting("--out", help="run folder: checkpoints, samples")
@_setting(
    "--init",
    help="checkpoint (or run folder: its newest) whose G starts this run",
    none_means="none; the gan phase needs one",
)
@_setting("--lr", key="optim.lr", help="peak learning rate, at --lr-reference-batch")
@_setting(
    "--lr-scaling",
    key="optim.lr_scaling",
    help="lr at another global batch: sqrt (Adam's rule), linear, or none (the same lr)",
)
@_setting("--lr-reference-batch", key="optim.lr_reference_batch", help="global batch of --lr")
@_setting(
    "--schedule",
    key="optim.schedule",
    help="lr after the warm-up: cosine to --min-lr, constant, or the paper's GAN drop",
)
@_setting("--warmup-steps", key="optim.warmup_steps", help="linear lr warm-up")
@_setting("--min-lr", key="optim.min_lr", help="where cosine ends")
@_setting("--ema-decay", help="average of G's weights, warmed up; 0 for none")
@_setting("--eval-weights", help="G evaluated and exported")
@_setting(
    "--resume",
    help="'auto' (newest valid checkpoint in --out) or a file",
    none_means="none, a fresh start",
)
@_setting("--precision", help="autocast; auto: bf16 where the hardware has it, else fp32")
@_setting("--compile", help="torch.compile the steps; auto: on for CUDA, off on CPUs")
@_setting("--compile-backend", help="torch.compile's backend")
@_setting("--compile-mode", help="torch.compile's mode (reduce-overhead: CUDA graphs)")
@_setting(
    "--channels-last/--no-channels-last",
    help="NHWC activations",
    none_means="auto: on for CPUs and CUDA, see docs/PERFORMANCE.md",
)
@_setting(
    "--tracking-uri",
    help="MLflow URI, or 'none' for no tracking",
    none_means="MLFLOW_TRACKING_URI, else sqlite:///mlflow.db",
)
@_setting("--experiment", help="MLflow experiment", none_means="srgan-celeba-<preset>")
@_setting(
    "--vgg-weights",
    help="VGG19 state dict file, or 'random' (tests only)",
    none_means="the torch hub cache",
)
@_setting("--seed")
@_setting("--deterministic", is_flag=True, help="deterministic algorithms only")
@_setting("--log-every", help="steps")
@_setting("--eval-every", help="steps")
@_setting("--eval-batches", help="0: the whole val split; N: at most N per process")
@_setting("--eval-precision", help="SR while scoring")
@_setting("--pixel-loss", key="loss.pixel", help="the pretrain loss (mse: the paper's)")
@_setting(
    "--lpips/--no-lpips",
    callback=on_off(None),
    help="LPIPS in every evaluation: --lpips makes absent weights an error, --no-lpips leaves "
    "it out, auto uses it when its weights are present",
)
@_setting(
    "--alexnet-weights", help="LPIPS's AlexNet weights file", none_means="the torch hub cache"
)
@_setting("--checkpoint-every", help="steps")
@_setting("--keep-checkpoints", help="the newest this many are kept")
@_setting(
    "--dist-timeout", help="seconds a collective waits for the other ranks before the job fails"
)
@_setting("--loader", key="loader.backend")
@_setting("--decode-device", key="loader.decode_device")
@_setting("--loader-threads", key="loader.threads")
def command_line(config: tuple[Path, ...], **flags: Any) -> TrainConfig:
    """Train SRResNet (phase pretrain) or SRGAN (phase gan), on 1 process or many.

    The defaults shown are TrainConfig's (pipeline/training/config.py); --config files override
    them in order, and flags override all.
    """
    params = click.get_current_context().command.params
    keys = {p.name: p.key for p in params if isinstance(p, _Setting)}
    try:
        return load_config(config, {keys[name]: value for name, value in flags.items()})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The run's configuration; --help and usage errors exit (0, 2) as under argparse."""
    return parse(command_line, argv)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
    except CommandLineDone as done:
        return done.status
    place = ProcessPlace.from_env()
    configure_logging(place)
    stop = StopRequest()
    device = init_distributed(place, cfg.dist_timeout)
    cfg = resolve_device_defaults(cfg, device)
    seed_everything(cfg.seed, cfg.deterministic)
    warn_if_plain_pillow()
    trainer = None
    try:
        trainer = Trainer(cfg, place, device)
        trainer.initialise()
        if place.is_main:
            log.info(
                "x%d %s on %d process(es), %s, %s, batch %d per process, %d steps -> %s",
                cfg.scale,
                cfg.phase,
                place.world_size,
                device,
                cfg.precision,
                cfg.batch_size,
                cfg.steps,
                cfg.out,
            )
        trainer.train(stop)
    except (TrainingError, ShardError, WeightsMissing, CheckpointError) as exc:
        if trainer is not None:
            trainer.tracker.end("FAILED")
        where = f"[rank {place.rank}] " if place.world_size > 1 else ""
        print(f"{where}pipeline.train: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if trainer is not None and place.world_size > 1 and (waited := timed_out(exc)):
            # one line that says which rank stopped answering; torchrun restarts the job
            silent = silent_ranks(min(cfg.dist_timeout, 30.0))
            trainer.tracker.end("FAILED")
            print(
                f"[rank {place.rank}] pipeline.train: error: {trainer.doing} at step "
                f"{trainer.step} timed out after {cfg.dist_timeout:.0f} s waiting for the other "
                f"ranks; {silent} (the collective said: {waited})",
                file=sys.stderr,
            )
            return 2
        if trainer is not None and place.world_size > 1 and (gone := lost_peer(exc)):
            trainer.tracker.end("FAILED")
            print(
                f"[rank {place.rank}] pipeline.train: error: {trainer.doing} at step "
                f"{trainer.step}: lost contact with another rank ({gone}); a worker died or its "
                "node went down",
                file=sys.stderr,
            )
            return 2
        # never left RUNNING, nor marked FINISHED by MLflow's exit hook
        if trainer is not None:
            trainer.tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
