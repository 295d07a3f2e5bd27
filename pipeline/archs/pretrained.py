"""The pretrained weights this pipeline uses but cannot train (VGG19, AlexNet, InceptionV3):
where they live, reading them, getting them (`python -m pipeline.weights check|fetch`).

Compute nodes of a cluster often have no internet access: `fetch` is the login-node step before
a job. Every file goes where torch.hub would put it ($TORCH_HOME/hub/checkpoints, by default
~/.cache/torch/hub/checkpoints), under the name its URL ends with, so torchvision and the
metric packages find it without a download; each consumer also takes an explicit path.
"""

from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch


class WeightsMissing(RuntimeError):
    """A weights file is absent or unreadable; the message says how to get it (one line)."""


@dataclass(frozen=True)
class WeightsFile:
    name: str
    used_for: str
    url: str
    flag: str  # the option that names an explicit file instead
    # torchvision names its files NAME-<first hex digits of the SHA-256>.pth and torch.hub
    # checks them; torch-fidelity's name carries no documented hash, so it is not checked.
    sha256_prefix: str | None = None

    @property
    def filename(self) -> str:
        return os.path.basename(self.url)

    def cached_path(self) -> Path:
        """Where torch.hub keeps it (read at call time: TORCH_HOME may change)."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def missing(self, path: Path) -> WeightsMissing:
        return WeightsMissing(
            f"{path}: {self.name} weights ({self.used_for}) not found: run "
            f"'python -m pipeline.weights fetch {self.name}' where there is internet access "
            f"(downloads {self.url}) or pass {self.flag} PATH"
        )

    def resolve(self, explicit: str | Path | None) -> Path:
        """The explicit file if given, else the hub cache's; WeightsMissing if it is absent."""
        path = Path(explicit) if explicit else self.cached_path()
        if not path.is_file():
            raise self.missing(path)
        return path


WEIGHTS: dict[str, WeightsFile] = {
    file.name: file
    for file in (
        WeightsFile(
            "vgg19",
            "the SRGAN content loss, VGG54",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "--vgg-weights",
            "dcbb9e9d",
        ),
        WeightsFile(
            "alexnet",
            "LPIPS's backbone; its linear heads ship with the lpips package",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "--alexnet-weights",
            "7be5be79",
        ),
        WeightsFile(
            "inception",
            "FID's InceptionV3, the TensorFlow FID weights as torch-fidelity converted them",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
            "--inception-weights",
        ),
    )
}


def load_state(file: WeightsFile, path: Path, expected_key: str) -> dict[str, torch.Tensor]:
    """A state dict from `path`, or one line saying why it is not the file we need."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise WeightsMissing(f"{path}: not a readable {file.name} state dict ({exc})") from None
    if not isinstance(state, dict) or expected_key not in state:
        raise WeightsMissing(f"{path}: not the {file.name} weights (no {expected_key})")
    return state


def fetch(names: list[str]) -> list[str]:
    """Download the named files into the hub cache (atomically: torch.hub writes a temporary
    file and renames it, and checks the SHA-256 prefix the name carries). One line per
    failure."""
    problems = []
    for name in names:
        file = WEIGHTS[name]
        target = file.cached_path()
        if target.is_file():
            print(f"{name}: present at {target}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(file.url, str(target), file.sha256_prefix)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            reason = getattr(exc, "reason", None) or exc
            problems.append(f"{name}: cannot download {file.url} to {target}: {reason}")
            continue
        print(f"{name}: downloaded to {target}")
    return problems
