"""One release: shard CelebA, train each scale, keep the EMA generator as a half-precision
safetensors file, score that file on the val and test splits (lossless) and on FSRNet's faces,
and write results.json and the model card next to the weights.

Each stage runs the project's own command (srgan-preprocess, pipeline.train under torchrun,
pipeline.evaluate) as a user would, with its output on the console and in OUT/logs/. A stage
whose result is already in OUT is not run again (a finished training run is kept, an
unfinished one resumes from its newest checkpoint), and the time it took the first time is read
back from OUT/stages.json, so a re-run after a crash reports the release's whole cost. The
release folder is written last and whole: the weights first, results.json and the card after
them, and weights files of other scales that a previous release left there are removed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline import evaluate  # the command: each score is its run, as a user would make it
from pipeline.release.card import render_card
from pipeline.release.sizes import ReleaseSize
from pipeline.runtime.checkpoint import find_checkpoint, generator_from, generator_weights
from pipeline.runtime.provenance import PROJECT_ROOT, code_commit
from pipeline.serving.generator_file import RELEASE_GLOB, release_file_name, save_generator, sha256
from preprocess.atomic import atomic_open, write_json
from preprocess.manifest import MANIFEST_NAME, load_manifest

RESULTS_NAME, CARD_NAME = "results.json", "README.md"
RESULTS_FORMAT = "srgan-celeba-release/1"
EXPERIMENT = "srgan-celeba-release"
STAGES_NAME = "stages.json"  # seconds each stage took when it ran
RUN_JOB_NAME = "release-job.json"  # in a run folder: the data and flags it trains with
# flags (as --flag=value) that leave the trained weights as they are: changing them between
# runs of a release may reuse its runs
OPERATIONAL_FLAGS = ("--tracking-uri", "--experiment", "--log-every", "--loader-threads",
                     "--dist-timeout")  # fmt: skip


class ReleaseError(Exception):
    """A stage failed; one line naming it and where to look."""


def _command_line() -> str:
    return shlex.join(["python", "-m", "pipeline.release", *sys.argv[1:]])


@dataclass
class ReleaseJob:
    """What one release is made of; paths absolute (stages run from the project root)."""

    celeba_root: Path | None  # sharded into OUT/shards, unless `shards` is given
    out: Path  # shards, runs, weights, logs, scores, stages.json and MLflow's database
    release: Path  # the weights, results.json and the card, written last
    size: ReleaseSize
    scales: tuple[int, ...] = (4, 8)
    fsrnet: Path | None = None  # FSRNet's 1,000 HR test faces (128 x 128)
    nproc: int = 1  # training processes, each with the size's batch
    shards: Path | None = None
    train_args: tuple[str, ...] = ()  # after the size's flags: they win
    command: str = field(default_factory=_command_line)


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


class Stages:
    """OUT/stages.json: the seconds each stage took when it ran, kept across re-runs."""

    def __init__(self, out: Path) -> None:
        self.path = out / STAGES_NAME
        self.seconds: dict[str, float] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {}
        )

    def total(self, scales: tuple[int, ...]) -> float:
        """Seconds of a release of `scales`: stages.json keeps other releases' stages too."""
        names = ["shard", *(f"{stage} x{s}" for s in scales for stage in ("train", "score"))]
        return sum(self.seconds.get(name, 0.0) for name in names)

    def record(self, name: str, seconds: float) -> float:
        self.seconds[name] = round(seconds, 1)
        write_json(self.path, self.seconds)
        return self.seconds[name]


def make_shards(job: ReleaseJob, stages: Stages) -> Path:
    """Lossless shards (PNG HR and LR) of the CelebA root, made once."""
    if job.shards is not None:
        load_manifest(job.shards)  # one line if it is not a preprocess output
        return job.shards
    shards = job.out / "shards"
    if not (shards / MANIFEST_NAME).is_file():
        if job.celeba_root is None:
            raise ReleaseError("a CelebA root or --shards is needed")
        cmd = [sys.executable, "-m", "preprocess.cli", "shard", "--celeba-root",
               str(job.celeba_root), "--out", str(shards), "--preset", "faces128",
               "--codec", "png", "--no-progress"]  # fmt: skip
        stages.record("shard", run_stage("shard", cmd, job.out / "logs" / "shard.log"))
    return shards


def launcher(job: ReleaseJob, python: str | None) -> list[str]:
    """torchrun over the job's processes: `python -m torch.distributed.run` as the release
    runs it, `torchrun` (python None) as the card shows it."""
    start = ["torchrun"] if python is None else [python, "-m", "torch.distributed.run"]
    return [*start, "--standalone", f"--nproc_per_node={job.nproc}", "-m", "pipeline.train"]


