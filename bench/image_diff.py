"""How far folders of images are from a reference folder: per folder, the largest and the mean
|difference| in grey levels over the images of the same name.

    python bench/image_diff.py REFERENCE OTHER [OTHER...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(reference: Path, others: list[Path]) -> None:
    names = sorted(p.name for p in reference.iterdir())
    for other in others:
        worst, total, pixels = 0, 0.0, 0
        for name in names:
            a = np.asarray(Image.open(reference / name), np.int16)
            b = np.asarray(Image.open(other / name), np.int16)
            diff = np.abs(a - b)
            worst = max(worst, int(diff.max()))
            total, pixels = total + diff.sum(), pixels + diff.size
        print(
            f"{other.name} vs {reference.name}: {len(names)} images, max |diff| {worst}, "
            f"mean {total / max(pixels, 1):.3f} grey levels"
        )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
