"""Click plumbing shared by the pipeline's commands (train, evaluate, upscale, export, weights,
tracking, release), and the options that name a generator.

Each is a `main(argv) -> int` function, not a click command run standalone: tests call them
in-process, torchrun runs them as modules, console scripts exit with what they return, and
every error is one line, `<command>: error: <what>`. For train and evaluate click only parses
(`parse`): the caller gets the values and decides the exit status; upscale and export are
whole click commands (`run_command`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click
import torch

from pipeline.runtime.messages import first_line
from pipeline.serving.generators import LOAD_ERRORS, Generator, load_generator
from pipeline.serving.shipped import DEFAULT_MODEL, SHIPPED, shipped_model


class CommandLineDone(SystemExit):
    """--help was shown, or a usage error was reported: nothing is left to run. A SystemExit,
    so that a script calling `parse_args` ends as it did under argparse; `main` returns
    its `status` instead."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def parse(command: click.Command, argv: Sequence[str] | None) -> Any:
    """The value `command`'s callback makes of `argv` (sys.argv[1:] when None).

    --help, and a usage error, raise CommandLineDone (0, 2). The error is one line,
    `<command name>: error: <what>`, like the commands' runtime errors (scripts and tests look
    for that prefix), where argparse and click's standalone mode print a usage block too.
    """
    try:
        value = command.main(args=argv, standalone_mode=False)
    except click.ClickException as exc:
        raise CommandLineDone(report(command, exc)) from None
    # Without standalone mode, click returns the exit status where --help ended the parse;
    # the callbacks given here never return an int.
    if isinstance(value, int):
        raise CommandLineDone(value)
    return value


class InputError(click.ClickException):
    """Bad input (a missing or unreadable file): exit status 2, as for a bad flag."""

    exit_code = 2


def report(command: click.Command, exc: click.ClickException) -> int:
    """Print a click error as one line; returns its exit status."""
    message = " ".join(exc.format_message().split())  # click's may span lines
    click.echo(f"{command.name}: error: {message}", err=True)
    return exc.exit_code


def run_command(command: click.Command, argv: Sequence[str] | None) -> int:
    """Run a whole click command; its exit status (an Exit's, or 0) instead of exiting."""
    try:
        status = command.main(args=argv, standalone_mode=False)
    except click.ClickException as exc:
        return report(command, exc)
    except click.exceptions.Abort:
        click.echo(f"{command.name}: aborted", err=True)
        return 130
    # without standalone mode click returns an Exit's status (--help: 0, PARTIAL...)
    return status if isinstance(status, int) else 0


# which of a checkpoint's generator weights a command uses (pipeline/runtime/checkpoint.py)
weights_option = click.option(
    "--weights",
    type=click.Choice(["ema", "raw"]),
    default="ema",
    show_default=True,
    help="G's weight average if the checkpoint has one, or its raw weights",
)


def with_default(help_text: str | None, default: str) -> str:
    """Help for an option whose value is None when not given, where click would show no default;
    laid out as click lays out the defaults it shows."""
    return f"{help_text or ''}  [default: {default}]".lstrip()


Callback = Callable[[click.Context, click.Parameter, bool | None], str | None]


def on_off(unset: str | None) -> Callback:
    """A --x/--no-x pair as the settings spell it: "on", "off", or `unset` when neither is given."""

    def convert(_ctx: click.Context, _param: click.Parameter, value: bool | None) -> str | None:
        return unset if value is None else "on" if value else "off"

    return convert


# ---- which generator: --checkpoint or a shipped --model (upscale, export) ----------------


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
    except Exception as exc:  # noqa: BLE001 - e.g. weights of another shape: one line, no trace
        raise InputError(f"{source}: {first_line(exc)}") from None