def train_argv(job: ReleaseJob, scale: int) -> list[str]:
    """pipeline.train's flags for `scale`, as the card prints them (no machine paths)."""
    return ["--config", f"configs/x{scale}.toml", "--scale", str(scale), "--phase", "pretrain",
            *job.size.train_args(scale), *job.train_args]  # fmt: skip


def finished_run(job: ReleaseJob, run_dir: Path) -> dict[str, Any] | None:
    """The run's newest checkpoint if the run is finished (its step is its config's steps);
    a checkpoint of another network than the size's is one line, not a failed resume."""
    try:
        found, state = find_checkpoint(run_dir)
    except Exception:  # noqa: BLE001 - no readable checkpoint: the run starts or resumes
        return None
    model = state.get("config", {}).get("model", {})
    have = (model.get("blocks"), model.get("channels"))
    resized = any(arg.startswith(("--blocks", "--channels")) for arg in job.train_args)
    if have != (job.size.blocks, job.size.channels) and not resized:
        raise ReleaseError(f"{run_dir}: a run of a B{have[0]}C{have[1]} network, not the "
                           f"--size {job.size.name} one; use another --out")  # fmt: skip
    steps = int(state.get("config", {}).get("steps", -1))
    return {"path": found, "state": state} if int(state.get("step", -2)) >= steps else None


def claim_run_dir(job: ReleaseJob, run_dir: Path, shards: Path, scale: int) -> None:
    """A run folder serves one job's data and flags: a release run again into the same --out
    with other shards or flags would otherwise resume, or reuse, a run trained on other data
    and score it (test split included) under the new job's card."""
    args = [a for a in train_argv(job, scale) if not a.startswith(OPERATIONAL_FLAGS)]
    wanted = {"data": str(shards.resolve()), "train_args": args}
    marker = run_dir / RUN_JOB_NAME
    if marker.is_file():
        had = json.loads(marker.read_text())
    else:  # a run folder of an older release: its checkpoints name their data
        try:
            _, state = find_checkpoint(run_dir)
        except Exception:  # noqa: BLE001 - nothing readable: a fresh run
            state = {}
        data = state.get("config", {}).get("data")
        had = {**wanted, "data": str(Path(data).resolve())} if data else wanted
    differ = [key for key in wanted if had.get(key) != wanted[key]]
    if differ:
        what = "; ".join(f"{key} {had.get(key)} there, {wanted[key]} now" for key in differ)
        raise ReleaseError(f"{run_dir}: a run of other data or flags ({what}); use another "
                           "--out, or delete that run folder")  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(marker, wanted)


def train(job: ReleaseJob, shards: Path, scale: int, stages: Stages) -> tuple[dict, float]:
    """Train the scale's SRResNet (MSE pretrain phase), unless it finished before; returns its
    last checkpoint and the seconds training took."""
    run_dir = job.out / "runs" / f"x{scale}"
    name = f"train x{scale}"
    done = finished_run(job, run_dir)  # another network: its own one-line error first
    claim_run_dir(job, run_dir, shards, scale)
    if done is None:
        tracking = f"sqlite:///{job.out / 'mlflow.db'}"
        cmd = [*launcher(job, sys.executable), "--data", str(shards), "--out", str(run_dir),
               "--resume", "auto", "--tracking-uri", tracking, "--experiment", EXPERIMENT,
               *train_argv(job, scale)]  # fmt: skip
        log = job.out / "logs" / f"train-x{scale}.log"
        seconds = stages.seconds.get(name, 0.0) + run_stage(name, cmd, log)
        stages.record(name, seconds)
        done = finished_run(job, run_dir)
        if done is None:
            raise ReleaseError(f"{run_dir}: training ended before its last step; see {log}")
    else:
        print(f"release: {name}: finished before, at {done['path']}")
    return done, stages.seconds.get(name, 0.0)


def keep_generator(
    job: ReleaseJob, done: dict[str, Any], scale: int, code: str
) -> tuple[Path, dict[str, Any]]:
    """The run's weight average (its raw weights when it kept none) as a weights file in
    OUT/weights/, copied into the release when every stage has passed."""
    state, found = done["state"], done["path"]
    _, which = generator_weights(state["model"], "ema")
    model = generator_from(state, found, which)
    step = int(state["step"])
    path = job.out / "weights" / release_file_name(scale)
    save_generator(model, path, "fp16", {"step": str(step), "weights": which,
                                         "phase": "pretrain", "commit": code})  # fmt: skip
    network = {"blocks": len(model.body), "channels": model.head[0].out_channels,
               "output": model.output,
               "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    return path, {"step": step, "weights": which, "network": network,
                  "config": state.get("config", {})}  # fmt: skip


