"""slurm/train.sbatch and slurm/submit_all.sh on a real one-node SLURM (tests/slurm_cluster.py).

CPU settings: 2 gloo processes per node, a tiny model, shards of the CelebA sample. The time
limit's USR2 -> checkpoint -> requeue -> resume chain runs on two nodes (test_slurm_nodes.py).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from slurm_recipe import (
    GAN_STEPS,
    PRETRAIN_STEPS,
    describe,
    job_env,
    submit_all,
)
from tracking_helpers import runs_in

pytestmark = pytest.mark.system  # SLURM daemons


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
    found = {r.info.run_name: r for r in runs_in(runs / "mlflow.db")}
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
