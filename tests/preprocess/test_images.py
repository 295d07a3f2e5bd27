"""Each kind of bad input the issue names, made from the bytes of a CelebA sample face."""

import io

import numpy as np
import pytest
from conftest import shared_celeba
from PIL import Image

from preprocess.images import Encoding, RejectedImage, make_sample
from preprocess.protocol import PRESETS


@pytest.fixture(scope="module")
def real_jpeg() -> bytes:
    return (shared_celeba() / "img_align_celeba" / "000001.jpg").read_bytes()


def _encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("preset", ["seed", "faces128"])
def test_sizes_of_hr_and_lr(real_jpeg, preset):
    protocol = PRESETS[preset]
    sample = make_sample(real_jpeg, protocol, Encoding())
    assert sorted(sample.components) == ["hr.jpg", "x4.png", "x8.png"]
    assert _decode(sample.components["hr.jpg"]).size == (protocol.hr_size,) * 2
    for scale in (4, 8):
        image = _decode(sample.components[f"x{scale}.png"])
        assert image.size == (protocol.lr_size(scale),) * 2 and image.mode == "RGB"
    assert sample.converted_from is None


def test_jpeg_is_444_so_nvjpeg_keeps_full_chroma(real_jpeg):
    sample = make_sample(real_jpeg, PRESETS["seed"], Encoding())
    image = _decode(sample.components["hr.jpg"])
    # Pillow reports the sampling factors per component: all 1x1 means 4:4:4.
    assert [layer[1:3] for layer in image.layer] == [(1, 1)] * 3


def test_lr_is_bicubic_of_hr_exactly_with_png(real_jpeg):
    protocol = PRESETS["faces128"]
    sample = make_sample(real_jpeg, protocol, Encoding(codec="png"))
    hr = _decode(sample.components["hr.png"])
    source = _decode(real_jpeg)
    left, top = (178 - 178) // 2, (218 - 178) // 2
    expected_hr = source.crop((left, top, left + 178, top + 178)).resize(
        (128, 128), Image.Resampling.BICUBIC
    )
    assert np.array_equal(np.asarray(hr), np.asarray(expected_hr))
    for scale in (4, 8):
        lr = _decode(sample.components[f"x{scale}.png"])
        expected = hr.resize((128 // scale,) * 2, Image.Resampling.BICUBIC)
        assert np.array_equal(np.asarray(lr), np.asarray(expected))


def _corrupt_png(real: bytes) -> bytes:
    """A PNG whose image data was damaged after encoding (its CRC no longer matches)."""
    data = bytearray(_encode(_decode(real), "PNG"))
    start = data.index(b"IDAT") + 100
    data[start : start + 8] = b"\xff" * 8
    return bytes(data)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda real: b"", "empty file"),
        (lambda real: real[: len(real) // 2], "corrupt or truncated"),
        (lambda real: _corrupt_png(real), "corrupt or truncated"),
        (lambda real: b"this is not an image at all", "not an image"),
        (lambda real: _encode(_decode(real).resize((100, 120))), "too small: 100x120"),
    ],
    ids=["zero-byte", "truncated", "corrupt-data", "non-image", "too-small"],
)
def test_bad_images_are_rejected_with_a_reason(real_jpeg, make, reason):
    with pytest.raises(RejectedImage, match=reason):
        make_sample(make(real_jpeg), PRESETS["seed"], Encoding())


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P"])
def test_other_colour_modes_are_converted_to_rgb(real_jpeg, mode):
    image = _decode(real_jpeg).convert(mode)
    data = _encode(image, "PNG" if mode in ("RGBA", "P") else "JPEG")
    sample = make_sample(data, PRESETS["faces128"], Encoding())
    assert sample.converted_from == mode
    hr = _decode(sample.components["hr.jpg"])
    assert hr.mode == "RGB" and hr.size == (128, 128)
    if mode == "L":
        pixels = np.asarray(hr).astype(int)
        assert np.abs(pixels[..., 0] - pixels[..., 1]).max() <= 2  # still grey


def test_lr_is_lossless_by_default_while_hr_stays_jpeg(real_jpeg):
    """Issue 13: LR stored as JPEG q95 was 38.9 dB from the clean bicubic LR; by default the
    LR images are now exactly the bicubic of the HR image the sample was made from."""
    protocol = PRESETS["faces128"]
    lossless = make_sample(real_jpeg, protocol, Encoding(codec="png"))
    default = make_sample(real_jpeg, protocol, Encoding())
    assert default.components["hr.jpg"].startswith(b"\xff\xd8")  # JPEG for nvJPEG
    for scale in (4, 8):
        lr = np.asarray(_decode(default.components[f"x{scale}.png"]))
        assert np.array_equal(lr, np.asarray(_decode(lossless.components[f"x{scale}.png"])))
    old = make_sample(real_jpeg, protocol, Encoding(lr_codec="jpeg"))
    jpeg_lr = np.asarray(_decode(old.components["x4.jpg"]))
    assert not np.array_equal(jpeg_lr, np.asarray(_decode(default.components["x4.png"])))


def test_png_codec_is_lossless_and_named_png(real_jpeg):
    sample = make_sample(real_jpeg, PRESETS["seed"], Encoding(codec="png"))
    assert sorted(sample.components) == ["hr.png", "x4.png", "x8.png"]
    assert all(data.startswith(b"\x89PNG") for data in sample.components.values())