def score(job: ReleaseJob, weights: Path, scale: int, where: str, source: list[str]) -> dict:
    """pipeline.evaluate's scores of the weights file (as users get it, half precision), run
    in this process (one torch start-up less per score); its lines are on the console."""
    out = job.out / "scores" / f"x{scale}-{where}.json"
    argv = ["--checkpoint", str(weights), "--scale", str(scale), *source, "--json", str(out)]
    print(f"release: score x{scale} on {where}: python -m pipeline.evaluate {shlex.join(argv)}")
    status = evaluate.main(argv)
    if status != 0:
        raise ReleaseError(f"scoring x{scale} on {where} failed (exit {status}): see above")
    scores = json.loads(out.read_text())
    if scores["images"] == 0:  # e.g. a --fsrnet folder whose every file was skipped
        raise ReleaseError(f"scoring x{scale} on {where}: no image was scored (see above)")
    return {k: scores[k] for k in ("images", "skipped", "sr", "bicubic", "seconds")}


def release_scale(
    job: ReleaseJob, shards: Path, scale: int, stages: Stages, code: str
) -> tuple[Path, dict[str, Any]]:
    """Train, keep and score one scale; returns its weights file and its results entry."""
    done, seconds = train(job, shards, scale, stages)
    weights, made = keep_generator(job, done, scale, code)
    started = time.perf_counter()
    scores = {
        split: score(job, weights, scale, split, ["--data", str(shards), "--split", split])
        for split in ("val", "test")
    }
    if job.fsrnet is not None:
        scores["fsrnet"] = score(job, weights, scale, "fsrnet", ["--images", str(job.fsrnet)])
    stages.record(f"score x{scale}", time.perf_counter() - started)
    # the global batch the run trained with (a --train-arg may have changed the size's, and a
    # finished run reused by a job with another --nproc had its own processes)
    processes = len(done["state"].get("loader", [])) or job.nproc
    batch = int(made["config"].get("batch_size", job.size.batch_size)) * processes
    return weights, {
        "file": weights.name,
        "sha256": sha256(weights),
        "bytes": weights.stat().st_size,
        "dtype": "fp16",
        "weights": made["weights"],
        "network": made["network"],
        "train": {
            "steps": made["step"],
            "batch_size": batch,
            "images_seen": made["step"] * batch,
            "precision": made["config"].get("precision", job.size.precision),
            "seconds": seconds,
            "command": shlex.join(launcher(job, None) + train_argv(job, scale)),
        },
        "scores": scores,
    }


def hardware(nproc: int) -> str:
    """The training devices, for the card: GPUs by name, else the CPU model and its cores."""
    if torch.cuda.is_available():
        return f"{nproc} x {torch.cuda.get_device_name(0)}"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return f"CPU: {model}, {os.cpu_count()} cores"


def data_summary(shards: Path) -> dict[str, Any]:
    """What the card says of the data: source, real or synthetic, preset, codecs, counts."""
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


def publish(job: ReleaseJob, weights: list[Path], results: dict[str, Any]) -> None:
    """Weights, then results.json and the card, into the release folder; other scales' files
    of an earlier release removed, so that the folder holds one release."""
    job.release.mkdir(parents=True, exist_ok=True)
    for path in weights:
        with atomic_open(job.release / path.name, "wb") as handle:
            handle.write(path.read_bytes())
    kept = {path.name for path in weights}
    for old in job.release.glob(RELEASE_GLOB):
        if old.name not in kept:
            old.unlink()
    write_json(job.release / RESULTS_NAME, results)
    with atomic_open(job.release / CARD_NAME, "w") as handle:
        handle.write(render_card(results))


def run_release(job: ReleaseJob) -> dict[str, Any]:
    """Make the release; returns what results.json holds."""
    code = code_commit(mark_changes=True)  # before anything is written
    job.out.mkdir(parents=True, exist_ok=True)
    stages = Stages(job.out)
    shards = make_shards(job, stages)
    made = {f"x{scale}": release_scale(job, shards, scale, stages, code) for scale in job.scales}
    results = {
        "format": RESULTS_FORMAT,
        "made": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": job.command,
        "commit": code,
        "hardware": hardware(job.nproc),
        "size": {"name": job.size.name, "about": job.size.about},
        "data": data_summary(shards),
        "fsrnet_faces": job.fsrnet.name if job.fsrnet else None,
        "minutes": round(stages.total(job.scales) / 60, 1),
        "models": {name: entry for name, (_, entry) in made.items()},
    }
    publish(job, [path for path, _ in made.values()], results)
    shutil.copy2(job.out / STAGES_NAME, job.out / "logs" / STAGES_NAME)
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
