"""The generators that ship in models/ (the commands' `--model x4|x8`, the 4x when no
--checkpoint is given: pipeline/cli.py). launch/release.sh made them; their card,
models/README.md, says how, on what and with which scores."""

from __future__ import annotations

from pathlib import Path

from pipeline.runtime.provenance import PROJECT_ROOT
from pipeline.serving.generator_file import release_file_name

MODELS_DIR = PROJECT_ROOT / "models"
SHIPPED = {f"x{scale}": release_file_name(scale) for scale in (4, 8)}
DEFAULT_MODEL = "x4"


def shipped_model(name: str) -> Path:
    """The path of a shipped generator (`x4`, `x8`)."""
    return MODELS_DIR / SHIPPED[name]
