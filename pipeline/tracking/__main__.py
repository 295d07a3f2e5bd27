"""python -m pipeline.tracking sync RUN_DIR [--tracking-uri URI]"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from pipeline.cli import InputError, run_command
from pipeline.runtime.messages import first_line
from pipeline.tracking.sync import sync


@click.group(
    "pipeline.tracking",
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def commands() -> None:
    """MLflow tracking of training runs."""


@commands.command("sync")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--tracking-uri", default=None, help="MLflow URI  [default: the URI the run used]")
def sync_command(run_dir: Path, tracking_uri: str | None) -> None:
    """Send what a run's journal holds that MLflow does not."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        count = sync(run_dir, tracking_uri)
    except Exception as exc:  # noqa: BLE001 - one line, whatever went wrong
        raise InputError(first_line(exc)) from None  # exit status 2, as before click
    click.echo(f"pipeline.tracking: {count} records sent from {run_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(commands, argv)


if __name__ == "__main__":
    sys.exit(main())
