"""Train SRResNet (phase `pretrain`) or SRGAN (phase `gan`), on 1 process or many.

    python -m pipeline.train --data OUT --scale 4 --phase pretrain [--config configs/x4.toml] ...
    torchrun --nproc_per_node=8 -m pipeline.train ...the same flags...

nccl on GPUs, gloo on CPUs; every rank scores its part of the val split, only rank 0 logs and
writes. SIGTERM or SIGUSR2 make every rank stop at the same step (pipeline.stopping), rank 0
write a checkpoint, and all exit 0; `--resume auto` then continues in the same MLflow run (SLURM
preemption relies on this).
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import functools
import logging
import os
import random
import shutil
import subprocess
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import torch
import torch.distributed as dist
from tqdm import tqdm

from pipeline.archs.vgg import describe_weights
from pipeline.baseline import BicubicBaseline
from pipeline.checkpoint import (
    CheckpointError,
    checkpoint_path,
    find_checkpoint,
    generator_weights,
    load_checkpoint,
    newest_valid_checkpoint,
    save_checkpoint,
)
from pipeline.cli import CommandLineDone, on_off, parse, with_default
from pipeline.config import TrainConfig, load_config
from pipeline.data import LoaderConfig, ShardError, build_loader, open_split_once
from pipeline.distributed import (
    ProcessPlace,
    configure_logging,
    first_problem,
    gather_objects,
    init_distributed,
    lost_peer,
    silent_ranks,
    timed_out,
)
from pipeline.evaluate import evaluate
from pipeline.meter import StepMeter
from pipeline.mlflow_model import registry_name, version_tags
from pipeline.perceptual import load_lpips
from pipeline.schedule import learning_rate
from pipeline.srgan import SRGANModel
from pipeline.stopping import StopRequest, StopVote
from pipeline.tracking import Tracker, resolve_tracking_uri
from pipeline.weights import WeightsMissing
from preprocess.pillow_check import warn_if_plain_pillow

log = logging.getLogger("pipeline.train")


class TrainingError(Exception):
    """A problem with the run's inputs; one line, shown without a traceback."""


# ---- command line -------------------------------------------------------------------------


class _Setting(click.Option):
    """A flag for one TrainConfig setting (`key`, dotted into its tables: "optim.lr").

    Its value is None unless given, so that a --config file's value stands; its help shows
    TrainConfig's default and its type and choices come from TrainConfig's annotations, so
    pipeline/config.py stays the one source of both.
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
    help=with_default("TOML file, e.g. configs/x4.toml", "none"),
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
@_setting("--lr", key="optim.lr", help="peak learning rate")
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
@_setting("--compile", is_flag=True, help="torch.compile the networks")
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
def command_line(config: Path | None, **flags: Any) -> TrainConfig:
    """Train SRResNet (phase pretrain) or SRGAN (phase gan), on 1 process or many.

    The defaults shown are TrainConfig's (pipeline/config.py); a --config file overrides them,
    and flags override both.
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


# ---- distributed set-up -----------------------------------------------------------------


