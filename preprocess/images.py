"""One CelebA face -> the encoded HR image and one LR image per scale.

Runs in worker processes; every failure a real download can contain (empty, truncated or
corrupt files, non-images, images too small, unusual colour modes) becomes either a
conversion or a `RejectedImage` with a reason, never an exception that ends the job.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError

from preprocess.protocol import Protocol

Codec = Literal["jpeg", "png"]
CODEC_EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "png": "png"}
# Modes that convert to RGB without losing what the face is: grayscale, palette, CMYK, alpha.
CONVERTIBLE_MODES = {"L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "I;16", "I", "F", "1"}


class RejectedImage(Exception):
    """The image cannot be used; str(exc) is the reason recorded in the manifest."""


@dataclass(frozen=True)
class Encoding:
    """How images are stored in the shards.

    HR (`codec`): JPEG at quality 95 with 4:4:4 chroma by default: nvJPEG decodes it on the GPU,
    and 4:4:4 keeps the colour detail that 4:2:0 would halve; PNG is lossless but decoded on
    the CPU. LR (`lr_codec`): PNG by default, so the network sees the clean bicubic LR that
    published tables start from (JPEG q95 LR is 38.9 dB (4x) / 37.2 dB (8x) from it, and the
    net would learn to undo JPEG too); at 32x32 or 16x16 a PNG costs little to store or decode
    (bench/lr_storage.py).
    """

    codec: Codec = "jpeg"
    jpeg_quality: int = 95
    lr_codec: Codec = "png"

    def __post_init__(self) -> None:
        for name, codec in (("codec", self.codec), ("LR codec", self.lr_codec)):
            if codec not in CODEC_EXTENSIONS:
                raise ValueError(f"{name} must be one of {sorted(CODEC_EXTENSIONS)}, got {codec!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {self.jpeg_quality}")

    @property
    def extension(self) -> str:
        return CODEC_EXTENSIONS[self.codec]

    @property
    def lr_extension(self) -> str:
        return CODEC_EXTENSIONS[self.lr_codec]

    def encode(self, image: Image.Image, codec: Codec | None = None) -> bytes:
        out = io.BytesIO()
        if (codec or self.codec) == "jpeg":
            image.save(out, format="JPEG", quality=self.jpeg_quality, subsampling=0)
        else:
            image.save(out, format="PNG", compress_level=6)
        return out.getvalue()


def component_names(protocol: Protocol, encoding: Encoding) -> dict[str, str]:
    """Role -> component name inside a sample: {'hr': 'hr.jpg', 'x4': 'x4.png', ...}."""
    names = {"hr": f"hr.{encoding.extension}"}
    names.update({f"x{s}": f"x{s}.{encoding.lr_extension}" for s in protocol.scales})
    return names


def decode_rgb(data: bytes) -> tuple[Image.Image, str | None]:
    """Decode fully and return (RGB image, the original mode if it had to be converted)."""
    if not data:
        raise RejectedImage("empty file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes everything, so truncation is found here rather than later
    except UnidentifiedImageError:
        raise RejectedImage("not an image (no known image format)") from None
    except Image.DecompressionBombError as exc:
        raise RejectedImage(f"image too large to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RejectedImage(f"corrupt or truncated image: {exc}") from None
    if image.mode == "RGB":
        return image, None
    if image.mode not in CONVERTIBLE_MODES:
        raise RejectedImage(f"unsupported colour mode {image.mode}")
    original = image.mode
    if image.mode in ("I;16", "I", "F"):
        # High bit depth grayscale: scale to 8 bits rather than clip at 255.
        image = image.convert("F").point(lambda v: v / 256.0 if original == "I;16" else v)
        image = image.convert("L")
    return image.convert("RGB"), original


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if width < size or height < size:
        raise RejectedImage(f"too small: {width}x{height}, the crop needs {size}x{size}")
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def resize_bicubic(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize; PIL widens the kernel by the scale factor when shrinking (antialiasing)."""
    return image.resize((size, size), Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class SampleResult:
    components: dict[str, bytes]
    converted_from: str | None


def make_sample(data: bytes, protocol: Protocol, encoding: Encoding) -> SampleResult:
    """Encoded HR image and LR images for every scale; LR is made from the HR image."""
    image, converted_from = decode_rgb(data)
    hr = resize_bicubic(center_crop(image, protocol.crop), protocol.hr_size)
    names = component_names(protocol, encoding)
    components = {names["hr"]: encoding.encode(hr)}
    for scale in protocol.scales:
        lr = resize_bicubic(hr, protocol.lr_size(scale))
        components[names[f"x{scale}"]] = encoding.encode(lr, encoding.lr_codec)
    return SampleResult(components, converted_from)
