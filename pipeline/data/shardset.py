"""The shards of one split, checked against the manifest before any training step.

A broken shard found mid-training costs a job; found here it costs a one-line error naming
the shard. Checks: tar and index present, tar size as in the manifest (truncation), index
sample count, every sample carrying the HR and LR components the run needs, and the index
offsets against the tar headers they point at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.runtime.distributed import ProcessPlace, first_problem
from preprocess.manifest import ManifestError, load_manifest
from preprocess.shards import index_mismatch, parse_dali_index

log = logging.getLogger(__name__)


class ShardError(Exception):
    """The shards cannot be used for this run; the message names the shard and the problem."""


@dataclass(frozen=True)
class SplitShards:
    data: Path
    split: str
    scale: int
    tars: tuple[Path, ...]
    indexes: tuple[Path, ...]
    samples: int
    hr_size: int
    lr_size: int
    hr_component: str
    lr_component: str
    codec: str
    synthetic: bool
    manifest: dict


def open_split(
    data: Path,
    split: str,
    scale: int,
    check_index: bool = True,
    part: tuple[int, int] = (0, 1),
) -> SplitShards:
    """The split's shards for a run at `scale`, or ShardError explaining why not.

    part=(k, n): check only shards k, k+n, k+2n, ... (the manifest is read whole either way);
    `open_split_once` gives each rank of a job its part.
    """
    try:
        manifest = load_manifest(data)
    except ManifestError as exc:
        raise ShardError(str(exc)) from None
    if str(scale) not in manifest.get("lr_sizes", {}):
        have = ", ".join(str(s) for s in manifest["scales"])
        raise ShardError(f"{data}: no LR images for scale {scale} in these shards (have {have})")
    if split not in manifest["splits"]:
        raise ShardError(f"{data}: no split {split!r} in the manifest")
    entries = manifest["splits"][split]["shards"]
    if not entries:
        raise ShardError(f"{data}: split {split!r} has no samples")
    hr_component = manifest["components"]["hr"]
    lr_component = manifest["components"][f"x{scale}"]
    tars, indexes = [], []
    first, every = part
    for number, entry in enumerate(entries):
        tar, index = data / entry["tar"], data / entry["index"]
        if number % every == first:
            _check_shard(tar, index, entry, (hr_component, lr_component), check_index)
        tars.append(tar)
        indexes.append(index)
    samples = sum(e["samples"] for e in entries)
    if samples != manifest["splits"][split]["samples"]:
        raise ShardError(
            f"{data}/manifest.json: {split} shards hold {samples} samples, "
            f"the split says {manifest['splits'][split]['samples']}"
        )
    return SplitShards(
        data=data,
        split=split,
        scale=scale,
        tars=tuple(tars),
        indexes=tuple(indexes),
        samples=samples,
        hr_size=manifest["hr_size"],
        lr_size=manifest["lr_sizes"][str(scale)],
        hr_component=hr_component,
        lr_component=lr_component,
        codec=manifest["codec"],
        synthetic=bool(manifest.get("synthetic", False)),
        manifest=manifest,
    )


def open_split_once(data: Path, split: str, scale: int, place: ProcessPlace) -> SplitShards:
    """open_split for a job: each rank checks every world_size-th shard (the full CelebA train
    split's ~160k tar headers are read once per job, not once per rank), and if any rank
    finds a problem, every rank raises the lowest rank's, so none is left waiting."""
    shards, problem = None, None
    try:
        shards = open_split(data, split, scale, part=(place.rank, place.world_size))
    except ShardError as exc:
        problem = str(exc)
    except Exception as exc:  # noqa: BLE001 - an unreadable file on one rank must stop all
        problem = f"{data} {split}: {type(exc).__name__}: {exc}"
    problem = first_problem(problem)
    if problem is not None:
        raise ShardError(problem)
    assert shards is not None
    return shards


def _check_shard(
    tar: Path, index: Path, entry: dict, needed: tuple[str, ...], check_index: bool
) -> None:
    if not tar.is_file():
        raise ShardError(f"{tar}: shard missing")
    if not index.is_file():
        raise ShardError(
            f"{tar}: index file {index.name} missing (re-run srgan-preprocess shard, "
            f"or make it with: wds2idx {tar} {index})"
        )
    size = tar.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        raise ShardError(
            f"{tar}: {size} bytes but the manifest says {entry['bytes']} (truncated or changed)"
        )
    try:
        samples = parse_dali_index(index.read_text(), index)
    except ValueError as exc:
        raise ShardError(str(exc)) from None
    if len(samples) != entry["samples"]:
        raise ShardError(f"{index}: {len(samples)} samples, the manifest says {entry['samples']}")
    for number, sample in enumerate(samples):
        have = {m.extension for m in sample}
        for component in needed:
            if component not in have:
                raise ShardError(f"{tar}: sample {number} ({sample[0].key}) has no {component}")
    if check_index and (problem := index_mismatch(tar, samples)):
        raise ShardError(f"{index}: does not match {tar.name}: {problem}")
