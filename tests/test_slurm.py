"""slurm/train.sbatch and slurm/submit_all.sh on a real one-node SLURM (tests/slurm_cluster.py).

CPU settings: 2 gloo processes per node, a tiny model, shards of real CelebA faces.
"""

from __future__ import annotations

import time
from datetime import datetime

import mlflow
from helpers import PROJECT_ROOT
from slurm_recipe import (
    CPU_SBATCH,
    GAN_STEPS,
    PRETRAIN_STEPS,
    describe,
    job_env,
    submit_all,
)
from trainer_helpers import TINY


def _client(runs):
    return mlflow.tracking.MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")


def _runs(runs):
    client = _client(runs)
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments])


def test_submit_all_runs_pretrain_then_gan_for_both_scales(slurm_recipe):
    recipe = slurm_recipe
    assert set(recipe.jobs) == {f"srgan-x{s}-{p}" for s in (4, 8) for p in ("pretrain", "gan")}
    for name, info in recipe.info.items():
        assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), describe(recipe, name)
    for scale in (4, 8):
        pre, gan = recipe.info[f"srgan-x{scale}-pretrain"], recipe.info[f"srgan-x{scale}-gan"]
        start = datetime.fromisoformat(gan["StartTime"])
        assert start >= datetime.fromisoformat(pre["EndTime"])
        # the GAN job took its generator from the pretrain run's last checkpoint
        last = recipe.runs / f"x{scale}-pretrain" / "checkpoints" / f"step-{PRETRAIN_STEPS:08d}.pt"
        assert f"generator initialised from {last}" in recipe.log(f"srgan-x{scale}-gan")


def test_recipe_jobs_leave_checkpoints_and_finished_mlflow_runs(slurm_recipe):
    runs = slurm_recipe.runs
    for scale in (4, 8):
        for phase, steps in (("pretrain", PRETRAIN_STEPS), ("gan", GAN_STEPS)):
            assert (runs / f"x{scale}-{phase}" / "checkpoints" / f"step-{steps:08d}.pt").is_file()
    found = {r.info.run_name: r for r in _runs(runs)}
    assert sorted(found) == ["x4-gan", "x4-pretrain", "x8-gan", "x8-pretrain"]
    for run in found.values():
        assert run.info.status == "FINISHED"
        assert run.data.params["world_size"] == "2"
        assert "val/sr_psnr_y" in run.data.metrics


def test_failed_pretrain_cancels_its_gan_job(slurm, tmp_path):
    env = job_env(slurm, tmp_path / "no-shards", tmp_path / "runs", SCALES="4")
    jobs = submit_all(slurm, env, tmp_path)
    pre = slurm.wait_job(jobs["srgan-x4-pretrain"], timeout=300)
    gan = slurm.wait_job(jobs["srgan-x4-gan"], timeout=60)
    assert pre["JobState"] == "FAILED"
    assert gan["JobState"] == "CANCELLED"  # --kill-on-invalid-dep: it does not wait forever
    log = (tmp_path / f"srgan-x4-pretrain-{jobs['srgan-x4-pretrain']}.out").read_text()
    assert "pipeline.train: error: " in log and "no-shards" in log


def test_time_limit_signal_checkpoints_requeues_and_resumes_in_one_mlflow_run(
    slurm, shards_faces128, tmp_path
):
    steps, every = 40, 5
    runs = tmp_path / "runs"
    env = job_env(slurm, shards_faces128, runs)
    args = [*TINY, "--steps", str(steps), "--checkpoint-every", str(every), "--log-every", "1",
            "--eval-every", "1000"]  # fmt: skip
    job_id = slurm.run(
        "sbatch", "--parsable", *CPU_SBATCH, f"--output={tmp_path}/%x-%j.out",
        "slurm/train.sbatch", *args, env=env, cwd=PROJECT_ROOT,
    ).strip()  # fmt: skip
    checkpoints = runs / "x4-pretrain" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints / f"step-{every:08d}.pt").exists():
        assert slurm.job(job_id)["JobState"] in ("PENDING", "RUNNING"), slurm.job(job_id)
        assert time.monotonic() < deadline, "no first checkpoint after 300 s"
        time.sleep(0.2)
    # What --signal=B:USR2@300 does near the time limit: USR2 to the batch shell alone.
    slurm.run("scancel", "--signal=USR2", "--batch", job_id)
    info = slurm.wait_job(job_id, timeout=600)
    log = (tmp_path / f"srgan-{job_id}.out").read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), log
    assert "srgan: stopped" in log and f"requeueing job {job_id}" in log
    stopped_at = int(
        log.split("stop signal received: checkpoint written at step ")[1].split(";")[0]
    )
    assert every <= stopped_at < steps
    resumed = f"resumed from {checkpoints / f'step-{stopped_at:08d}.pt'} at step {stopped_at}"
    assert "(restart 1)" in log and resumed in log
    assert (checkpoints / f"step-{steps:08d}.pt").is_file()
    (run,) = _runs(runs)
    assert run.info.status == "FINISHED"
    history = _client(runs).get_metric_history(run.info.run_id, "loss/pixel_mse")
    assert sorted(m.step for m in history) == list(range(1, steps + 1))  # none lost, none twice
