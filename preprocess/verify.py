"""`srgan-preprocess verify`: read every shard back the way the trainer will, and compare.

Three independent readers must agree with the manifest: `tarfile` (checksums, index offsets,
components), the `webdataset` library (sample keys and components), and DALI's webdataset
reader in CPU-only mode (sample count, component bytes, and that every image decodes to the
manifest's sizes). A shard that passes here is one the training loaders can read.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

from preprocess.manifest import load_manifest
from preprocess.shards import (
    group_samples,
    index_path_for,
    parse_dali_index,
    read_tar_members,
    sha256_file,
)

log = logging.getLogger(__name__)


def check_shard_files(out: Path, shard: dict[str, Any], components: set[str]) -> list[str]:
    """Checksum, index against tarfile's offsets, and each sample's components."""
    tar_path = out / shard["tar"]
    idx_path = index_path_for(tar_path)
    name = shard["tar"]
    if not tar_path.is_file():
        return [f"{name}: missing"]
    if not idx_path.is_file():
        return [f"{name}: index file {idx_path.name} missing"]
    problems = []
    if tar_path.stat().st_size != shard["bytes"]:
        problems.append(f"{name}: {tar_path.stat().st_size} bytes, manifest says {shard['bytes']}")
    if sha256_file(tar_path) != shard["sha256"]:
        problems.append(f"{name}: sha256 differs from the manifest")
    try:
        members = read_tar_members(tar_path)
    except Exception as exc:  # noqa: BLE001 - any unreadable tar is reported, not raised
        return [*problems, f"{name}: unreadable tar: {exc}"]
    tar_samples = group_samples(members)
    if len(tar_samples) != shard["samples"]:
        problems.append(f"{name}: {len(tar_samples)} samples, manifest says {shard['samples']}")
    for sample in tar_samples:
        got = {m.extension for m in sample}
        if got != components:
            problems.append(
                f"{name}: sample {sample[0].key} has {sorted(got)}, expected {sorted(components)}"
            )
            break
    try:
        indexed = parse_dali_index(idx_path.read_text(), idx_path)
    except (ValueError, OSError) as exc:
        return [*problems, str(exc)]
    from_tar = [(m.name, m.data_offset, m.size) for s in tar_samples for m in s]
    from_idx = [(m.name, m.data_offset, m.size) for s in indexed for m in s]
    if from_tar != from_idx:
        problems.append(f"{name}: index {idx_path.name} does not match the tar's members")
    return problems


def check_with_webdataset(
    out: Path, tars: list[str], components: set[str]
) -> tuple[Counter, list[str]]:
    """Keys and component sets as the webdataset library groups them."""
    import webdataset as wds

    problems: list[str] = []
    keys: Counter[str] = Counter()
    urls = [str(out / t) for t in tars]
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        got = {k for k in sample if not k.startswith("__")}
        if got != components:
            problems.append(
                f"webdataset: sample {sample['__key__']} in {sample['__url__']} has "
                f"{sorted(got)}, expected {sorted(components)}"
            )
        keys[sample["__key__"]] += 1
    return keys, problems


def check_with_dali(out: Path, manifest: dict[str, Any], split: str) -> list[str]:
    """DALI's reader (CPU-only) returns every sample's bytes and they decode to the right size."""
    from nvidia.dali import fn, pipeline_def, types

    shards = manifest["splits"][split]["shards"]
    if not shards:
        return []
    expected = manifest["splits"][split]["samples"]
    roles = list(manifest["components"])  # ['hr', 'x4', 'x8']
    exts = [manifest["components"][role].split(".", 1)[1] for role in roles]
    sizes = [
        manifest["hr_size"] if role == "hr" else manifest["lr_sizes"][role[1:]] for role in roles
    ]
    batch = 64

    @pipeline_def(batch_size=batch, num_threads=2, device_id=None, exec_dynamic=True)
    def reader_pipeline():  # type: ignore[no-untyped-def]
        encoded = fn.readers.webdataset(
            paths=[str(out / s["tar"]) for s in shards],
            index_paths=[str(out / s["index"]) for s in shards],
            ext=[f"{role}.{ext}" for role, ext in zip(roles, exts, strict=True)],
            missing_component_behavior="error",
            pad_last_batch=True,
            name="reader",
        )
        decoded = [
            fn.decoders.image(e, device="cpu", output_type=types.RGB).shape() for e in encoded
        ]
        return (*encoded, *decoded)

    pipe = reader_pipeline()
    pipe.build()
    epoch = pipe.reader_meta("reader")["epoch_size"]
    problems = []
    if epoch != expected:
        problems.append(f"DALI {split}: reader sees {epoch} samples, manifest says {expected}")
    hashes: Counter[tuple[str, ...]] = Counter()
    seen = 0
    while seen < epoch:
        outputs = pipe.run()
        take = min(batch, epoch - seen)
        encoded, shapes = outputs[: len(roles)], outputs[len(roles) :]
        for i in range(take):
            hashes[tuple(hashlib.sha256(e.at(i).tobytes()).hexdigest() for e in encoded)] += 1
            for role, size, shape in zip(roles, sizes, shapes, strict=True):
                if tuple(shape.at(i)) != (size, size, 3):
                    problems.append(
                        f"DALI {split}: a {role} image decodes to "
                        f"{tuple(shape.at(i))}, expected {(size, size, 3)}"
                    )
        seen += take
    tar_hashes: Counter[tuple[str, ...]] = Counter()
    for shard in shards:
        tar_hashes.update(_component_hashes(out / shard["tar"], roles, exts))
    if hashes != tar_hashes:
        problems.append(f"DALI {split}: component bytes differ from the tars' members")
    return problems[:20]


def _component_hashes(tar_path: Path, roles: list[str], exts: list[str]) -> list[tuple[str, ...]]:
    out = []
    with tarfile.open(tar_path, "r:") as tar:
        data = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    keys = sorted({name.split(".", 1)[0] for name in data})
    for key in keys:
        out.append(
            tuple(
                hashlib.sha256(data[f"{key}.{role}.{ext}"]).hexdigest()
                for role, ext in zip(roles, exts, strict=True)
            )
        )
    return out


def verify_output(out: Path, use_dali: bool = True) -> list[str]:
    """Every problem found, one line each; an empty list means the output is sound."""
    manifest = load_manifest(out)
    components = set(manifest["components"].values())
    problems: list[str] = []
    all_keys: Counter[str] = Counter()
    for split, info in manifest["splits"].items():
        shards = info["shards"]
        for shard in shards:
            problems += check_shard_files(out, shard, components)
        if problems:
            continue  # the readers below would only repeat what is already wrong
        keys, wds_problems = check_with_webdataset(out, [s["tar"] for s in shards], components)
        problems += wds_problems
        if sum(keys.values()) != info["samples"]:
            problems.append(
                f"webdataset {split}: {sum(keys.values())} samples, manifest says {info['samples']}"
            )
        all_keys.update(keys)
        if use_dali:
            problems += check_with_dali(out, manifest, split)
        log.info("%s: %d samples in %d shards checked", split, info["samples"], len(shards))
    repeated = [k for k, n in all_keys.items() if n > 1]
    if repeated:
        problems.append(f"{len(repeated)} sample keys appear more than once, e.g. {repeated[0]}")
    return problems
