"""One release: shard CelebA, train each scale, keep the EMA generator as a half-precision
safetensors file, score that file on the test split (lossless) and on FSRNet's faces, and
write results.json and the model card next to the weights.

Each stage runs the project's own command (srgan-preprocess, pipeline.train under torchrun,
pipeline.evaluate) as a user would, with its output in OUT/logs/ and on the console; a stage
whose result is already there is not run again, so re-running after a crash goes on where it
stopped (training resumes from its newest checkpoint).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline import evaluate
from pipeline.checkpoint import find_checkpoint, generator_from
from pipeline.generator_file import save_generator, sha256
from pipeline.release.card import render_card
from pipeline.release.sizes import ReleaseSize
from preprocess.atomic import atomic_open, write_json
from preprocess.manifest import MANIFEST_NAME, load_manifest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESULTS_NAME, CARD_NAME = "results.json", "README.md"
RESULTS_FORMAT = "srgan-celeba-release/1"
EXPERIMENT = "srgan-celeba-release"


class ReleaseError(Exception):
    """A stage failed; one line naming it and its log."""


@dataclass
class ReleaseJob:
    celeba_root: Path | None  # sharded into OUT/shards, unless `shards` is given
    out: Path  # shards, runs, logs, scores and MLflow's database
    release: Path  # the weights, results.json and the card
    size: ReleaseSize
    scales: tuple[int, ...] = (4, 8)
    fsrnet: Path | None = None  # FSRNet's 1,000 HR test faces (128 x 128)
    nproc: int = 1
    shards: Path | None = None
    train_args: tuple[str, ...] = ()  # after the size's flags: they win
    command: str = field(
        default_factory=lambda: shlex.join(["python", "-m", "pipeline.release", *sys.argv[1:]])
    )


def run_stage(name: str, cmd: list[str], log_path: Path) -> float:
    """Run `cmd` from the project root, its output to the console and to `log_path`; returns
    its wall time in seconds."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"release: {name}: {shlex.join(cmd)}", flush=True)
    started = time.perf_counter()
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            print(f"  {line}", end="", flush=True)
    if process.returncode != 0:
        raise ReleaseError(f"{name} failed (exit {process.returncode}); its log: {log_path}")
    return time.perf_counter() - started


def make_shards(job: ReleaseJob) -> Path:
    """Lossless shards (PNG HR and LR) of the CelebA root, made once."""
    if job.shards is not None:
        load_manifest(job.shards)  # one line if it is not a preprocess output
        return job.shards
    shards = job.out / "shards"
    if not (shards / MANIFEST_NAME).is_file():
        if job.celeba_root is None:
            raise ReleaseError("a CelebA root or --shards is needed")
        run_stage(
            "shard",
            [
                sys.executable,
                "-m",
                "preprocess.cli",
                "shard",
                "--celeba-root",
                str(job.celeba_root),
                "--out",
                str(shards),
                "--preset",
                "faces128",
                "--codec",
                "png",
                "--no-progress",
            ],
            job.out / "logs" / "shard.log",
        )
    return shards


def train(job: ReleaseJob, shards: Path, scale: int) -> tuple[Path, float]:
    """Train the scale's SRResNet (MSE pretrain phase); returns its run folder and seconds."""
    run_dir = job.out / "runs" / f"x{scale}"
    tracking = f"sqlite:///{(job.out / 'mlflow.db').resolve()}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={job.nproc}",
        "-m",
        "pipeline.train",
        "--config",
        str(PROJECT_ROOT / "configs" / f"x{scale}.toml"),
        "--scale",
        str(scale),
        "--data",
        str(shards),
        "--phase",
        "pretrain",
        "--out",
        str(run_dir),
        "--resume",
        "auto",
        "--tracking-uri",
        tracking,
        "--experiment",
        EXPERIMENT,
        *job.size.train_args(scale),
        *job.train_args,
    ]
    seconds = run_stage(f"train x{scale}", cmd, job.out / "logs" / f"train-x{scale}.log")
    return run_dir, seconds


