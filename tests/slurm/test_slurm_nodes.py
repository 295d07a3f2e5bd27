"""slurm/train.sbatch on two SLURM nodes that are separate hosts to the network (a network
namespace each, tests/slurm_cluster.py): world 4 across them, the time limit's requeue chain,
and a node lost in the middle of a job. CPU settings: 2 gloo processes per node, a tiny model,
shards of the CelebA sample."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from slurm_cluster import NamespacedSlurm
from slurm_recipe import job_env, submit_train
from tracking_helpers import last_logged_step, runs_in, steps_logged
from trainer_helpers import TINY, generator_in, run_train

pytestmark = pytest.mark.system  # SLURM daemons on two emulated nodes

ARGS = [*TINY, "--scale", "4", "--phase", "pretrain", "--log-every", "1", "--eval-every", "1000",
        "--deterministic", "--seed", "3"]  # fmt: skip


def _log(folder: Path, job_id: str) -> str:
    path = folder / f"srgan-{job_id}.out"
    return path.read_text() if path.is_file() else "(no log)"


def _wait_for(cluster: NamespacedSlurm, job_id: str, done, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not done():
        assert cluster.job(job_id)["JobState"] in ("PENDING", "RUNNING"), cluster.job(job_id)
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _submit(cluster: NamespacedSlurm, shards: Path, folder: Path, steps: int, every: int):
    """A 2-node train.sbatch job checkpointing every `every` steps: its id and run folder."""
    runs = folder / "runs"
    args = [*ARGS, "--steps", str(steps), "--checkpoint-every", str(every)]
    job_id = submit_train(cluster, job_env(cluster, shards, runs), folder, *args, nodes=2)
    return job_id, runs


def test_two_nodes_with_two_processes_each_train_like_one_node_with_four(
    slurm_nodes, shards_faces128, tmp_path
):
    steps = 6
    args = [*ARGS, "--steps", str(steps), "--checkpoint-every", str(steps)]
    runs = tmp_path / "runs"
    env = job_env(slurm_nodes, shards_faces128, runs)
    job_id = submit_train(slurm_nodes, env, tmp_path, *args, nodes=2)
    info = slurm_nodes.wait_job(job_id, timeout=300)
    log = _log(tmp_path, job_id)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert (info["NumNodes"], info["NodeList"]) == ("2", "node[1-2]")
    assert "on 2 node(s) [node[1-2]], 2 processes each" in log
    (run,) = runs_in(runs / "mlflow.db")
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "4"

    # the same global batch on one node: what train.sbatch runs, by hand, with 4 processes
    one_node = tmp_path / "one-node"
    run_train(shards_faces128, one_node, tmp_path / "one-node.db", "--config", "configs/x4.toml",
              *args, torchrun=4)  # fmt: skip
    name = f"checkpoints/step-{steps:08d}.pt"
    two, one = generator_in(runs / "x4-pretrain" / name), generator_in(one_node / name)
    for key, value in one.items():
        assert torch.equal(value, two[key]), key


def test_time_limit_signal_on_two_nodes_checkpoints_requeues_and_resumes_in_one_mlflow_run(
    slurm_nodes, shards_faces128, tmp_path
):
    steps, every = 40, 5
    job_id, runs = _submit(slurm_nodes, shards_faces128, tmp_path, steps, every)
    checkpoints = runs / "x4-pretrain" / "checkpoints"
    first = checkpoints / f"step-{every:08d}.pt"
    _wait_for(slurm_nodes, job_id, first.exists, first.name)
    # What --signal=B:USR2@300 does near the time limit: USR2 to the batch shell alone, which
    # passes it to srun, srun to both nodes' torchrun, torchrun to the workers.
    slurm_nodes.run("scancel", "--signal=USR2", "--batch", job_id)
    slurm_nodes.start_requeued_now(job_id)
    info = slurm_nodes.wait_job(job_id, timeout=600)
    log = _log(tmp_path, job_id)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), log
    assert info["NumNodes"] == "2"
    assert "srgan: stopped" in log and f"requeueing job {job_id}" in log
    stopped_at = int(
        log.split("stop signal received: checkpoint written at step ")[1].split(";")[0]
    )
    assert every <= stopped_at < steps
    resumed = f"resumed from {checkpoints / f'step-{stopped_at:08d}.pt'} at step {stopped_at}"
    assert "(restart 1)" in log and resumed in log
    assert (checkpoints / f"step-{steps:08d}.pt").is_file()
    (run,) = runs_in(runs / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "4"
    # none lost, none twice
    assert steps_logged(runs / "mlflow.db", run.info.run_id) == list(range(1, steps + 1))


def test_a_node_lost_mid_job_ends_it_and_the_requeued_job_resumes(
    slurm_nodes, shards_faces128, tmp_path
):
    # killed 2 steps past the first checkpoint (step 8) and 6 before the next: a kill delayed
    # by a loaded machine must still fall between them for `last_logged > newest` below
    steps, every = 20, 8
    job_id, runs = _submit(slurm_nodes, shards_faces128, tmp_path, steps, every)
    checkpoints = runs / "x4-pretrain" / "checkpoints"
    run = runs / "x4-pretrain"
    _wait_for(slurm_nodes, job_id, lambda: last_logged_step(run) >= every + 2, "step 10")

    last_logged = last_logged_step(run)
    lost_at = time.monotonic()
    killed = slurm_nodes.kill_node("node2")  # slurmd, slurmstepd, torchrun and its 2 workers
    assert len(killed) >= 5, killed
    ended = slurm_nodes.wait_job(
        job_id, timeout=180, states=("PENDING", "REQUEUED", "NODE_FAIL", "FAILED", "COMPLETED")
    )
    ended_after = time.monotonic() - lost_at
    newest = max(int(p.stem.split("-")[1]) for p in checkpoints.glob("step-*.pt"))

    slurm_nodes.start_node("node2")  # the machine back (or replaced)
    back_at = time.monotonic()
    slurm_nodes.start_requeued_now(job_id)
    resumed = f"resumed from {checkpoints / f'step-{newest:08d}.pt'} at step {newest}"
    deadline = back_at + 300
    while resumed not in _log(tmp_path, job_id):
        assert time.monotonic() < deadline, _log(tmp_path, job_id)
        time.sleep(0.2)
    print(
        f"\nnode lost at step {last_logged}: job {ended['JobState']} {ended_after:.1f} s later; "
        f"node back: resumed at step {newest} {time.monotonic() - back_at:.1f} s later; "
        f"steps run twice {last_logged - newest}"
    )
    info = slurm_nodes.wait_job(job_id, timeout=600)
    log = _log(tmp_path, job_id)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert int(info["Restarts"]) >= 1, info
    assert ended_after < 120  # ended by SLURM (SlurmdTimeout 10 s here), not by a hang
    assert last_logged > newest  # steps past the checkpoint were lost and trained again
    assert "[rank 0] pipeline.train: error: " in log
    assert "lost contact with another rank (" in log
    assert (checkpoints / f"step-{steps:08d}.pt").is_file()
    (run,) = runs_in(runs / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert steps_logged(runs / "mlflow.db", run.info.run_id) == list(range(1, steps + 1))
