"""bench/trainer.py (the real trainer against the bare step: bench/gpu_check.sh's trainer parts)
run whole at a tiny size, so every flag the GPU run passes is parsed and its sums hold."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import PROJECT_ROOT

pytestmark = pytest.mark.system  # a benchmark run whole


def test_trainer_bench_prints_img_s_mfu_and_the_ratio_to_the_bare_step(shards_faces128):
    result = subprocess.run(
        [sys.executable, "bench/trainer.py", "--data", str(shards_faces128), "--phase", "pretrain",
         "--batch-size", "2", "--blocks", "1", "--channels", "8", "--d-channels", "4",
         "--steps", "12", "--nproc", "1", "--compile", "on", "--loader-threads", "1",
         "--compile-backend", "aot_eager", "--skip-loader", "--peak-seconds", "0.2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    flops = float(re.search(r"([\d.]+) GFLOP per image per step", out)[1]) * 1e9
    peak = float(re.search(r"peak ([\d.]+) TFLOP/s", out)[1]) * 1e12
    row = r"^(bare loop, 1 process|trainer, 1 process\(es\)) +([\d.]+) img/s"
    rows = dict(re.findall(row, out, re.M))
    assert set(rows) == {"bare loop, 1 process", "trainer, 1 process(es)"}, out
    bare, trainer = float(rows["bare loop, 1 process"]), float(rows["trainer, 1 process(es)"])
    mfus = [float(m) / 100 for m in re.findall(r"MFU +([\d.]+)%", out)]
    assert len(mfus) == 2 and all(0 < m <= 1 for m in mfus), out
    assert mfus[0] == pytest.approx(bare * flops / peak, abs=0.001 + 0.01 * mfus[0])
    ratio = float(re.search(r"trainer / bare loop \(1 process\): ([\d.]+)", out)[1])
    assert ratio == pytest.approx(trainer / bare, rel=0.01)
    assert "loader alone" not in out  # --skip-loader
