"""Releases: trained generators as files anyone can use, with their scores and card.

    launch/release.sh CELEBA_ROOT [--size gpu|cpu|smoke] [--fsrnet DIR] [--release DIR]
    python -m pipeline.release build|table|check ...

`sizes` says how big a run is, `build` runs the stages (shard, train, keep, score) and writes
the release folder, `card` renders the model card and docs/RESULTS.md's rows from results.json.
"""

from pipeline.release.build import ReleaseError, ReleaseJob, check_release, run_release
from pipeline.release.card import render_card, results_block
from pipeline.release.sizes import SIZES, ReleaseSize

__all__ = [
    "SIZES",
    "ReleaseError",
    "ReleaseJob",
    "ReleaseSize",
    "check_release",
    "render_card",
    "results_block",
    "run_release",
]
