"""bench/recipe.py on a tiny budget: both recipes train, are evaluated and are compared."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import PROJECT_ROOT


def test_recipe_bench_prints_each_recipes_gain_at_each_evaluation(shards_faces128):
    result = subprocess.run(
        [sys.executable, "bench/recipe.py", "--data", str(shards_faces128), "--steps", "6",
         "--eval-every", "3", "--blocks", "1", "--channels", "8", "--batch-size", "4",
         "--extra", "--loader-threads 1", "--recipe", "raw=--ema-decay 0.9 --eval-weights raw"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| step | old | new | raw |" in out, out
    for step in (3, 6):
        assert re.search(rf"^\| {step} \| [+-]\d+\.\d\d \| [+-]\d+\.\d\d \| [+-]\d+\.\d\d \|$", out,
                         re.MULTILINE), out  # fmt: skip
    for name in ("old", "new", "raw"):
        summary = (rf"^{name}: final [+-]\d+\.\d\d dB, best [+-]\d+\.\d\d dB, worst fall "
                   r"below an earlier best \d+\.\d\d dB$")  # fmt: skip
        assert re.search(summary, out, re.MULTILINE), out
    assert "recipe new: 2 evaluations" in out
