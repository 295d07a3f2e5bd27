"""The pretrained weights this pipeline uses but cannot train: which are here, getting them.

    python -m pipeline.weights check            # what is present, where
    python -m pipeline.weights fetch [NAME ...] # download into the torch hub cache

The files and where they live: pipeline/archs/pretrained.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from pipeline.archs.pretrained import WEIGHTS, fetch
from pipeline.cli import run_command

NAME = "pipeline.weights"


@click.group(NAME, no_args_is_help=False, context_settings={"help_option_names": ["-h", "--help"]})
def commands() -> None:
    """The pretrained weights this pipeline uses but cannot train."""


@commands.command("check")
def check() -> None:
    """Say which weights are present and where (exit 1 if any is absent)."""
    absent = 0
    for file in WEIGHTS.values():
        path = file.cached_path()
        present = path.is_file()
        absent += not present
        state = "present" if present else "ABSENT "
        click.echo(f"{file.name:10} {state} {path}  ({file.used_for})")
    if absent:
        click.echo(f"{absent} absent: 'python -m pipeline.weights fetch' downloads them")
        raise click.exceptions.Exit(1)


@commands.command("fetch")
@click.argument("names", nargs=-1, metavar="[NAME]...", type=click.Choice(list(WEIGHTS)))
def fetch_command(names: tuple[str, ...]) -> None:
    """Download into the torch hub cache (all of them unless NAMEs are given)."""
    problems = fetch(list(names) or list(WEIGHTS))
    for problem in problems:
        click.echo(f"{NAME}: error: {problem}", err=True)
    if problems:
        raise click.exceptions.Exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(commands, argv)


if __name__ == "__main__":
    sys.exit(main())
