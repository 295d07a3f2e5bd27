"""Super-resolve images with a trained generator.

    srgan-upscale --input FILE|DIR --output FILE|DIR    # the shipped 4x (models/)
    srgan-upscale --model x8 --input FILE|DIR --output FILE|DIR
    srgan-upscale --checkpoint CKPT|RUN_DIR|WEIGHTS.safetensors|MODEL_URI --input ... --output ...
    python -m pipeline.upscale ...

Each image is fed as it is (its whole frame is the LR image). Images of the same size go
through the network in batches; `--tile N` bounds memory for large photos. The output format
follows the extension (`--output out.jpg`, or `--format` for a folder). Unreadable files are
skipped with a warning and counted; the exit status is 0 when every image was written, 3 when
some were skipped, 1 or 2 on an error. Outputs are written atomically.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from pipeline.cli import (
    InputError,
    generator_options,
    load_chosen_generator,
    run_command,
    weights_option,
)
from pipeline.runtime.precision import PRECISIONS, inference_dtype
from pipeline.serving.generators import Generator
from pipeline.serving.generators import super_resolve as run_generator
from preprocess.atomic import tmp_path

log = logging.getLogger("pipeline.upscale")
PARTIAL = 3  # exit status: done, but some inputs were skipped
SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
# what makes one input unusable (its header, its pixels, or a size past PIL's bomb limit)
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


def output_format(path: Path) -> str:
    """PIL's format name for the extension of `path`; one-line error for an unknown one."""
    known = Image.registered_extensions()
    if path.suffix.lower() not in known:
        raise click.BadParameter(f"{path}: unknown image extension {path.suffix!r}")
    return known[path.suffix.lower()]


def names_a_file(target: Path) -> bool:
    """`--output x.png` is a file; `--output sr`, `--output runs/v1.2` or an existing folder
    is a folder."""
    return not target.is_dir() and target.suffix.lower() in Image.registered_extensions()


def plan_outputs(source: Path, target: Path, fmt: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: a file to a file (or into a folder), a folder's files into a
    folder, named by the input's stem and `fmt`'s extension. Refuses, before any work, two
    inputs that would write one output (a.png and a.jpg) and an output over its input."""
    if source.is_file():
        pairs = [(source, target if names_a_file(target) else target / f"{source.stem}.{fmt}")]
    elif source.is_dir():
        if names_a_file(target):
            raise click.BadParameter(f"{target}: a folder of inputs needs an output folder",
                                     param_hint="--output")  # fmt: skip
        files = sorted(p for p in source.iterdir() if p.is_file())
        images = [p for p in files if p.suffix.lower() in Image.registered_extensions()]
        if len(images) < len(files):  # sidecars (.xmp, .json), notes: not inputs at all
            log.info("%d files in %s without an image extension left alone",
                     len(files) - len(images), source)  # fmt: skip
        pairs = [(p, target / f"{p.stem}.{fmt}") for p in images]
    else:
        raise click.BadParameter(f"{source}: no such file or folder", param_hint="--input")
    writers: dict[Path, Path] = {}
    for image, out in pairs:
        if out.resolve() == image.resolve():
            raise InputError(f"{out}: the output would overwrite its input")
        if out in writers:
            raise InputError(f"{writers[out]} and {image} would both be written to {out}")
        writers[out] = image
    return pairs


# EXIF orientations that turn the picture by 90 degrees: width and height swap
TRANSPOSED = {5, 6, 7, 8}


def read_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the picture is shown (after its EXIF orientation), from the header;
    or None (with a warning) for an unreadable file."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(ExifTags.Base.Orientation) in TRANSPOSED:
                return height, width
            return width, height
    except UNREADABLE as exc:
        log.warning("skipped %s: not a readable image (%s)", path, exc)
        return None


def load_rgb(path: Path) -> np.ndarray | None:
    """The picture upright (a camera's EXIF orientation applied), as 8-bit RGB: 16-bit grey
    scaled down (not clipped), an alpha channel dropped with a warning."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(image).astype(np.float64)
                grey = grey / 257.0 if image.mode != "I" or grey.max() > 255 else grey
                return np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=2)
            if "A" in image.getbands() or "transparency" in image.info:
                log.warning("%s: its alpha channel is dropped (transparent pixels are upscaled "
                            "as the colour they hold)", path)  # fmt: skip
            return np.asarray(image.convert("RGB"))
    except UNREADABLE as exc:  # a header that reads, pixels that don't
        log.warning("skipped %s: not a readable image (%s)", path, exc)
        return None


def batches(
    pairs: list[tuple[Path, Path]], batch_size: int
) -> tuple[list[list[tuple[Path, Path]]], int]:
    """Same-size inputs grouped in batches of at most `batch_size`; and how many files were
    unreadable."""
    by_size: dict[tuple[int, int], list[tuple[Path, Path]]] = defaultdict(list)
    unreadable = 0
    for pair in pairs:
        size = read_size(pair[0])
        if size is None:
            unreadable += 1
        else:
            by_size[size].append(pair)
    groups = [g[i : i + batch_size] for g in by_size.values() for i in range(0, len(g), batch_size)]
    return groups, unreadable


def save(image: np.ndarray, target: Path) -> bool:
    """Write atomically; a failure (a full disk, a folder in the way) is a warning and False,
    never a crash halfway through a folder."""
    fmt = output_format(target)
    tmp = tmp_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp, format=fmt, **SAVE_OPTIONS.get(fmt, {}))
        tmp.replace(target)
        return True
    except (OSError, ValueError) as exc:
        log.warning("skipped %s: %s not written (%s)", target.name, target, exc)
        return False
    finally:
        tmp.unlink(missing_ok=True)


