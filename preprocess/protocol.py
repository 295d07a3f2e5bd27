"""Protocols: the crop and sizes that turn a 178x218 CelebA face into HR and LR images.

A protocol is a named preset so that papers and runs can say which one they used; any field
may be overridden from the command line, and the manifest records the values actually used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """Sizes of one preprocessing protocol.

    crop: side of the centre square cut from the aligned face, in source pixels.
    hr_size: side of the HR image the crop is resized to (bicubic).
    scales: the super-resolution factors; for each, an LR image of hr_size // scale is made
        from the HR image (bicubic with antialiasing), so HR and LR are exactly aligned.
    """

    name: str
    crop: int
    hr_size: int
    scales: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.crop <= 0 or self.hr_size <= 0:
            raise ValueError(f"crop and hr_size must be positive, got {self.crop}, {self.hr_size}")
        if not self.scales:
            raise ValueError("at least one scale is needed")
        for scale in self.scales:
            if scale < 2 or self.hr_size % scale:
                raise ValueError(f"scale {scale} must be >= 2 and divide hr_size {self.hr_size}")
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales repeat: {self.scales}")

    def lr_size(self, scale: int) -> int:
        return self.hr_size // scale

    def with_overrides(self, **fields: object) -> Protocol:
        """A copy with the given fields replaced; fields given as None are kept."""
        given = {k: v for k, v in fields.items() if v is not None}
        return dataclasses.replace(self, **given)


PRESETS: dict[str, Protocol] = {
    # The protocol of the project this pipeline grew out of: a tight 144 crop, upscaled to 256.
    "seed": Protocol(name="seed", crop=144, hr_size=256, scales=(4, 8)),
    # The usual protocol of the face super-resolution literature (FSRNet, SPARNet, ...):
    # the full 178 width, HR 128, LR 32 (4x) and 16 (8x).
    "faces128": Protocol(name="faces128", crop=178, hr_size=128, scales=(4, 8)),
}
DEFAULT_PRESET = "seed"


def parse_scales(text: str) -> tuple[int, ...]:
    """'4,8' -> (4, 8), with a clear error for anything else."""
    try:
        scales = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"scales must be comma-separated integers like '4,8', got {text!r}"
        ) from None
    if not scales:
        raise ValueError(f"no scale given in {text!r}")
    return scales
