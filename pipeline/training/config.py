"""The trainer's configuration: typed dataclasses, one source of defaults.

Precedence: dataclass defaults < a TOML file (`--config`, e.g. configs/x4.toml) < flags. The
resolved config is saved in every checkpoint and logged to MLflow as params.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.data.config import ReadSettings

Phase = Literal["pretrain", "gan"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]


@dataclass
class ModelConfig:
    blocks: int = 16  # residual blocks B of the generator
    channels: int = 64  # generator width
    d_channels: int = 64  # discriminator width of its first conv
    output: Literal["tanh", "linear"] = "tanh"  # G's last activation (pipeline/archs/srresnet.py)


Schedule = Literal["cosine", "constant", "paper"]
LrScaling = Literal["none", "sqrt", "linear"]


@dataclass
class OptimConfig:
    lr: float = 1e-4  # the peak, reached after the warm-up
    beta1: float = 0.9
    beta2: float = 0.999
    # pipeline/training/schedule.py: a linear warm-up over `warmup_steps`, then "cosine" down to
    # `min_lr` at the end of --steps, "constant", or "paper" (pretrain constant; the GAN phase
    # drops by `gan_lr_drop` after `gan_lr_drop_at` of the steps: 1e5 steps at 1e-4, 1e5 at 1e-5).
    schedule: Schedule = "cosine"
    warmup_steps: int = 50
    min_lr: float = 0.0
    gan_lr_drop_at: float = 0.5
    gan_lr_drop: float = 0.1
    # `lr` and `min_lr` are for a global batch of `lr_reference_batch`; at another global batch
    # (batch_size x processes) they are scaled by (batch / reference) ** 0.5 with "sqrt" (the
    # square-root rule for Adam, Malladi et al. 2022), by batch / reference with "linear"
    # (Goyal et al. 2017, SGD), not at all with "none" (the paper's setting: one lr, any batch)
    lr_scaling: LrScaling = "none"
    lr_reference_batch: int = 16


@dataclass
class LossConfig:
    pixel: Literal["mse", "l1"] = "mse"  # the pretrain loss: the paper's MSE, or L1 (BasicSR)
    vgg_layer: str = "relu5_4"  # phi_5,4: VGG54
    vgg_rescale: float = 1.0 / 12.75
    adversarial_weight: float = 1e-3


@dataclass
class TrainConfig:
    data: Path = Path("data/shards")
    scale: int = 4
    phase: Phase = "pretrain"
    steps: int = 100_000
    batch_size: int = 16  # per process
    out: Path = Path("runs/train")
    init: Path | None = None  # generator weights to start from (the GAN phase needs them)
    resume: str | None = None  # "auto" or a checkpoint path
    precision: Precision = "auto"  # bf16 where the hardware has it, else fp32
    # pipeline/training/compilation.py: auto is on for CUDA, off on CPUs (measured there)
    compile: Literal["auto", "on", "off"] = "auto"
    compile_backend: str = "inductor"  # torch.compile's backend ("aot_eager": no codegen)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    channels_last: bool | None = None  # None: auto (trainer.resolve_device_defaults)
    tracking_uri: str | None = None
    experiment: str | None = None
    vgg_weights: str | None = None  # a path, "random" (tests only), or None: torch hub cache
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    eval_every: int = 1000
    eval_batches: int = 0  # 0: the whole val split; N: at most N batches per process
    eval_precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # the generator while scoring
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    dist_timeout: float = 600.0  # seconds a collective waits for the other ranks (NCCL's default)
    # pipeline/training/ema.py: an average of G's weights (0: none), evaluated, exported and used
    # for upscaling unless eval_weights is "raw"
    ema_decay: float = 0.999
    eval_weights: Literal["ema", "raw"] = "ema"
    # pipeline/evaluation/perceptual.py: LPIPS in every evaluation when its AlexNet weights are
    # present ("auto"), required ("on") or never ("off"); the weights from a file or the torch
    # hub cache
    lpips: Literal["auto", "on", "off"] = "auto"
    alexnet_weights: str | None = None
    grid_images: int = 8
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    loader: ReadSettings = field(default_factory=ReadSettings)

    def validate(self) -> None:
        if isinstance(self.compile, bool):  # config files from before auto: compile = true
            self.compile = "on" if self.compile else "off"
        _check_choices(self)
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {self.scale}")
        for name in (
            "steps",
            "batch_size",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.optim.lr_reference_batch < 1:
            raise ValueError(
                f"lr_reference_batch must be >= 1, got {self.optim.lr_reference_batch}"
            )
        if self.optim.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.optim.warmup_steps}")
        if not 0 <= self.optim.min_lr <= self.optim.lr:
            raise ValueError(f"min_lr must be in [0, lr], got {self.optim.min_lr}")
        if not (self.ema_decay == 0 or 0 < self.ema_decay < 1):
            raise ValueError(f"ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}")
        if self.dist_timeout <= 0:
            raise ValueError(f"dist_timeout must be > 0 seconds, got {self.dist_timeout}")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _check_choices(config: Any, prefix: str = "") -> None:
    """Every Literal-typed setting (of nested configs too) is one of its choices: a TOML file
    can hold anything, and the annotation is the one list of choices (the flags use it too)."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value, hint = getattr(config, item.name), hints[item.name]
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{prefix}{item.name}.")
        elif typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            choices = ", ".join(typing.get_args(hint))
            raise ValueError(f"{prefix}{item.name} must be one of {choices}, got {value!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value


def _merge(target: Any, values: dict[str, Any], where: str) -> None:
    """Set dataclass fields from a (nested) dict, refusing unknown keys."""
    known = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{where}: unknown setting {key!r}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {key} must be a table")
            _merge(current, value, f"{where}.{key}")
        elif isinstance(current, Path) or (
            value is not None and known[key].type in ("Path", "Path | None")
        ):
            setattr(target, key, Path(value) if value is not None else None)
        else:
            setattr(target, key, value)


def from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    cfg = TrainConfig()
    _merge(cfg, values, where)
    return cfg


def load_config(paths: Path | Sequence[Path] | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults, then each TOML file in order (a GPU layer such as configs/h200.toml on top of
    configs/x4.toml), then the overrides (flat keys or dotted 'optim.lr')."""
    cfg = TrainConfig()
    for path in [paths] if isinstance(paths, Path) else paths or []:
        if not path.is_file():
            raise ValueError(f"{path}: config file not found")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
        _merge(cfg, values, str(path))
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    _merge(cfg, nested, "flags")
    cfg.validate()
    return cfg
