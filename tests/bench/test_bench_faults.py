"""bench/faults.py (it prints the recovery times in docs/RELIABILITY.md), so it cannot rot.

Its disk-full scenario runs here (its resumed step is read from the resumed run, issue 21).
SIGKILL and SIGSTOP are left out: one function (`lost_worker`) with two signals, and a minute
of the suite; tests/runtime/test_faults.py kills a worker with -9 and hangs one with SIGSTOP
itself."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import PROJECT_ROOT

pytestmark = pytest.mark.system  # a benchmark run whole


def test_faults_bench_recovers_from_a_full_disk_and_says_how_fast(shards_faces128):
    result = subprocess.run(
        [sys.executable, "bench/faults.py", "--data", str(shards_faces128),
         "--faults", "disk"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SIGKILL" not in result.stdout and "SIGSTOP" not in result.stdout  # as asked
    full = re.search(r"disk full at the checkpoint of step (\d+): every rank exited [\d.]+ s "
                     r"after the disk filled \(exit [1-9]\d*\); resumed at step (\d+)",
                     result.stdout)  # fmt: skip
    assert full, result.stdout
    failed, resumed = map(int, full.groups())
    assert failed % 4 == 0 and resumed == failed - 4, result.stdout  # the checkpoint before
