"""`manifest.json`: what the shards hold and how they were made.

The trainer validates shards against it before training, and MLflow logs its summary, so it
records everything that decides the data: protocol, sizes, codec, seed, counts per split and
shard with checksums, and every image that was left out and why. It holds no timestamps, so
the same input gives the same manifest.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from preprocess.celeba import SPLITS
from preprocess.pillow_check import pillow_flavour
from preprocess.plan import Plan, ShardJob

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class ManifestError(Exception):
    """The manifest is absent or unreadable; the message names the file."""


def build_manifest(
    job: ShardJob,
    plan: Plan,
    records: list[dict[str, Any]],
    components: dict[str, str],
    synthetic: bool,
    source_description: str,
) -> dict[str, Any]:
    protocol, encoding = job.protocol, job.encoding
    splits: dict[str, Any] = {}
    for split in SPLITS:
        shards = [
            {k: r[k] for k in ("tar", "index", "samples", "bytes", "sha256")}
            for r in records
            if r["tar"].startswith(f"{split}/") and r["samples"] > 0
        ]
        splits[split] = {
            "samples": sum(s["samples"] for s in shards),
            "listed": plan.listed[split],
            "shards": shards,
        }
    rejected = [item for r in records for item in r["rejected"]]
    converted: Counter[str] = Counter()
    for r in records:
        converted.update(r["converted"])
    written = sum(s["samples"] for s in splits.values())
    any_jpeg = "jpeg" in (encoding.codec, encoding.lr_codec)
    return {
        "format_version": FORMAT_VERSION,
        "synthetic": synthetic,
        "source": source_description,
        "preset": protocol.name,
        "crop": protocol.crop,
        "hr_size": protocol.hr_size,
        "scales": list(protocol.scales),
        "lr_sizes": {str(s): protocol.lr_size(s) for s in protocol.scales},
        "resize": "PIL bicubic with antialiasing; LR made from HR",
        "pil": pillow_flavour(),
        "codec": encoding.codec,
        "lr_codec": encoding.lr_codec,
        "jpeg_quality": encoding.jpeg_quality if any_jpeg else None,
        "chroma_subsampling": "4:4:4" if any_jpeg else None,
        "components": components,
        "seed": job.seed,
        "samples_per_shard": job.samples_per_shard,
        "splits": splits,
        "images": {
            "listed": sum(plan.listed.values()),
            "processed": written + len(rejected),
            "written": written,
            "rejected": len(rejected),
            "converted": dict(sorted(converted.items())),
        },
        "missing": plan.missing,
        "unlisted": plan.unlisted,
        "rejected": rejected,
    }


def load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (is {out} an srgan-preprocess output?)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest: {exc}") from None
    for field in ("hr_size", "scales", "codec", "components", "splits"):
        if field not in manifest:
            raise ManifestError(f"{path}: manifest has no {field!r} field")
    return manifest
