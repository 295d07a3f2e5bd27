"""bench/scale.py run whole at a tiny fraction of CelebA's size, so it cannot rot unnoticed."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import PROJECT_ROOT


def test_scale_bench_prints_every_row(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/scale.py", "--fraction", "0.001", "--work", str(tmp_path),
         "--pool", "20", "--train-steps", "5", "--batch-size", "4", "--blocks", "1",
         "--channels", "8"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "163 / 20 / 20 faces" in out  # 0.1% of 162,770 / 19,867 / 19,962
    for nproc in (1, 2):
        assert re.search(rf"first training batch, {nproc} process\(es\) +[\d.]+ s after", out)
    assert re.search(r"val evaluation, 1 process\(es\), bicubic computed .*\[20\]", out)
    assert re.search(r"val evaluation, 2 process\(es\), bicubic cached .*\[10, 10\]", out)
    assert len(re.findall(r"tracking on / off \(pair \d\) +[\d.]+ / [\d.]+ img/s", out)) == 2
    assert re.search(r"CelebA val metrics at HR 256: before -> after", out)
