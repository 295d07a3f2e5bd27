"""Faults a week-long run meets, injected for real: a worker killed with -9, a full disk, an
MLflow server stopped mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from helpers import PROJECT_ROOT, free_port
from mlflow_server import MlflowServer
from tracking_helpers import client, last_logged_step, runs_in, steps_logged
from trainer_helpers import generator_in, run_train, train_cmd

pytestmark = pytest.mark.integration  # faults injected into multi-process runs

STEPS = 40
ARGS = ["--scale", "4", "--phase", "pretrain", "--steps", str(STEPS), "--checkpoint-every", "4",
        "--eval-every", "1000", "--log-every", "1", "--deterministic", "--seed", "5"]  # fmt: skip


def _worker(launcher: subprocess.Popen, rank: int, timeout: float = 120) -> psutil.Process:
    """The torchrun worker process of `rank`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if "pipeline.train" in " ".join(child.cmdline()) and \
                        child.environ().get("RANK") == str(rank):  # fmt: skip
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank}")


def _wait_for_logged_step(out: Path, step: int, process: subprocess.Popen) -> None:
    """Until rank 0 has journaled `step`'s metrics: with checkpoints every 4 steps, killing a
    worker right after step 9 leaves steps past the newest checkpoint (8) logged."""
    journal = out / "tracking" / "journal.jsonl"
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, f"step {step} never logged"
        if journal.exists() and last_logged_step(out) >= step:
            return
        time.sleep(0.005)


def _kill_rank_1_after_step_9(cmd: list[str], out: Path) -> tuple[int, str]:
    """Run the job, kill -9 its rank 1 right after rank 0 logged step 9 (the newest checkpoint
    is then 8), and wait for the job's end: its exit code and stderr."""
    launcher = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    victim = _worker(launcher, rank=1)
    _wait_for_logged_step(out, 9, launcher)
    os.kill(victim.pid, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=600)
    return launcher.returncode, stderr


def _generator(out: Path) -> dict[str, torch.Tensor]:
    return generator_in(out / "checkpoints" / f"step-{STEPS:08d}.pt")


def test_a_worker_killed_with_9_is_restarted_and_the_run_ends_as_if_uninterrupted(
    shards_faces128, tmp_path
):
    run_train(shards_faces128, tmp_path / "whole", tmp_path / "whole.db", *ARGS, torchrun=2)

    out, db = tmp_path / "killed", tmp_path / "killed.db"
    cmd = train_cmd(shards_faces128, out, db, *ARGS, "--resume", "auto", torchrun=2, restarts=1)
    returncode, stderr = _kill_rank_1_after_step_9(cmd, out)
    assert returncode == 0, stderr[-4000:]
    assert "resumed from" in stderr  # the restarted group went on from a checkpoint
    assert "already in MLflow" not in stderr  # no step past the checkpoint was sent
    # the survivor said in one line what happened, instead of a traceback
    assert "[rank 0] pipeline.train: error: " in stderr
    assert "lost contact with another rank (" in stderr

    whole, resumed = _generator(tmp_path / "whole"), _generator(out)
    for name, value in whole.items():
        assert torch.equal(value, resumed[name]), name
    (run,) = runs_in(db)  # the same MLflow run, continued
    assert run.info.status == "FINISHED"
    assert steps_logged(db, run.info.run_id) == list(range(1, STEPS + 1))  # each step once
    assert "val/sr_psnr_y" in run.data.metrics


def test_a_crash_marks_the_run_failed_and_keeps_what_was_not_checkpointed(
    shards_faces128, tmp_path
):
    out, db = tmp_path / "run", tmp_path / "mlflow.db"
    cmd = train_cmd(shards_faces128, out, db, *ARGS, torchrun=2, restarts=0)
    returncode, stderr = _kill_rank_1_after_step_9(cmd, out)
    assert returncode != 0  # no restarts: the job fails
    (run,) = runs_in(db)
    assert run.info.status == "FAILED", stderr[-3000:]  # not FINISHED by MLflow's exit hook
    newest = max(int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("step-*.pt"))
    assert steps_logged(db, run.info.run_id) == list(range(1, newest + 1))
    # steps logged after the newest checkpoint: kept for a look, never sent
    aside = (out / "tracking" / "uncheckpointed.jsonl").read_text().splitlines()
    steps = {json.loads(line)["step"] for line in aside}
    assert steps and min(steps) == newest + 1, (steps, newest)