# ---- helpers ------------------------------------------------------------------------------


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with AVX-512 BF16 or AMX; emulated
    bf16 (e.g. AVX2 CPUs) made train steps 16x-49x slower than fp32 here (docs/PERFORMANCE.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_device_defaults(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """Turn 'auto' settings into the measured-fastest safe choice for the device, and say what
    was chosen (numbers in docs/PERFORMANCE.md)."""
    channels_last = cfg.channels_last
    if channels_last is None:
        # Faster on both in bench/train_step.py (docs/PERFORMANCE.md): CPU 1.01x-1.4x; H200
        # 1.0x-1.6x, bf16 at batch 256 1.47x (pretrain) and 1.57x (GAN). Other devices: unmeasured.
        channels_last = device.type in ("cpu", "cuda")
        log.info("channels_last %s on %s (auto)", "on" if channels_last else "off", device.type)
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if bf16_is_fast(device) else "fp32"
    elif precision == "fp16" and device.type == "cpu":
        log.warning("fp16 autocast is for GPUs: using bf16 on the CPU")
        precision = "bf16"
    elif precision == "bf16" and not bf16_is_fast(device):
        log.warning("bf16 is emulated on this %s and will be slow", device.type)
    if precision != cfg.precision:
        log.info("precision %s resolved to %s on %s", cfg.precision, precision, device)
    return dataclasses.replace(cfg, precision=precision, channels_last=channels_last)


# ---- the run ------------------------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: TrainConfig, place: ProcessPlace, device: torch.device) -> None:
        self.cfg, self.place, self.device = cfg, place, device
        self.created = time.perf_counter()
        # checked once per job, here (each rank its part): a broken val split must fail now,
        # not at the first evaluation
        self.shards = open_split_once(cfg.data, "train", cfg.scale, place)
        self.val_shards = open_split_once(cfg.data, "val", cfg.scale, place)
        self.check_seconds = time.perf_counter() - self.created
        self.loader_cfg = LoaderConfig(
            data=cfg.data,
            split="train",
            scale=cfg.scale,
            batch_size=cfg.batch_size,
            shuffle=True,
            flip=cfg.loader.flip,
            seed=cfg.seed,
            backend=cfg.loader.backend,
            decode_device=cfg.loader.decode_device,
            threads=cfg.loader.threads,
            prefetch=cfg.loader.prefetch,
            initial_fill=cfg.loader.initial_fill,
        )
        self.loader = build_loader(self.loader_cfg, place, self.shards)
        self.model = SRGANModel(cfg, self.shards.hr_size, device, place.world_size)
        self.step = 0
        self.run_id: str | None = None
        self.checkpoints = cfg.out / "checkpoints"
        uri = resolve_tracking_uri(cfg.tracking_uri)
        self.tracker = Tracker(place.is_main and uri != "none", uri, cfg.out / "tracking")
        self.doing = "start-up"  # named in the error when a collective times out
        self.resumed_step: int | None = None
        if uri == "none" and place.is_main:
            log.info("MLflow tracking off (--tracking-uri none)")
        # computed at the first evaluation, then reused (beside the shards, or in the run)
        self.baseline = BicubicBaseline(
            self.val_shards, [cfg.data / "baselines", cfg.out / "baselines"], self.loader.decoder
        )
        lpips = load_lpips(cfg.lpips, cfg.alexnet_weights, place)
        self.lpips = lpips.to(device) if lpips is not None else None

    # -- starting points

    def initialise(self) -> None:
        resumed = self._resume()
        if not resumed and self.cfg.phase == "gan":
            if self.cfg.init is None:
                raise TrainingError(
                    "the gan phase starts from a pretrained generator: "
                    "pass --init PRETRAIN_CHECKPOINT"
                )
            self._load_init(self.cfg.init)
        elif not resumed and self.cfg.init is not None:
            self._load_init(self.cfg.init)

    def _load_init(self, path: Path) -> None:
        path, state = find_checkpoint(path, "--init")
        if "generator" not in state.get("model", {}):
            raise TrainingError(f"{path}: not a pipeline.train checkpoint (no generator)")
        if state.get("config", {}).get("scale") not in (None, self.cfg.scale):
            raise TrainingError(
                f"{path}: made for scale {state['config']['scale']}, this run is {self.cfg.scale}x"
            )
        weights, which = generator_weights(state["model"], "ema")  # the better G, if kept
        self.model.load_generator(weights)
        log.info("generator initialised from %s (%s weights)", path, which)

    def _resume(self) -> bool:
        if not self.cfg.resume:
            return False
        if self.cfg.resume == "auto":
            found = newest_valid_checkpoint(self.checkpoints)
            if found is None:
                log.info("--resume auto: no checkpoint in %s, starting fresh", self.checkpoints)
                return False
            path, state = found
        else:
            path = Path(self.cfg.resume)
            if not path.is_file():
                raise TrainingError(f"{path}: checkpoint to resume from not found")
            state = load_checkpoint(path)
        if state["config"]["phase"] != self.cfg.phase:
            raise TrainingError(
                f"{path}: is a {state['config']['phase']} checkpoint, this run is {self.cfg.phase}"
            )
        self.model.load_state_dict(state["model"])
        self.step = state["step"]
        self.run_id = state.get("mlflow_run_id")
        set_rng_state(state["rng"])
        loaders = state["loader"]
        if len(loaders) == self.place.world_size:
            self.loader.load_state_dict(loaders[self.place.rank])
        else:
            log.warning(
                "checkpoint was written by %d processes, this run has %d: the data "
                "order restarts at a new epoch",
                len(loaders),
                self.place.world_size,
            )
            self.loader.epoch = loaders[0]["epoch"] + 1
        log.info("resumed from %s at step %d", path, self.step)
        self.resumed_step = self.step
        return True

    # -- checkpoints and tracking

    def save(self) -> None:
        """Rank 0 writes the checkpoint; every rank learns whether it worked (a full disk stops
        them all with one line), and none goes on before the file is on disk."""
        self.doing = "a checkpoint"
        loader_states = gather_objects(self.loader.state_dict())
        problem = None
        if self.place.is_main:
            checkpoint = {
                "step": self.step,
                "model": self.model.state_dict(),
                "rng": rng_state(),
                "loader": loader_states,
                "config": self.cfg.to_dict(),
                "mlflow_run_id": self.run_id,
                "world_size": self.place.world_size,
            }
            try:
                path = save_checkpoint(
                    self.checkpoints, self.step, checkpoint, self.cfg.keep_checkpoints
                )
                log.info("checkpoint %s", path)
                self.tracker.commit(self.step)  # its records may now go to MLflow
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                free = shutil.disk_usage(self.checkpoints).free / 2**20
                problem = (
                    f"{checkpoint_path(self.checkpoints, self.step)}: disk full writing the "
                    f"checkpoint of step {self.step} ({free:.1f} MiB free); the previous "
                    "checkpoint is intact: free space, then run again with --resume auto"
                )
        if (problem := first_problem(problem)) is not None:
            raise TrainingError(problem)

    def start_tracking(self) -> None:
        manifest = self.shards.manifest
        preset = manifest.get("preset", "custom")
        synthetic = self.shards.synthetic
        experiment = self.cfg.experiment or f"srgan-celeba-{preset}" + (
            "-synthetic" if synthetic else ""
        )
        tags = {
            "scale": str(self.cfg.scale),
            "phase": self.cfg.phase,
            "data": "synthetic" if synthetic else "celeba",
            "vgg_weights": "unused"
            if self.cfg.phase == "pretrain"
            else "random"
            if self.cfg.vgg_weights == "random"
            else "imagenet",
        }
        resuming = self.run_id is not None
        self.run_id = (
            self.tracker.start(
                experiment,
                f"x{self.cfg.scale}-{self.cfg.phase}",
                self.run_id,
                tags,
                resume_step=self.resumed_step,
            )
            or self.run_id
        )
        if resuming:
            return
        self.tracker.log_params(
            {
                "config": self.cfg.to_dict(),
                "data": {
                    "preset": preset,
                    "hr_size": manifest["hr_size"],
                    "lr_size": self.shards.lr_size,
                    "codec": manifest["codec"],
                    "synthetic": synthetic,
                    "train_samples": self.shards.samples,
                    "val_samples": manifest["splits"]["val"]["samples"],
                },
                "git_commit": git_commit(),
                "world_size": self.place.world_size,
                "device": str(self.device),
                "loader": self.loader.backend,
                "vgg_weights": describe_weights(self.cfg.vgg_weights)
                if self.cfg.phase == "gan"
                else "unused",
                "torch": torch.__version__,
            }
        )

    def run_eval(self) -> dict[str, float]:
        """Every rank scores its part of the val split; rank 0 logs the means (and returns
        them; other ranks get {})."""
        self.doing = "an evaluation"
        grid = self.cfg.out / "samples" / f"step-{self.step:08d}.png"
        scores = evaluate(
            self.model.eval_generator(),
            dataclasses.replace(self.loader_cfg, split="val"),
            self.place,
            precision=self.cfg.eval_precision,
            max_batches=self.cfg.eval_batches,
            grid_path=grid,
            grid_images=self.cfg.grid_images,
            shards=self.val_shards,
            baseline=self.baseline,
            lpips=self.lpips,
        )
        if self.place.is_main:
            self.tracker.log_metrics(scores.metrics(), self.step)
            if grid.is_file():
                self.tracker.log_artifact(grid, "samples", self.step)
            sr, bicubic = scores.sr, scores.bicubic
            lpips = f", LPIPS {sr['lpips']:.4f} ({bicubic['lpips']:.4f})" if "lpips" in sr else ""
            log.info(
                "step %d: val PSNR-Y %.2f dB (bicubic %.2f), SSIM-Y %.4f (bicubic %.4f)%s, "
                "%d images in %.1f s",
                self.step, sr["psnr_y"], bicubic["psnr_y"], sr["ssim_y"], bicubic["ssim_y"],
                lpips, scores.images, scores.seconds,
            )  # fmt: skip
            return scores.metrics()
        return {}

    # -- the loop

    def train(self, stop: StopRequest) -> str:
        cfg = self.cfg
        self.start_tracking()
        meter = StepMeter(self.device, cfg.batch_size * self.place.world_size,
                          self.place.world_size)  # fmt: skip
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            unit="step",
            disable=not self.place.is_main,
            desc=f"x{cfg.scale} {cfg.phase}",
            mininterval=2,
        )
        outcome = "finished"
        vote = StopVote(stop)
        while self.step < cfg.steps and outcome == "finished":
            meter.asking()
            for batch in self.loader:
                meter.got_batch()
                if meter.steps_done == 0:
                    log.info("first batch %.1f s after start-up began (shards checked in %.1f s)",
                             meter.first_batch_at - self.created, self.check_seconds)  # fmt: skip
                self.doing = "a training step"
                self.model.set_lr(learning_rate(cfg.optim, cfg.phase, self.step, cfg.steps))
                meter.add(self.model.train_step(batch.lr, batch.hr))
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    means = meter.window()
                    means["lr"] = learning_rate(cfg.optim, cfg.phase, self.step - 1, cfg.steps)
                    self.tracker.log_metrics(means, self.step)
                    losses = {k: v for k, v in means.items() if k.startswith("loss/")}
                    bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in losses.items()})
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
                if self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    self.run_eval()
                if self.step >= cfg.steps:  # every rank at once, before any vote on stopping
                    break
                self.doing = "the stop vote"
                if vote.should_stop():
                    outcome = "stopped"
                    break
                meter.asking()
        bar.close()
        vote.close()
        log.info("%d steps, %.1f images/s since the first batch (evaluations and checkpoints "
                 "included)", meter.steps_done, meter.images_per_s())  # fmt: skip
        self.save()
        if outcome == "stopped":
            log.warning(
                "stop signal received: checkpoint written at step %d; continue with --resume auto",
                self.step,
            )
            self.tracker.end("KILLED")
            return outcome
        final = self.run_eval()
        if self.place.is_main:
            exported = self.model.eval_generator()
            tags = version_tags(self.tracker.run_id, self.step, final, cfg.phase)
            self.tracker.log_model(copy.deepcopy(exported).cpu(), "generator",
                                   registry_name(cfg.scale), tags)  # fmt: skip
        self.tracker.end("FINISHED")
        return outcome


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
