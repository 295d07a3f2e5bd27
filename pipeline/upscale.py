"""Super-resolve every image in a folder with a trained checkpoint.

    python -m pipeline.upscale --checkpoint CKPT --input DIR --output DIR

The scale and the network size come from the checkpoint. Each image is fed as it is (its
whole frame is the LR image); outputs are PNGs with the same names. Files that are not
images are skipped with a warning; outputs are written atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline.archs import SRResNet
from pipeline.checkpoint import CheckpointError, find_checkpoint, generator_from
from preprocess.atomic import tmp_path

log = logging.getLogger("pipeline.upscale")


def load_generator(path: Path, device: torch.device, which: str = "ema") -> SRResNet:
    """The generator of a checkpoint file or of a run folder's newest checkpoint."""
    found, state = find_checkpoint(path)
    return generator_from(state, found, which).to(device)


@torch.no_grad()
def upscale_image(model: SRResNet, image: Image.Image, device: torch.device) -> Image.Image:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    lr = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).to(device)
    sr = model(lr).clamp(-1, 1).add(1).mul(127.5).round().byte()
    return Image.fromarray(sr[0].permute(1, 2, 0).cpu().numpy())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.upscale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True, help="folder of LR images")
    parser.add_argument("--output", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument(
        "--weights", choices=["ema", "raw"], default="ema",
        help="G's weight average if the checkpoint has one, or raw [ema]",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.input.is_dir():
        print(f"pipeline.upscale: error: {args.input}: input folder not found", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_generator(args.checkpoint, device, args.weights)
    except CheckpointError as exc:
        print(f"pipeline.upscale: error: {exc}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in args.input.iterdir() if p.is_file())
    written = skipped = 0
    for path in tqdm(files, unit="img", desc=f"x{model.scale}"):
        try:
            with Image.open(path) as image:
                image.load()
                result = upscale_image(model, image, device)
        except (UnidentifiedImageError, OSError) as exc:
            log.warning("skipped %s: not a readable image (%s)", path, exc)
            skipped += 1
            continue
        target = args.output / f"{path.stem}.png"
        tmp = tmp_path(target)
        result.save(tmp, format="PNG")
        tmp.replace(target)
        written += 1
    print(
        f"pipeline.upscale: {written} images upscaled x{model.scale} to {args.output}, "
        f"{skipped} skipped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
