"""Reading a CelebA download as users have it: the image folder or its zip, and the partition file.

Only `img_align_celeba` (the aligned and cropped faces) and `list_eval_partition.txt` are
needed. A partial download is normal: images listed in the partition file but absent are
counted as missing, never an error.
"""

from __future__ import annotations

import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

IMAGES_DIR = "img_align_celeba"
IMAGES_ZIP = "img_align_celeba.zip"
PARTITION_FILE = "list_eval_partition.txt"
# The official codes of list_eval_partition.txt.
SPLIT_CODES = {"0": "train", "1": "val", "2": "test"}
SPLITS = ("train", "val", "test")
# Written by `srgan-preprocess demo-data`, so that everything made from its images says so.
SYNTHETIC_MARKER = "SYNTHETIC.txt"


class CelebAError(Exception):
    """The CelebA root cannot be used; the message names the file and the problem."""


def read_partition(path: Path) -> dict[str, list[str]]:
    """Split name -> image file names, in file order.

    The official file has no trailing newline on its last line, and some copies have CRLF
    line ends; both are accepted. Anything else malformed stops the job before any work.
    """
    if not path.is_file():
        raise CelebAError(f"{path}: partition file not found")
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    seen: set[str] = set()
    with path.open(encoding="utf-8", errors="strict") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in SPLIT_CODES or "/" in fields[0]:
                raise CelebAError(
                    f"{path}:{line_no}: expected '<image name> <0|1|2>', got {line.strip()!r}"
                )
            name, code = fields
            if name in seen:
                raise CelebAError(f"{path}:{line_no}: {name} is listed twice")
            seen.add(name)
            splits[SPLIT_CODES[code]].append(name)
    if not seen:
        raise CelebAError(f"{path}: partition file lists no images")
    return splits


def sample_key(file_name: str) -> str:
    """The WebDataset key of an image: its name without extension ('000001.jpg' -> '000001').

    Keys must not contain dots: DALI and webdataset split the extension at the first dot.
    """
    key = file_name.rsplit(".", 1)[0]
    if "." in key or not key:
        raise CelebAError(f"{file_name}: image names must have exactly one dot")
    return key


@dataclass(frozen=True)
class ImageSource:
    """The images of a CelebA root, from the folder or straight from the official zip.

    Picklable, so that worker processes can each open their own handle on the zip.
    """

    root: Path
    location: Path
    is_zip: bool

    @classmethod
    def open(cls, root: Path) -> ImageSource:
        if not root.is_dir():
            raise CelebAError(f"{root}: CelebA root not found (or not a folder)")
        folder, archive = root / IMAGES_DIR, root / IMAGES_ZIP
        if folder.is_dir():
            return cls(root, folder, is_zip=False)
        if archive.is_file():
            if not zipfile.is_zipfile(archive):
                raise CelebAError(f"{archive}: not a zip file")
            return cls(root, archive, is_zip=True)
        raise CelebAError(f"{root}: neither {IMAGES_DIR}/ nor {IMAGES_ZIP} found")

    @property
    def synthetic(self) -> bool:
        return (self.root / SYNTHETIC_MARKER).is_file()

    def names(self) -> set[str]:
        """File names of the images that are present."""
        if self.is_zip:
            return set(_zip_members(self.location))
        return {p.name for p in self.location.iterdir() if p.is_file()}

    def display_name(self, name: str) -> str:
        """How a file is named in warnings and the manifest."""
        if self.is_zip:
            return f"{self.location.name}:{_zip_members(self.location)[name]}"
        return f"{IMAGES_DIR}/{name}"

    def read(self, name: str) -> bytes:
        if self.is_zip:
            handle = _zip_handle(self.location)
            return handle.read(_zip_members(self.location)[name])
        return (self.location / name).read_bytes()


# Zip handles are per process and per thread: a ZipFile is not safe to share across fork.
_zip_local = threading.local()


def _zip_handle(path: Path) -> zipfile.ZipFile:
    handles = _zip_local.__dict__.setdefault("handles", {})
    key = (path, os.getpid())
    if key not in handles:
        handles[key] = zipfile.ZipFile(path)
    return handles[key]


def _zip_members(path: Path) -> dict[str, str]:
    """Base name -> member name, for the files in the zip (the official zip has a folder)."""
    cache = _zip_local.__dict__.setdefault("members", {})
    if path not in cache:
        members = {}
        for info in _zip_handle(path).infolist():
            if not info.is_dir():
                members[info.filename.rsplit("/", 1)[-1]] = info.filename
        cache[path] = members
    return cache[path]
