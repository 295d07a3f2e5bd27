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
    # one recipe added by flags, "big": twice the batch in half the steps, so its evaluation
    # lines up with the others' second one (24 images seen) and is blank at their first
    result = subprocess.run(
        [sys.executable, "bench/recipe.py", "--data", str(shards_faces128), "--steps", "6",
         "--eval-every", "3", "--blocks", "1", "--channels", "8", "--batch-size", "4",
         "--extra", "--loader-threads 1", "--recipe", "big=--ema-decay 0.9 --eval-weights raw "
         "--batch-size 8 --steps 3 --lr-scaling sqrt --lr-reference-batch 4",
         "--work", str(tmp_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| images seen | old | new | big |" in out, out
    names, cell = ("old", "new", "big"), r"([+-]\d+\.\d\d|)"
    batch = {"old": 4, "new": 4, "big": 8}
    table = {}
    for seen in (12, 24):
        row = re.search(rf"^\| {seen} \| {cell} \| {cell} \| {cell} \|$", out,
                        re.MULTILINE)  # fmt: skip
        assert row, out
        table[seen] = {n: float(v) for n, v in zip(names, row.groups(), strict=True) if v}
    assert "big" not in table[12] and len(table[12]) == 2 and len(table[24]) == 3, out
    for name in names:
        # each cell against what the run's MLflow store holds (SQL, not the bench's journal)
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            logged = {key: dict(db.execute("SELECT step, value FROM metrics WHERE key = ?", (key,)))
                      for key in ("val/sr_psnr_y", "val/bicubic_psnr_y")}  # fmt: skip
        assert sorted(logged["val/sr_psnr_y"]) == [s for s in (3, 6) if s * batch[name] <= 24]
        gains = []
        for step in logged["val/sr_psnr_y"]:
            gain = logged["val/sr_psnr_y"][step] - logged["val/bicubic_psnr_y"][step]
            assert abs(table[step * batch[name]][name] - gain) <= 0.005 + 1e-9, (name, step, out)
            gains.append(table[step * batch[name]][name])
        # the summary recomputed from the table: last row, best row, fall below the earlier
        # best (to 0.01: the bench takes it from the unrounded gains)
        summary = re.search(rf"^{name}: final ([+-]\d+\.\d\d) dB at 24 images, best "
                            r"([+-]\d+\.\d\d) dB, worst fall below an earlier best (\d+\.\d\d) dB$",
                            out, re.MULTILINE)  # fmt: skip
        assert summary, out
        final, best, fall = map(float, summary.groups())
        assert (final, best) == (gains[-1], max(gains)), (name, summary[0], gains)
        fell = max(0.0, gains[0] - gains[-1])
        assert abs(fall - fell) <= 0.01 + 1e-9, (name, summary[0], gains)
    assert (
        "recipe new: batch 4, 2 evaluations" in out and "recipe big: batch 8, 1 evaluations" in out
    )
