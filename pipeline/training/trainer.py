"""One training run of one process: data, model, checkpoints, evaluation and tracking around
the step loop (the command line and the process set-up are pipeline/train.py's).

Every rank runs the same loop; rank 0 alone writes checkpoints and talks to MLflow. A stop
request (SIGTERM, SIGUSR2) is voted on every step so all ranks stop at the same one.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import logging
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.archs.vgg import describe_weights
from pipeline.data import LoaderConfig, build_loader, open_split_once
from pipeline.evaluation import BicubicBaseline, evaluate, load_lpips
from pipeline.runtime.checkpoint import (
    agreed_newest_checkpoint,
    checkpoint_path,
    find_checkpoint,
    finished_before,
    generator_weights,
    load_checkpoint,
    note_finished,
    save_checkpoint,
    set_aside_newer,
)
from pipeline.runtime.distributed import ProcessPlace, first_problem, gather_objects
from pipeline.runtime.precision import training_precision
from pipeline.runtime.provenance import code_commit
from pipeline.runtime.rng import rng_state, set_rng_state
from pipeline.runtime.stopping import StopRequest, StopVote
from pipeline.serving.mlflow_model import registry_name, version_tags
from pipeline.tracking import Tracker, resolve_tracking_uri
from pipeline.training.compilation import compile_on
from pipeline.training.config import TrainConfig
from pipeline.training.meter import StepMeter
from pipeline.training.schedule import learning_rate, lr_factor
from pipeline.training.steps import SRGANModel

log = logging.getLogger("pipeline.train")


class TrainingError(Exception):
    """A problem with the run's inputs; one line, shown without a traceback."""


def resolve_device_defaults(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """Turn 'auto' settings into the measured-fastest safe choice for the device, and say what
    was chosen (numbers in docs/PERFORMANCE.md)."""
    channels_last = cfg.channels_last
    if channels_last is None:
        # Faster on both in bench/train_step.py (docs/PERFORMANCE.md): CPU 1.01x-1.4x; H200
        # 1.0x-1.6x, bf16 at batch 256 1.47x (pretrain) and 1.57x (GAN). Other devices: unmeasured.
        channels_last = device.type in ("cpu", "cuda")
        log.info("channels_last %s on %s (auto)", "on" if channels_last else "off", device.type)
    precision = training_precision(cfg.precision, device)
    compile = "on" if compile_on(cfg.compile, device) else "off"
    if cfg.compile == "auto":
        log.info("torch.compile %s on %s (auto)", compile, device.type)
    return dataclasses.replace(cfg, precision=precision, channels_last=channels_last,
                               compile=compile)  # fmt: skip


class Trainer:
    def __init__(self, cfg: TrainConfig, place: ProcessPlace, device: torch.device) -> None:
        self.cfg, self.place, self.device = cfg, place, device
        self.created = time.perf_counter()
        # checked once per job, here (each rank its part): a broken val split must fail now,
        # not at the first evaluation
        self.shards = open_split_once(cfg.data, "train", cfg.scale, place)
        self.val_shards = open_split_once(cfg.data, "val", cfg.scale, place)
        self.check_seconds = time.perf_counter() - self.created
        self.loader_cfg = LoaderConfig(data=cfg.data, split="train", scale=cfg.scale,
                                       batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                                       **dataclasses.asdict(cfg.loader))  # fmt: skip
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
            found = agreed_newest_checkpoint(self.checkpoints, self.place)
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
        saved_batch = state["config"].get("batch_size", self.cfg.batch_size)
        if len(loaders) == self.place.world_size and saved_batch == self.cfg.batch_size:
            self.loader.load_state_dict(loaders[self.place.rank])
        else:
            # A saved position is in batches of the saved size on the saved ranks.
            log.warning(
                "checkpoint was written by %d processes at batch %d, this run has %d at batch "
                "%d: the data order restarts at a new epoch",
                len(loaders), saved_batch, self.place.world_size, self.cfg.batch_size,
            )  # fmt: skip
            self.loader.move_to(loaders[0]["epoch"] + 1, 0)
        log.info("resumed from %s at step %d", path, self.step)
        self.resumed_step = self.step
        if self.place.is_main and (moved := set_aside_newer(self.checkpoints, self.step)):
            log.warning("%d checkpoints of later steps than %d (%s) moved to %s: this run's "
                        "saves would be pruned before them and --resume auto would go back to "
                        "them", len(moved), self.step, ", ".join(p.name for p in moved),
                        moved[0].parent)  # fmt: skip
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
                "git_commit": code_commit(),
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

    def report_compile(self) -> None:
        """Once, after the step that compiled: how long it took, or why it fell back to eager."""
        model = self.model
        if model.compile_state == "compiled":
            log.info("torch.compile (%s): the first step took %.1f s, compiling included",
                     self.cfg.compile_backend, model.compile_seconds)  # fmt: skip
            self.tracker.log_metrics({"compile/seconds": model.compile_seconds}, self.step)
        else:
            log.warning("torch.compile failed, training goes on eager: %s", model.compile_error)
            self.tracker.log_metrics({"compile/failed": 1.0}, self.step)

    # -- the loop

    def train(self, stop: StopRequest) -> str:
        cfg = self.cfg
        if finished_before(cfg.out, self.step, cfg.steps, self.place):
            return "finished"
        self.start_tracking()
        global_batch = cfg.batch_size * self.place.world_size
        meter = StepMeter(self.device, global_batch, self.place.world_size)
        if cfg.optim.lr_scaling != "none":
            log.info("peak lr %.3g: %g for a global batch of %d, scaled (%s) to %d",
                     cfg.optim.lr * lr_factor(cfg.optim, global_batch), cfg.optim.lr,
                     cfg.optim.lr_reference_batch, cfg.optim.lr_scaling, global_batch)  # fmt: skip
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
                self.model.set_lr(
                    learning_rate(cfg.optim, cfg.phase, self.step, cfg.steps, global_batch)
                )
                compiling = self.model.compile_state == "pending"
                meter.add(self.model.train_step(batch.lr, batch.hr))
                self.step += 1
                if compiling:
                    self.report_compile()
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    means = meter.window()
                    means["lr"] = learning_rate(cfg.optim, cfg.phase, self.step - 1, cfg.steps,
                                                 global_batch)  # fmt: skip
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
        if self.place.is_main:
            note_finished(cfg.out, self.step, self.run_id, final)
        return outcome
