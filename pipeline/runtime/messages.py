"""Errors as the one line that users and logs see."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception as one line: its message's first, or its type when it has none."""
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
