"""The generators that ship in models/ and how a command names one: `--checkpoint` for anything
trained (a file, a run folder, a released .safetensors file, an MLflow URI), or `--model x4|x8`
for a shipped one, the 4x when neither is given. launch/release.sh made them; their card,
models/README.md, says how, on what and with which scores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import torch

from pipeline.cli import InputError, with_default
from pipeline.runtime.provenance import PROJECT_ROOT
from pipeline.serving.generator_file import release_file_name
from pipeline.serving.generators import LOAD_ERRORS, Generator, load_generator

MODELS_DIR = PROJECT_ROOT / "models"
SHIPPED = {f"x{scale}": release_file_name(scale) for scale in (4, 8)}
DEFAULT_MODEL = "x4"


def shipped_model(name: str) -> Path:
    """The path of a shipped generator (`x4`, `x8`)."""
    return MODELS_DIR / SHIPPED[name]


def generator_options(command: Callable) -> Callable:
    """--checkpoint and --model; the command's callback gets both: pass them to
    `generator_source`."""
    command = click.option(
        "--model",
        type=click.Choice(list(SHIPPED)),
        default=None,
        help=with_default("a generator shipped in models/ (when no --checkpoint)", DEFAULT_MODEL),
    )(command)
    return click.option(
        "--checkpoint",
        help=with_default(
            "a checkpoint file, a run folder (its newest checkpoint), a released .safetensors "
            "file, or an MLflow model URI: models:/srgan-celeba-x4/latest, runs:/RUN_ID/generator",
            "the shipped --model",
        ),
    )(command)


def generator_source(checkpoint: str | None, model: str | None) -> str:
    """What --checkpoint/--model name: the checkpoint, else the shipped model's file."""
    if checkpoint is not None and model is not None:
        raise click.UsageError("give --checkpoint or --model, not both")
    if checkpoint is not None:
        return checkpoint
    path = shipped_model(model or DEFAULT_MODEL)
    if not path.is_file():
        raise InputError(f"{path}: shipped model not found (pass --checkpoint, or make one "
                         "with launch/release.sh)")  # fmt: skip
    return str(path)


def load_chosen_generator(
    checkpoint: str | None, model: str | None, device: torch.device, which: str
) -> Generator:
    """The generator --checkpoint/--model name, or a one-line InputError saying why not."""
    source = generator_source(checkpoint, model)
    try:
        return load_generator(source, device, which)
    except LOAD_ERRORS as exc:
        raise InputError(str(exc)) from None