def keep_generator(job: ReleaseJob, run_dir: Path, scale: int) -> tuple[Path, dict[str, Any]]:
    """The run's last checkpoint's EMA generator as the release's weights file."""
    found, state = find_checkpoint(run_dir)
    step, want = int(state.get("step", -1)), job.size.steps(scale)
    if step < want:
        raise ReleaseError(f"{found}: step {step}, but the run was to train {want} steps")
    model = generator_from(state, found, "ema")
    path = job.release / f"srgan-celeba-x{scale}.safetensors"
    save_generator(
        model,
        path,
        "fp16",
        {"step": str(step), "weights": "ema", "phase": "pretrain", "commit": commit()},
    )
    network = {
        "blocks": len(model.body),
        "channels": model.head[0].out_channels,
        "output": model.output,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return path, {"step": step, "network": network, "config": state.get("config", {})}


def score(job: ReleaseJob, weights: Path, scale: int, where: str, source: list[str]) -> dict:
    """pipeline.evaluate's scores of the released file (as users get it, half precision), run
    in this process (one torch start-up less per score)."""
    out = job.out / "scores" / f"x{scale}-{where}.json"
    argv = ["--checkpoint", str(weights), "--scale", str(scale), *source, "--json", str(out)]
    print(f"release: score x{scale} on {where}: python -m pipeline.evaluate {shlex.join(argv)}")
    status = evaluate.main(argv)
    if status != 0:
        raise ReleaseError(f"scoring x{scale} on {where} failed (exit {status})")
    scores = json.loads(out.read_text())
    return {k: scores[k] for k in ("images", "skipped", "sr", "bicubic", "seconds")}


def release_scale(job: ReleaseJob, shards: Path, scale: int) -> dict[str, Any]:
    run_dir, seconds = train(job, shards, scale)
    weights, made = keep_generator(job, run_dir, scale)
    scores = {
        split: score(job, weights, scale, split, ["--data", str(shards), "--split", split])
        for split in ("val", "test")
    }
    if job.fsrnet is not None:
        scores["fsrnet"] = score(job, weights, scale, "fsrnet", ["--images", str(job.fsrnet)])
    size = job.size
    # the global batch the run trained with (a --train-arg may have changed the size's)
    batch = int(made["config"].get("batch_size", size.batch_size)) * job.nproc
    return {
        "file": weights.name,
        "sha256": sha256(weights),
        "bytes": weights.stat().st_size,
        "dtype": "fp16",
        "weights": "ema",
        "network": made["network"],
        "train": {
            "steps": made["step"],
            "batch_size": batch,
            "images_seen": made["step"] * batch,
            "precision": made["config"].get("precision", size.precision),
            "seconds": round(seconds, 1),
            "command": shlex.join(
                [
                    "torchrun",
                    "--standalone",
                    f"--nproc_per_node={job.nproc}",
                    "-m",
                    "pipeline.train",
                    "--config",
                    f"configs/x{scale}.toml",
                    "--scale",
                    str(scale),
                    "--phase",
                    "pretrain",
                    *size.train_args(scale),
                    *job.train_args,
                ]
            ),
        },
        "scores": scores,
    }


def commit() -> str:
    """The code's commit, marked when the tree had changes (what a reader can check out)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            text=True,
            capture_output=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


def hardware(nproc: int) -> str:
    if torch.cuda.is_available():
        return f"{nproc} x {torch.cuda.get_device_name(0)}"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"CPU: {model}, {os.cpu_count()} cores"


def data_summary(shards: Path) -> dict[str, Any]:
    manifest = load_manifest(shards)
    return {
        "source": manifest.get("source"),
        "synthetic": bool(manifest.get("synthetic")),
        "preset": manifest.get("preset"),
        "hr_size": manifest["hr_size"],
        "codec": manifest["codec"],
        "lr_codec": manifest.get("lr_codec"),
        "images": {split: manifest["splits"][split]["samples"] for split in manifest["splits"]},
    }


def run_release(job: ReleaseJob) -> dict[str, Any]:
    """Make the release; returns what results.json holds."""
    started = time.perf_counter()
    job.out.mkdir(parents=True, exist_ok=True)
    shards = make_shards(job)
    models = {f"x{scale}": release_scale(job, shards, scale) for scale in job.scales}
    results = {
        "format": RESULTS_FORMAT,
        "made": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": job.command,
        "commit": commit(),
        "hardware": hardware(job.nproc),
        "size": {"name": job.size.name, "about": job.size.about},
        "data": data_summary(shards),
        "fsrnet_faces": str(job.fsrnet) if job.fsrnet else None,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "models": models,
    }
    job.release.mkdir(parents=True, exist_ok=True)
    write_json(job.release / RESULTS_NAME, results)
    with atomic_open(job.release / CARD_NAME, "w") as handle:
        handle.write(render_card(results))
    return results


def check_release(release: Path) -> list[str]:
    """Problems with a release folder: files missing or not matching results.json's sha256."""
    results = json.loads((release / RESULTS_NAME).read_text())
    problems = []
    for name, model in results["models"].items():
        path = release / model["file"]
        if not path.is_file():
            problems.append(f"{path}: missing ({name})")
        elif sha256(path) != model["sha256"]:
            problems.append(f"{path}: sha256 differs from {release / RESULTS_NAME}")
    return problems