def run_and_save(
    generator: Generator,
    same: list[tuple[tuple[Path, Path], np.ndarray]],
    device: torch.device,
    tile: int,
    overlap: int,
    dtype: torch.dtype,
) -> int:
    """SR of same-shape images as one batch; returns how many were written. Out of memory, a
    batch is retried image by image, and an image that still does not fit is skipped."""
    try:
        stack = np.stack([pixels for _, pixels in same])
        lr = torch.from_numpy(stack).to(device).permute(0, 3, 1, 2).float() / 255.0
        sr = run_generator(generator, lr, tile, overlap, dtype).permute(0, 2, 3, 1).cpu()
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if len(same) > 1:
            return sum(run_and_save(generator, [one], device, tile, overlap, dtype) for one in same)
        height, width = same[0][1].shape[:2]
        log.warning("skipped %s: out of memory at %dx%d; pass --tile 256", same[0][0][0],
                    width, height)  # fmt: skip
        return 0
    targets = [target for (_, target), _ in same]
    return sum(save(image, target) for target, image in zip(targets, sr.numpy(), strict=True))


def upscale_files(
    generator: Generator,
    pairs: list[tuple[Path, Path]],
    device: torch.device,
    batch_size: int = 8,
    tile: int = 0,
    overlap: int = 16,
    dtype: torch.dtype = torch.float32,
) -> tuple[int, int]:
    """Write the SR image of every readable input; returns (written, skipped)."""
    groups, unreadable = batches(pairs, batch_size)
    written = 0
    with tqdm(total=len(pairs) - unreadable, unit="img", desc=f"x{generator.scale}") as bar:
        for group in groups:
            loaded = [(pair, load_rgb(pair[0])) for pair in group]
            ready = [(pair, pixels) for pair, pixels in loaded if pixels is not None]
            # the header's size is a promise the pixels may break: stack equal shapes only
            for shape in dict.fromkeys(pixels.shape for _, pixels in ready):
                same = [(pair, pixels) for pair, pixels in ready if pixels.shape == shape]
                written += run_and_save(generator, same, device, tile, overlap, dtype)
            bar.update(len(group))
    return written, len(pairs) - written


@click.command(
    "pipeline.upscale",
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
    epilog="Exit status: 0 all written, 3 some inputs skipped, 1/2 an error.",
)
@generator_options
@click.option(
    "--input",
    "source",
    required=True,
    type=click.Path(path_type=Path),
    help="an image, or a folder of images",
)
@click.option(
    "--output",
    "target",
    required=True,
    type=click.Path(path_type=Path),
    help="a file (its extension picks the format) or a folder",
)
@click.option(
    "--format",
    "fmt",
    default="png",
    help="the extension of outputs written into a folder (png, jpg, webp, tiff, ...)",
)
@weights_option
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, help="same-size images per forward pass"
)
@click.option(
    "--tile",
    type=click.IntRange(min=0),
    default=0,
    help="run tiles of at most N x N LR pixels (0: whole images)",
)
@click.option(
    "--tile-overlap",
    type=click.IntRange(min=0),
    default=16,
    help="LR pixels of context around each tile, cut away after (no seams)",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    help="auto: bf16 (or fp16) on GPUs, fp32 on the CPU",
)
@click.option("--device", default=None, help="cuda, cuda:1, cpu  [default: cuda if there is one]")
def cli(checkpoint: str | None, model: str | None, source: Path, target: Path, fmt: str,
        weights: str, batch_size: int, tile: int, tile_overlap: int, precision: str,
        device: str | None) -> None:  # fmt: skip
    """Super-resolve an image or a folder of images with a trained generator."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_format(Path(f"x.{fmt}"))
    pairs = plan_outputs(source, target, fmt)
    for _, out in pairs[:1]:
        output_format(out)
    try:
        place = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise click.BadParameter(str(exc).splitlines()[0], param_hint="--device") from None
    generator = load_chosen_generator(checkpoint, model, place, weights)
    dtype = inference_dtype(precision, place)
    started = time.perf_counter()
    written, skipped = upscale_files(generator, pairs, place, batch_size, tile, tile_overlap,
                                     dtype)  # fmt: skip
    seconds = time.perf_counter() - started
    click.echo(f"pipeline.upscale: {written} images upscaled x{generator.scale} to {target}, "
               f"{skipped} skipped; {seconds:.1f} s on {place} in {str(dtype)[6:]}")  # fmt: skip
    if skipped:
        raise click.exceptions.Exit(PARTIAL)


def main(argv: list[str] | None = None) -> int:
    return run_command(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
