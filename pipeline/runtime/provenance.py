"""Which code made a run or a release: its git commit, logged to MLflow and written on cards."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def code_commit(mark_changes: bool = False) -> str:
    """The code's commit, or "unknown". SRGAN_COMMIT stands in where the tree travelled without
    .git (as to a device machine). `mark_changes` appends "+changes" when tracked files other
    than models/ differ from it (a release made from edited code says so)."""
    if os.environ.get("SRGAN_COMMIT"):
        return os.environ["SRGAN_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, text=True,
                              capture_output=True, check=True,
                              timeout=10).stdout.strip()  # fmt: skip
        if not mark_changes:
            return head
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!models"], cwd=PROJECT_ROOT, text=True,
                               capture_output=True, timeout=30).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+changes" if dirty else head