def test_a_hung_rank_times_out_with_its_name_and_the_restarted_job_finishes(
    shards_faces128, tmp_path
):
    out, db = tmp_path / "run", tmp_path / "mlflow.db"
    # A spare restart, and the victim looked up after step 9: on a loaded machine a short
    # timeout can also fire at start-up, and the worker found before it would be a dead one.
    # 20 s, not 10: with a second test beside it on 2 cores (launch/test.sh), this test once
    # ended without the line below (the job restarted once, from step 8); the likely cause, a
    # rank made to wait 10 s by the load alone before the SIGSTOP, is rarer at 20 s.
    cmd = train_cmd(shards_faces128, out, db, *ARGS, "--resume", "auto", "--dist-timeout", "20",
                    torchrun=2, restarts=2)  # fmt: skip
    launcher = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for_logged_step(out, 9, launcher)
    victim = _worker(launcher, rank=1)
    os.kill(victim.pid, signal.SIGSTOP)  # alive but silent: no error reaches rank 0
    started = time.monotonic()
    _, stderr = launcher.communicate(timeout=600)
    (tmp_path / "train.err").write_text(stderr)  # for a look after the test
    assert launcher.returncode == 0, stderr[-4000:]
    # the hung rank's timeout, past step 9; a load-made one at a start-up may come beside it
    errors = re.findall(r"\[rank 0\] pipeline.train: error: (.+) at step (\d+) timed out after "
                        r"20 s waiting for the other ranks; (.+)", stderr)  # fmt: skip
    assert errors, "\n".join(line for line in stderr.splitlines() if "error" in line)[-4000:]
    assert any(int(step) >= 9 and why.startswith("rank(s) 1 did not answer a barrier")
               for _, step, why in errors), errors  # fmt: skip
    assert "resumed from" in stderr and time.monotonic() - started < 300
    assert "already in MLflow" not in stderr
    (run,) = runs_in(db)
    assert run.info.status == "FINISHED"
    assert steps_logged(db, run.info.run_id) == list(range(1, STEPS + 1))


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs (root: mount)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    try:
        with open(filler, "wb", buffering=0) as handle:
            while True:
                handle.write(b"\0" * 2**16)
    except OSError:  # no space left: the point
        pass
    return filler


def test_a_full_disk_at_a_checkpoint_stops_every_rank_cleanly_and_resume_continues(
    shards_faces128, tmp_path, small_disk
):
    out, db = small_disk / "run", tmp_path / "mlflow.db"
    args = [*ARGS[:5], "400", *ARGS[6:]]  # --steps 400: the disk fills long before the end
    launcher = subprocess.Popen(
        train_cmd(shards_faces128, out, db, *args, torchrun=2),
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_logged_step(out, 5, launcher)  # the checkpoint of step 4 is on disk
    filler = _fill(small_disk)
    _, stderr = launcher.communicate(timeout=300)  # every rank stops: no hang
    assert launcher.returncode != 0
    kept = sorted((out / "checkpoints").glob("step-*.pt"))
    failed_at = int(kept[-1].stem.split("-")[1]) + 4
    error = (f"{out / 'checkpoints' / f'step-{failed_at:08d}.pt'}: disk full writing the "
             f"checkpoint of step {failed_at}")  # fmt: skip
    assert f"[rank 0] pipeline.train: error: {error}" in stderr, stderr[-3000:]
    assert not list((out / "checkpoints").glob("*.tmp"))  # nothing half-written left
    torch.load(kept[-1], weights_only=True)  # the previous checkpoint loads
    (run,) = runs_in(db)
    assert run.info.status == "FAILED"

    filler.unlink()  # room again: the run goes on from where it stopped
    resumed = failed_at + 4
    result = run_train(shards_faces128, out, db, *ARGS[:5], str(resumed), *ARGS[6:],
                       "--resume", "auto")  # fmt: skip
    assert f"{kept[-1]} at step {failed_at - 4}" in result.stderr
    (run,) = runs_in(db)
    assert run.info.status == "FINISHED"
    assert steps_logged(db, run.info.run_id) == list(range(1, resumed + 1))


def test_an_mlflow_server_stopped_for_10_s_mid_run_ends_up_with_everything(
    shards_faces128, tmp_path
):
    server = MlflowServer(tmp_path / "server.db", free_port(), tmp_path / "server.log",
                          artifacts=tmp_path / "artifacts")  # fmt: skip
    server.start()
    try:
        out, steps = tmp_path / "run", 120
        args = ["--scale", "4", "--phase", "pretrain", "--steps", str(steps),
                "--checkpoint-every", "10", "--eval-every", "60",
                "--log-every", "5"]  # fmt: skip
        launcher = subprocess.Popen(
            train_cmd(shards_faces128, out, server.url, *args),
            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_for_logged_step(out, 30, launcher)
        server.stop()
        down_at, stopped = last_logged_step(out), time.monotonic()
        # down for 10 s and 10 steps at least, however slowly a loaded machine trains: it
        # trains on meanwhile
        while time.monotonic() - stopped < 10 or last_logged_step(out) <= down_at + 10:
            assert launcher.poll() is None, launcher.stderr.read()[-3000:]
            assert time.monotonic() - stopped < 300, "no 10 steps trained in 300 s"
            time.sleep(0.1)
        server.start()
        _, stderr = launcher.communicate(timeout=600)
        (tmp_path / "train.err").write_text(stderr)  # for a look after the test
        assert launcher.returncode == 0, stderr[-3000:]
    finally:
        server.stop()
    (run,) = runs_in(server.store)  # what the server holds
    evals = steps_logged(server.store, run.info.run_id, "val/sr_psnr_y")
    models = client(server.store).search_logged_models(experiment_ids=[run.info.experiment_id])
    assert run.info.status == "FINISHED"
    # every logged step, once
    assert steps_logged(server.store, run.info.run_id) == list(range(5, steps + 1, 5))
    assert evals == [60, steps]  # the final evaluation too
    # logged by the run, or by its sender when the just-restarted server timed the run out
    assert [m.name for m in models] == ["generator"], stderr[-3000:]
    # each outage said once (not at every retry), and its end too
    outages = [line for line in stderr.splitlines() if "unreachable" in line]
    recoveries = [line for line in stderr.splitlines() if "is back after" in line]
    assert 1 <= len(outages) == len(recoveries) <= 2, stderr[-3000:]
