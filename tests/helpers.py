"""Running the real `srgan-preprocess` command in a subprocess, as users and scripts do."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import click

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


def help_records(command: click.Command) -> dict[str, str]:
    """Each option's help as --help shows it (its default or [required] included), by its first
    flag; --help itself left out."""
    ctx = click.Context(command, **command.context_settings)
    return {
        p.opts[0]: p.get_help_record(ctx)[1]  # type: ignore[index]
        for p in command.get_params(ctx)
        if p is not command.get_help_option(ctx)
    }


def script_cmd(name: str, *args: str) -> list[str]:
    """What the console script `name` of pyproject.toml runs once installed: the installer's
    wrapper is `sys.exit(target())`. Tests run it so, since installing would repoint the venv."""
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, target = scripts[name].split(":")
    wrapper = f"import sys; from {module} import {target}; sys.exit({target}())"
    return [sys.executable, "-c", wrapper, *args]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        script_cmd(name, *args), capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300
    )
