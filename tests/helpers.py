"""Running the real `srgan-preprocess` command in a subprocess, as users and scripts do."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def preprocess_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "preprocess.cli", *map(str, args)]


def run_preprocess(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        preprocess_cmd(*args), capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"srgan-preprocess {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def tree_bytes(out: Path) -> dict[str, bytes]:
    """Every shard, index and the manifest of an output folder, by relative path."""
    files = sorted(out.glob("*/*.tar")) + sorted(out.glob("*/*.idx")) + [out / "manifest.json"]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
