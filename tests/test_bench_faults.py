"""bench/faults.py (it prints the recovery times in docs/RELIABILITY.md), so it cannot rot.

Its SIGSTOP scenario is left out here: the same function as SIGKILL with another signal, and a
minute of the suite; tests/test_faults.py's hung-rank test injects SIGSTOP itself."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import PROJECT_ROOT


def test_faults_bench_recovers_from_each_fault_and_says_how_fast(shards_faces128):
    result = subprocess.run(
        [sys.executable, "bench/faults.py", "--data", str(shards_faces128),
         "--faults", "sigkill,disk"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    killed = re.search(r"SIGKILL to rank 1 at step (\d+): restarted, resumed at step (\d+), "
                       r"first batch [\d.]+ s after the signal; steps run twice (\d+); job exit 0",
                       result.stdout)  # fmt: skip
    assert killed, result.stdout
    crashed, resumed, twice = map(int, killed.groups())
    # resumed from a checkpoint (every 4 steps) at or before the kill (after step 9), and the
    # steps run twice are the difference
    assert resumed % 4 == 0 and 4 <= resumed <= crashed and crashed >= 9, result.stdout
    assert twice == crashed - resumed, result.stdout
    assert "SIGSTOP" not in result.stdout  # only what was asked for
    full = re.search(r"disk full at the checkpoint of step (\d+): every rank exited [\d.]+ s "
                     r"after the disk filled \(exit [1-9]\d*\); resumed at step (\d+)",
                     result.stdout)  # fmt: skip
    assert full, result.stdout
    failed, resumed = map(int, full.groups())
    assert failed % 4 == 0 and resumed == failed - 4, result.stdout  # the checkpoint before
