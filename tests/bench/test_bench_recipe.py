"""bench/recipe.py on a tiny budget: both recipes train, are evaluated and are compared."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest
from helpers import PROJECT_ROOT

pytestmark = pytest.mark.system  # a benchmark run whole


def test_recipe_bench_prints_each_recipes_gain_at_each_evaluation(shards_faces128, tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/recipe.py", "--data", str(shards_faces128), "--steps", "6",
         "--eval-every", "3", "--blocks", "1", "--channels", "8", "--batch-size", "4",
         "--extra", "--loader-threads 1", "--recipe", "raw=--ema-decay 0.9 --eval-weights raw",
         "--work", str(tmp_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| step | old | new | raw |" in out, out
    names = ("old", "new", "raw")
    table = {}
    for step in (3, 6):
        row = re.search(rf"^\| {step} \| ([+-]\d+\.\d\d) \| ([+-]\d+\.\d\d) \| ([+-]\d+\.\d\d) \|$",
                        out, re.MULTILINE)  # fmt: skip
        assert row, out
        table[step] = dict(zip(names, map(float, row.groups()), strict=True))
    for name in names:
        # each cell against what the run's MLflow store holds (SQL, not the bench's journal)
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            logged = {key: dict(db.execute("SELECT step, value FROM metrics WHERE key = ?", (key,)))
                      for key in ("val/sr_psnr_y", "val/bicubic_psnr_y")}  # fmt: skip
        for step in (3, 6):
            gain = logged["val/sr_psnr_y"][step] - logged["val/bicubic_psnr_y"][step]
            assert abs(table[step][name] - gain) <= 0.005 + 1e-9, (name, step, gain, out)
        # the summary recomputed from the table: last row, best row, fall below the earlier
        # best (to 0.01: the bench takes it from the unrounded gains)
        gains = [table[3][name], table[6][name]]
        summary = re.search(rf"^{name}: final ([+-]\d+\.\d\d) dB, best ([+-]\d+\.\d\d) dB, "
                            r"worst fall below an earlier best (\d+\.\d\d) dB$",
                            out, re.MULTILINE)  # fmt: skip
        assert summary, out
        final, best, fall = map(float, summary.groups())
        assert (final, best) == (gains[1], max(gains)), (name, summary[0], gains)
        assert abs(fall - max(0.0, gains[0] - gains[1])) <= 0.01 + 1e-9, (name, summary[0], gains)
    assert "recipe new: 2 evaluations" in out
