"""How much overlap `srgan-upscale --tile N` needs: tiled against whole-image SR, and the cost.

For the paper's generator (SRResNet-B16, 64 channels; weights as initialised, or a checkpoint)
on one LR image (a face of the CelebA sample downscaled bicubically, or a picture you name),
prints per tile overlap the largest and mean |tiled - whole| in grey levels and the time
against the whole image in the same run.

    python bench/tile_seams.py [--checkpoint CKPT] [--image FILE] [--size 128] [--tile 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.archs import SRResNet  # noqa: E402
from pipeline.serving.generators import Generator, load_generator, super_resolve  # noqa: E402

CELEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="[SRResNet-B16 x4 as initialised, seed 0]")
    parser.add_argument("--image", type=Path,
                        default=CELEBA / "img_align_celeba" / "000001.jpg")  # fmt: skip
    parser.add_argument("--size", type=int, default=128, help="LR side in pixels")
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--overlaps", default="0,4,8,16,24,32,48")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cpu")
    if args.checkpoint:
        generator = load_generator(args.checkpoint, device)
    else:
        generator = Generator(SRResNet(4).eval(), 4, "SRResNet-B16 x4, initialised (seed 0)")
    with Image.open(args.image) as image:
        lr_image = image.convert("RGB").resize((args.size, args.size), Image.Resampling.BICUBIC)
    lr = torch.from_numpy(np.asarray(lr_image, np.float32) / 255).permute(2, 0, 1)[None]
    started = time.perf_counter()
    whole = super_resolve(generator, lr).to(torch.int16)
    whole_s = time.perf_counter() - started
    print(f"{generator.source}; {args.image.name} at {args.size}x{args.size} LR, tiles of "
          f"{args.tile}; whole image {whole_s:.2f} s")  # fmt: skip
    print("overlap  max |diff|  mean |diff|  time / whole")
    for overlap in (int(o) for o in args.overlaps.split(",")):
        started = time.perf_counter()
        tiled = super_resolve(generator, lr, args.tile, overlap).to(torch.int16)
        seconds = time.perf_counter() - started
        diff = (tiled - whole).abs().float()
        print(f"{overlap:7d}  {diff.max():10.0f}  {diff.mean():11.4f}  {seconds / whole_s:12.2f}")


if __name__ == "__main__":
    main()
