"""Run a click command as a function that returns its exit status.

The modules' `main(argv) -> int` is what `python -m`, torchrun and the tests call; click's
standalone mode would exit the process and print errors as "Error: ...". Here every error is one
line, "<prog>: error: <message>", like srgan-preprocess's.
"""

from __future__ import annotations

import click


class InputError(click.ClickException):
    """Bad input (a missing or unreadable file): exit status 2, as for a bad flag."""

    exit_code = 2


def run_command(command: click.Command, argv: list[str] | None, prog: str) -> int:
    try:
        # without standalone mode click returns an Exit's status, or the callback's value
        status = command.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"{prog}: error: {exc.format_message()}", err=True)
        return exc.exit_code
    return status if isinstance(status, int) else 0
