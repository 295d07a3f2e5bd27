"""Submitting the project's sbatch scripts to the test cluster with CPU settings."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from helpers import PROJECT_ROOT
from slurm_cluster import LocalSlurm
from trainer_helpers import TINY

# What a GPU cluster sets in train.sbatch, replaced for a 2-core node without GPUs.
CPU_SBATCH = ["--gpus-per-node=0", "--time=15"]
PRETRAIN_STEPS, GAN_STEPS = 4, 2


@dataclass
class Recipe:
    runs: Path
    logs: Path
    jobs: dict[str, str]  # job name -> id
    info: dict[str, dict[str, str]]  # job name -> scontrol show job, once ended

    def log(self, name: str) -> str:
        return (self.logs / f"{name}-{self.jobs[name]}.out").read_text()


def job_env(cluster: LocalSlurm, shards: Path, runs: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in cluster.env.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "DATA": str(shards), "RUNS": str(runs), "NPROC_PER_NODE": "2", **extra}


def submit_all(cluster: LocalSlurm, env: dict[str, str], logs: Path) -> dict[str, str]:
    result = subprocess.run(
        ["bash", "slurm/submit_all.sh", *CPU_SBATCH, f"--output={logs}/%x-%j.out"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}


def submit_train(
    cluster: LocalSlurm, env: dict[str, str], logs: Path, *args: str, nodes: int = 1
) -> str:
    """`sbatch -N nodes slurm/train.sbatch ARGS` as a user submits it; the job id."""
    return cluster.run(
        "sbatch", "--parsable", f"--nodes={nodes}", *CPU_SBATCH, f"--output={logs}/%x-%j.out",
        "slurm/train.sbatch", *args, env=env, cwd=PROJECT_ROOT,
    ).strip()  # fmt: skip


def run_recipe(cluster: LocalSlurm, shards: Path, folder: Path) -> Recipe:
    runs, logs = folder / "runs", folder / "logs"
    logs.mkdir(parents=True)
    env = job_env(
        cluster, shards, runs,
        TRAIN_ARGS=" ".join([*TINY, "--log-every", "1"]),
        PRETRAIN_ARGS=f"--steps {PRETRAIN_STEPS} --eval-every 2 --checkpoint-every 2",
        GAN_ARGS=f"--steps {GAN_STEPS} --eval-every 2 --checkpoint-every 2",
    )  # fmt: skip
    jobs = submit_all(cluster, env, logs)
    info = {name: cluster.wait_job(job_id, timeout=600) for name, job_id in jobs.items()}
    return Recipe(runs, logs, jobs, info)


def describe(recipe: Recipe, name: str) -> str:
    """The job's state and the end of its log, for assertion messages."""
    path = recipe.logs / f"{name}-{recipe.jobs[name]}.out"
    tail = "\n".join(path.read_text().splitlines()[-30:]) if path.is_file() else "(no log)"
    return (
        f"{name}: {recipe.info[name].get('JobState')} {recipe.info[name].get('ExitCode')}\n{tail}"
    )
