"""Running `python -m pipeline.train` as users do, on tiny models and the CelebA sample's shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from helpers import PROJECT_ROOT

TINY = ["--blocks", "2", "--channels", "8", "--d-channels", "4", "--batch-size", "4",
        "--precision", "fp32", "--vgg-weights", "random", "--loader-threads", "1"]  # fmt: skip


def train_cmd(
    data: Path,
    out: Path,
    db: Path | str,
    *extra: str,
    torchrun: int = 0,
    restarts: int = 0,
) -> list[str]:
    uri = db if isinstance(db, str) else f"sqlite:///{db}"
    launcher = [sys.executable, "-m", "pipeline.train"]
    if torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={torchrun}", f"--max-restarts={restarts}",
                    "-m", "pipeline.train"]  # fmt: skip
    return [*launcher, "--data", str(data), "--out", str(out), "--tracking-uri", uri, *TINY, *extra]


def run_train(
    *args: object, check: bool = True, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        train_cmd(*args, **kwargs),  # type: ignore[arg-type]
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"pipeline.train exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def generator_in(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The raw generator weights a checkpoint holds."""
    return torch.load(checkpoint, weights_only=True)["model"]["generator"]
