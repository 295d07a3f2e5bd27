"""Two real processes under torchrun (gloo): disjoint samples that cover the split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PROJECT_ROOT

pytestmark = pytest.mark.integration  # two processes under torchrun


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_two_ranks_see_disjoint_samples_that_cover_the_split(shards_faces128, tmp_path, backend):
    out = tmp_path / "ranks"
    out.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "tests/dist/loader_ranks.py",
            str(shards_faces128),
            str(out),
            backend,
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    # 40 training samples, 20 per rank, 5 batches of 4 on each rank, in both epochs.
    assert [r["batches"] for r in ranks] == [5, 5]
    assert ranks[0]["samples_per_rank"] == ranks[1]["samples_per_rank"] == [40, 40]
    manifest = json.loads((Path(shards_faces128) / "manifest.json").read_text())
    assert manifest["splits"]["train"]["samples"] == 40
    for number in range(2):
        a, b = (set(r["epochs"][number]) for r in ranks)
        assert len(a) == len(b) == 20
        assert not a & b
        assert len(a | b) == 40
    # Each rank reads the other half in the second epoch, in a new order.
    assert set(ranks[0]["epochs"][1]) == set(ranks[1]["epochs"][0])
