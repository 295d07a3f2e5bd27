"""What JPEG storage costs: PSNR of the stored images against the lossless ones.

For each preset, every image of ../shared/data/celeba (or --images N of them) is turned into
its HR and LR images, encoded as the shards store them (JPEG quality 95, 4:4:4 by default),
decoded again and compared with the unencoded pixels. Prints a table; the README quotes it.

    python bench/codec_loss.py [--images N] [--jpeg-quality Q]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from preprocess.images import Encoding, center_crop, resize_bicubic  # noqa: E402
from preprocess.protocol import PRESETS  # noqa: E402

CELEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--jpeg-quality", type=int, default=95)
    args = parser.parse_args()
    encoding = Encoding(codec="jpeg", jpeg_quality=args.jpeg_quality)
    paths = sorted((CELEBA / "img_align_celeba").iterdir())[: args.images]
    print(
        f"{len(paths)} real CelebA images, JPEG quality {args.jpeg_quality}, 4:4:4; "
        "RGB PSNR of decoded JPEG against the lossless image (mean over images)\n"
    )
    print("| preset | image | size | PSNR dB | bytes JPEG | bytes PNG |\n|---|---|---|---|---|---|")
    for name, protocol in PRESETS.items():
        rows: dict[str, list[tuple[float, int, int]]] = {}
        for path in paths:
            face = Image.open(path).convert("RGB")
            hr = resize_bicubic(center_crop(face, protocol.crop), protocol.hr_size)
            images = {"hr": hr}
            images.update(
                {f"x{s}": resize_bicubic(hr, protocol.lr_size(s)) for s in protocol.scales}
            )
            for role, image in images.items():
                data = encoding.encode(image)
                decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                png = io.BytesIO()
                image.save(png, format="PNG", compress_level=6)
                rows.setdefault(role, []).append(
                    (psnr(np.asarray(image), decoded), len(data), png.tell())
                )
        for role, values in rows.items():
            size = protocol.hr_size if role == "hr" else protocol.lr_size(int(role[1:]))
            mean = np.mean(values, axis=0)
            print(f"| {name} | {role} | {size} | {mean[0]:.2f} | {mean[1]:.0f} | {mean[2]:.0f} |")


if __name__ == "__main__":
    main()
