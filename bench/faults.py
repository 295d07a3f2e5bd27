"""Faults injected into real training runs, with how long each took to recover.

    python bench/faults.py --data SHARDS [--work DIR]

One torchrun job of 2 gloo processes per fault (tiny generator, checkpoints every 4 steps):
- kill -9 of rank 1, and SIGSTOP of rank 1 (a hung rank, `--dist-timeout 10`), under
  `--max-restarts=1`: seconds from the signal to the restarted group's first batch, and the
  steps run twice (from the newest checkpoint to the fault);
- a full disk at a checkpoint (a tmpfs filled after the checkpoint of step 4; root needed):
  seconds from filling it to every rank's exit, then from freeing it to the resumed run's first
  batch, started by hand as a user would.
Times come from the trainer's own log lines (their timestamps) and this script's clock; the
step a run resumed at, from the resumed run's own "resumed from CHECKPOINT at step N" line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--scale", "4", "--phase", "pretrain", "--blocks", "2", "--channels", "8",
        "--batch-size", "4", "--precision", "fp32", "--loader-threads", "1",
        "--checkpoint-every", "4", "--eval-every", "1000", "--log-every", "1"]  # fmt: skip


def torchrun(nproc: int, restarts: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", f"--max-restarts={restarts}", "-m", "pipeline.train",
            *TINY, *args]  # fmt: skip


def logged_step(out: Path) -> int:
    journal = out / "tracking" / "journal.jsonl"
    lines = journal.read_text().splitlines() if journal.exists() else []
    return max((json.loads(line).get("step", 0) for line in lines[-3:] if line), default=0)


def wait_until(condition, process: subprocess.Popen, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 300
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} never happened")
        time.sleep(0.005)


def worker(process: subprocess.Popen, rank: int) -> psutil.Process:
    for child in psutil.Process(process.pid).children(recursive=True):
        if "pipeline.train" in " ".join(child.cmdline()) and child.environ().get("RANK") == str(
            rank
        ):
            return child
    raise RuntimeError(f"no worker of rank {rank}")


def stamps(stderr: str, pattern: str) -> list[float]:
    """Wall-clock times (epoch seconds) of the log lines matching `pattern`."""
    found = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*" + pattern, stderr, re.M)
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp() for s in found]


def lost_worker(data: Path, work: Path, how: signal.Signals) -> str:
    """Rank 1 killed (-9) or stopped (SIGSTOP: alive, silent) after step 9; torchrun restarts
    the group (a stopped rank is found by rank 0's collective timing out after 10 s; torchrun
    then waits 30 s for the stopped process before it kills it)."""
    out = work / f"lost-{how.name}"
    cmd = torchrun(2, 1, "--data", str(data), "--out", str(out), "--steps", "40", "--resume",
                   "auto", "--dist-timeout", "10", "--tracking-uri",
                   f"sqlite:///{work / f'lost-{how.name}.db'}")  # fmt: skip
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    wait_until(lambda: logged_step(out) >= 9, process, "step 9")
    crashed_at = logged_step(out)
    worker(process, 1).send_signal(how)
    hit = time.time()
    _, stderr = process.communicate(timeout=600)
    resumed = re.findall(r"resumed from .* at step (\d+)", stderr)
    first = [t for t in stamps(stderr, "first batch") if t > hit]
    if process.returncode != 0 or not resumed or not first:
        raise RuntimeError(f"{how.name}: no recovery:\n{stderr[-3000:]}")
    error = next((ln.split("error: ", 1)[1] for ln in stderr.splitlines() if "timed out" in ln
                  and "pipeline.train: error" in ln), None)  # fmt: skip
    said = f"; rank 0 said: {error}" if error else ""
    return (f"{how.name} to rank 1 at step {crashed_at}: restarted, resumed at step "
            f"{resumed[0]}, first batch {first[0] - hit:.1f} s after the signal; steps run twice "
            f"{crashed_at - int(resumed[0])}; job exit 0{said}")  # fmt: skip


def disk_full(data: Path, work: Path) -> str:
    disk = work / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    try:
        out, uri = disk / "run", f"sqlite:///{work / 'disk.db'}"
        common = ["--data", str(data), "--out", str(out), "--tracking-uri", uri]
        process = subprocess.Popen(
            torchrun(2, 0, *common, "--steps", "400"),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_until(lambda: logged_step(out) >= 5, process, "step 5")
        filled = time.time()
        try:
            with open(disk / "filler", "wb", buffering=0) as handle:
                while True:
                    handle.write(b"\0" * 2**16)
        except OSError:
            pass
        _, stderr = process.communicate(timeout=300)
        stopped = time.time() - filled
        line = next(ln for ln in stderr.splitlines() if "disk full" in ln)
        step = int(re.search(r"checkpoint of step (\d+)", line)[1])  # type: ignore[index]
        (disk / "filler").unlink()
        freed = time.time()
        resume = torchrun(2, 0, *common, "--steps", str(step + 4), "--resume", "auto")
        result = subprocess.run(resume, cwd=ROOT, capture_output=True, text=True)
        first = stamps(result.stderr, "first batch")
        resumed = re.findall(r"resumed from .* at step (\d+)", result.stderr)
        if result.returncode != 0 or not first or not resumed:
            raise RuntimeError(f"disk full: resume failed:\n{result.stderr[-3000:]}")
        return (f"disk full at the checkpoint of step {step}: every rank exited {stopped:.1f} s "
                f"after the disk filled (exit {process.returncode}); resumed at step "
                f"{resumed[0]}, first batch {first[0] - freed:.1f} s after space was "
                "freed")  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--work", type=Path)
    p.add_argument("--faults", default="sigkill,sigstop,disk",
                   help="which of sigkill, sigstop, disk to inject [all]")  # fmt: skip
    args = p.parse_args()
    scenarios = {
        "sigkill": lambda work: lost_worker(args.data, work, signal.SIGKILL),
        "sigstop": lambda work: lost_worker(args.data, work, signal.SIGSTOP),
        "disk": lambda work: disk_full(args.data, work),
    }
    chosen = args.faults.split(",")
    if unknown := set(chosen) - set(scenarios):
        p.error(f"unknown fault(s) {', '.join(sorted(unknown))}: choose from "
                f"{', '.join(scenarios)}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"{os.cpu_count()} cores, 2 gloo processes, checkpoints every 4 steps")
        for name in chosen:
            print(scenarios[name](work), flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
