"""Deterministic WebDataset tar shards with a DALI index file beside each.

Tar headers are plain ustar with fixed metadata (mtime 0, uid/gid 0, mode 0444, no PAX
records), so the same samples always give the same bytes, and DALI's index offsets can be
taken straight from the headers that were written.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from preprocess.atomic import atomic_open, sync_folder, tmp_path

# DALI's webdataset index format, as written by its `wds2idx` tool: a header line with the
# version and the sample count, then one line per sample with, for each component,
# "<extension> <offset of its data> <size> <member name>" (the data follows its 512-byte
# header). The tool refuses empty tars, so a shard must hold at least one sample.
DALI_INDEX_VERSION = "v1.2"


@dataclass(frozen=True)
class Member:
    name: str
    header_offset: int
    data_offset: int
    size: int

    @property
    def key(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def extension(self) -> str:
        return self.name.split(".", 1)[1]


@dataclass
class ShardWriter:
    """Writes one shard to a temporary name; `close()` renames tar and index into place.

    Usable as a context manager: leaving it by an exception removes the temporary files,
    so an interrupted job never leaves a partial shard under the final name.
    """

    tar_path: Path
    members: list[Member] = field(default_factory=list)
    samples: int = 0

    def __post_init__(self) -> None:
        self._tmp = tmp_path(self.tar_path)
        self._tmp.parent.mkdir(parents=True, exist_ok=True)
        # Closed by close() or abort(); the writer itself is the context manager.
        self._tar = tarfile.open(self._tmp, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115

    @property
    def index_path(self) -> Path:
        return index_path_for(self.tar_path)

    def add(self, key: str, components: dict[str, bytes]) -> None:
        """Add one sample; components are written in sorted order of their names."""
        if "." in key or "/" in key or not key:
            raise ValueError(f"sample key {key!r} must be non-empty without dots or slashes")
        for ext in sorted(components):
            data = components[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            header_offset = self._tar.offset
            self._tar.addfile(info, io.BytesIO(data))
            # addfile stores a copy of `info` without offsets; the data is the last padded
            # block run before the new end of the archive.
            padded = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            data_offset = self._tar.offset - padded
            self.members.append(Member(info.name, header_offset, data_offset, info.size))
        self.samples += 1

    def close(self) -> str:
        """Finish the tar and its index and move both into place; return the tar's sha256."""
        if not self.samples:
            raise ValueError(f"{self.tar_path}: a shard needs at least one sample")
        self._tar.close()
        with open(self._tmp, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            os.fsync(handle.fileno())  # on disk before its name says it is whole
        with atomic_open(self.index_path, "w") as handle:
            handle.write(format_dali_index(self.members))
        self._tmp.replace(self.tar_path)
        sync_folder(self.tar_path.parent)
        return digest

    def abort(self) -> None:
        self._tar.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()


def index_path_for(tar_path: Path) -> Path:
    return tar_path.with_suffix(".idx")


def group_samples(members: list[Member]) -> list[list[Member]]:
    """Consecutive members with the same key form one sample, as both readers see it."""
    samples: list[list[Member]] = []
    for member in members:
        if samples and samples[-1][0].key == member.key:
            samples[-1].append(member)
        else:
            samples.append([member])
    return samples


def format_dali_index(members: list[Member]) -> str:
    samples = group_samples(members)
    lines = [f"{DALI_INDEX_VERSION} {len(samples)}"]
    for sample in samples:
        parts = [f"{m.extension} {m.data_offset} {m.size} {m.name}" for m in sample]
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def parse_dali_index(text: str, source: Path) -> list[list[Member]]:
    """Samples of a DALI index file, each a list of components (data offsets)."""
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != DALI_INDEX_VERSION or not header[1].isdigit():
        raise ValueError(f"{source}: not a v1.2 DALI index (first line {lines[:1]!r})")
    samples = []
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields or len(fields) % 4:
            raise ValueError(f"{source}:{line_no}: expected groups of 'ext offset size name'")
        sample = []
        for i in range(0, len(fields), 4):
            _ext, offset, size, name = fields[i : i + 4]
            sample.append(Member(name, int(offset) - tarfile.BLOCKSIZE, int(offset), int(size)))
        samples.append(sample)
    if len(samples) != int(header[1]):
        raise ValueError(f"{source}: header says {header[1]} samples, index has {len(samples)}")
    return samples


def index_mismatch(tar_path: Path, samples: list[list[Member]]) -> str | None:
    """Where an index disagrees with its tar, judged from the tar headers it points at.

    Reads one 512-byte header per component instead of the whole tar, so every shard can be
    checked before training starts; returns None when all agree.
    """
    size = tar_path.stat().st_size
    with open(tar_path, "rb") as handle:
        for number, sample in enumerate(samples):
            for member in sample:
                if member.header_offset < 0 or member.data_offset + member.size > size:
                    return f"sample {number} ({member.name}) lies beyond the end of the tar"
                handle.seek(member.header_offset)
                try:
                    header = tarfile.TarInfo.frombuf(
                        handle.read(tarfile.BLOCKSIZE), tarfile.ENCODING, "surrogateescape"
                    )
                except tarfile.HeaderError:
                    return f"sample {number} ({member.name}): no tar header where the index points"
                if header.name != member.name or header.size != member.size:
                    return (
                        f"sample {number}: index says {member.name} ({member.size} bytes), "
                        f"the tar has {header.name} ({header.size} bytes) there"
                    )
    return None


def read_tar_members(tar_path: Path) -> list[Member]:
    """The regular-file members of a tar with their offsets, as `tarfile` reads them."""
    with tarfile.open(tar_path, mode="r:") as tar:
        return [
            Member(info.name, info.offset, info.offset_data, info.size)
            for info in tar.getmembers()
            if info.isfile()
        ]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
