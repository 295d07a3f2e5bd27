"""bench/scale.py run whole at a tiny fraction of CelebA's size, so it cannot rot unnoticed."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import PROJECT_ROOT

pytestmark = pytest.mark.system  # a benchmark run whole


def test_scale_bench_prints_every_row(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/scale.py", "--fraction", "0.001", "--work", str(tmp_path),
         "--pool", "20", "--train-steps", "5", "--batch-size", "4", "--blocks", "1",
         "--channels", "8", "--metric-images", "1", "--metric-repeats", "1",
         "--pairs", "1"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "163 / 20 / 20 faces" in out  # 0.1% of 162,770 / 19,867 / 19,962
    for nproc in (1, 2):
        assert re.search(rf"first training batch, {nproc} process\(es\) +[\d.]+ s after", out)
    assert re.search(r"val evaluation, 1 process\(es\), bicubic computed .*\[20\]", out)
    assert re.search(r"val evaluation, 2 process\(es\), bicubic cached .*\[10, 10\]", out)
    assert len(re.findall(r"tracking on / off \(pair \d\) +[\d.]+ / [\d.]+ img/s", out)) == 1
    for hr in (128, 256):
        check_estimate_from_measured_costs(out, hr)
    formula = (
        r"ESTIMATE rows +before = 19,867 x \(SR \+ bicubic ms\), after = 19,867 x SR ms / ranks"
    )
    assert re.search(formula, out), out


def check_estimate_from_measured_costs(out: str, hr: int) -> None:
    """The ESTIMATE row recomputed from the measured row's printed costs: 19,867 val images x
    (SR + bicubic) ms on rank 0 before, x SR ms / W ranks after. Tolerances are the printed
    rounding only (ms to 0.01, minutes to 0.1, seconds to 1)."""
    sr, bicubic = map(float, re.search(
        rf"HR {hr}, one thread \(measured\) +SR scores ([\d.]+) ms, bicubic \+ scores ([\d.]+) ms",
        out,
    ).groups())  # type: ignore[union-attr]  # fmt: skip
    before, after_1, after_8, after_64 = map(float, re.search(
        rf"HR {hr}, ESTIMATE: before -> after \(1 / 8 / 64 ranks\) +([\d.]+) min -> ([\d.]+) min "
        r"/ (\d+) s / (\d+) s", out,
    ).groups())  # type: ignore[union-attr]  # fmt: skip
    ms_rounding = 19_867 * 0.01 / 1e3  # seconds, per ms value rounded to 0.01
    assert abs(before * 60 - 19_867 * (sr + bicubic) / 1e3) <= 3 + 2 * ms_rounding
    assert abs(after_1 * 60 - 19_867 * sr / 1e3) <= 3 + ms_rounding
    assert abs(after_8 - 19_867 * sr / 8 / 1e3) <= 0.5 + ms_rounding / 8
    assert abs(after_64 - 19_867 * sr / 64 / 1e3) <= 0.5 + ms_rounding / 64
