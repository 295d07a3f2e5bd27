"""Procedural face-like images in the CelebA layout, for machines without CelebA.

Not faces of anyone: each image is drawn from its index alone (deterministic), with the
geometry of CelebA's aligned crops (178x218, eyes near y=111) and the things an SR model must
learn to restore: hair strands, skin texture, eyelashes, lip edges, a textured background.
Everything made from them is labelled synthetic (the marker file below, then the manifest and
MLflow), so nobody mistakes results on them for results on CelebA.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from preprocess.atomic import write_bytes
from preprocess.celeba import IMAGES_DIR, PARTITION_FILE, SYNTHETIC_MARKER

WIDTH, HEIGHT = 178, 218
# Fractions of CelebA's official split: 162,770 / 19,867 / 19,962 of 202,599.
SPLIT_FRACTIONS = (0.8034, 0.0981)

SKIN_TONES = [
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 130),
    (198, 134, 96),
    (141, 85, 54),
    (95, 60, 40),
    (232, 190, 172),
]
HAIR_COLOURS = [
    (20, 15, 12),
    (60, 40, 25),
    (110, 75, 40),
    (190, 150, 90),
    (150, 60, 30),
    (200, 200, 195),
    (40, 30, 30),
]
IRIS_COLOURS = [(70, 45, 25), (40, 90, 140), (60, 110, 70), (110, 80, 40), (30, 30, 30)]


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _background(rng: np.random.Generator) -> Image.Image:
    top, bottom = rng.integers(30, 230, size=(2, 3))
    t = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    gradient = np.broadcast_to((1 - t) * top + t * bottom, (HEIGHT, WIDTH, 3))
    # Smooth low-frequency blotches (a coarse grid upsampled bicubically) and fine grain,
    # so the background is not trivially flat.
    coarse = rng.normal(128, 18, size=(6, 5, 3)).clip(0, 255).astype(np.uint8)
    blotches = np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC))
    canvas = gradient + (blotches.astype(np.float32) - 128) + rng.normal(0, 3, size=gradient.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def _hair_strands(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    colour: tuple[int, ...],
    box: tuple[float, float, float, float],
    count: int,
) -> None:
    """Thin strands inside the ellipse `box`, lighter and darker than the hair colour."""
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    rx, ry = (right - left) / 2, (bottom - top) / 2
    for _ in range(count):
        radius, theta = np.sqrt(rng.uniform(0, 1)), rng.uniform(0, 2 * np.pi)
        x, y = cx + rx * radius * np.cos(theta), cy + ry * radius * np.sin(theta)
        length = rng.uniform(6, 20)
        angle = np.pi / 2 + (x - cx) / rx * 0.6 + rng.normal(0, 0.15)  # falls outward and down
        end = (x + length * np.cos(angle), y + length * np.sin(angle))
        shade = rng.integers(-28, 29)
        draw.line([(x, y), end], fill=tuple(int(np.clip(c + shade, 0, 255)) for c in colour))


def draw_face(index: int) -> Image.Image:
    """The face for `index`; the same index always gives the same pixels."""
    rng = np.random.default_rng(index)
    image = _background(rng)
    draw = ImageDraw.Draw(image)
    cx = WIDTH / 2 + rng.uniform(-3, 3)
    face_w, face_h = rng.uniform(38, 46), rng.uniform(54, 62)
    face_cy = rng.uniform(122, 128)
    skin = _jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 12)
    hair = _jitter(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 10)

    # Hair mass behind the head, with strands; then neck, shoulders and the face over them.
    hair_box = (
        cx - face_w * rng.uniform(1.15, 1.5),
        face_cy - face_h * 1.3,
        cx + face_w * rng.uniform(1.15, 1.5),
        face_cy + face_h * rng.uniform(0.3, 1.2),
    )
    draw.ellipse(hair_box, fill=hair)
    _hair_strands(draw, rng, hair, hair_box, count=int(rng.integers(300, 500)))
    shirt = tuple(int(v) for v in rng.integers(0, 255, size=3))
    draw.rectangle((cx - 18, face_cy + face_h * 0.6, cx + 18, HEIGHT), fill=_jitter(rng, skin, 8))
    draw.ellipse((cx - 85, face_cy + face_h * 1.05, cx + 85, HEIGHT + 90), fill=shirt)
    for side in (-1, 1):  # ears
        ex = cx + side * face_w
        draw.ellipse((ex - 7, face_cy - 14, ex + 7, face_cy + 10), fill=_jitter(rng, skin, 6))
    draw.ellipse((cx - face_w, face_cy - face_h, cx + face_w, face_cy + face_h), fill=skin)
    # Fringe over the forehead, with strands of its own.
    fringe = (
        cx - face_w * 1.08,
        face_cy - face_h * 1.12,
        cx + face_w * 1.08,
        face_cy - face_h * rng.uniform(0.25, 0.55),
    )
    draw.chord(fringe, start=180, end=360, fill=hair)
    top_half = (fringe[0] + 6, fringe[1] + 4, fringe[2] - 6, (fringe[1] + fringe[3]) / 2)
    _hair_strands(draw, rng, hair, top_half, count=int(rng.integers(60, 120)))

    # Eyes at CelebA's aligned positions (about x=69 and x=108, y=111), with some variation.
    eye_y = 111 + rng.uniform(-3, 3)
    eye_dx = rng.uniform(17, 22)
    iris = _jitter(rng, IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))], 15)
    brow = _jitter(rng, hair, 15)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - 10, eye_y - 5, ex + 10, eye_y + 5), fill=(245, 242, 238))
        draw.ellipse((ex - 5, eye_y - 5, ex + 5, eye_y + 5), fill=iris)
        draw.ellipse((ex - 2, eye_y - 2, ex + 2, eye_y + 2), fill=(10, 10, 10))
        draw.point((ex + 1.5, eye_y - 2), fill=(255, 255, 255))
        draw.arc(
            (ex - 11, eye_y - 7, ex + 11, eye_y + 7), start=190, end=350, fill=(30, 20, 15), width=2
        )
        for k in range(7):  # eyelashes: one-pixel detail that only a good SR model brings back
            lx = ex - 9 + k * 3
            draw.line([(lx, eye_y - 6), (lx + side * 1.5, eye_y - 9)], fill=(25, 18, 12))
        by = eye_y - rng.uniform(11, 15)
        draw.line([(ex - 11, by + 2), (ex, by - 1), (ex + 11, by + 1)], fill=brow, width=3)

    # Nose: a shaded ridge and nostrils.
    nose_y = 135 + rng.uniform(-3, 3)
    shade = tuple(int(c * 0.8) for c in skin)
    draw.line([(cx + 2, eye_y + 6), (cx + 4, nose_y)], fill=shade, width=2)
    draw.ellipse((cx - 8, nose_y - 2, cx - 3, nose_y + 2), fill=tuple(int(c * 0.55) for c in skin))
    draw.ellipse((cx + 3, nose_y - 2, cx + 8, nose_y + 2), fill=tuple(int(c * 0.55) for c in skin))

    # Mouth (CelebA's mouth corners are near y=152).
    mouth_y = 153 + rng.uniform(-3, 3)
    mouth_w = rng.uniform(13, 19)
    lips = _jitter(rng, (180, 80, 80), 30)
    smile = rng.uniform(0, 6)
    draw.chord(
        (cx - mouth_w, mouth_y - 5 - smile, cx + mouth_w, mouth_y + 5 + smile),
        start=0,
        end=180,
        fill=lips,
    )
    draw.chord(
        (cx - mouth_w, mouth_y - 5, cx + mouth_w, mouth_y + 3),
        start=180,
        end=360,
        fill=tuple(int(c * 0.9) for c in lips),
    )
    draw.line([(cx - mouth_w, mouth_y), (cx + mouth_w, mouth_y)], fill=(90, 30, 30), width=1)

    # Soften the drawing a little, then add skin and sensor texture.
    image = image.filter(ImageFilter.GaussianBlur(radius=0.6))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0, rng.uniform(2, 5), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def split_of(index: int, count: int) -> int:
    """Official split code (0 train, 1 val, 2 test) by position, as CelebA orders them."""
    train_end = round(count * SPLIT_FRACTIONS[0])
    val_end = train_end + max(1, round(count * SPLIT_FRACTIONS[1]))
    return 0 if index < train_end else 1 if index < val_end else 2


def write_demo_celeba(root: Path, count: int, quality: int = 90) -> None:
    """Write `count` faces as ROOT/img_align_celeba/NNNNNN.jpg with a partition file."""
    if count < 3:
        raise ValueError(f"count must be at least 3 (one image per split), got {count}")
    images = root / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        name = f"{index + 1:06d}.jpg"
        target = images / name
        if not target.is_file():
            buffer = io.BytesIO()
            draw_face(index).save(buffer, format="JPEG", quality=quality)
            write_bytes(target, buffer.getvalue())
        lines.append(f"{name} {split_of(index, count)}")
    write_bytes(root / PARTITION_FILE, ("\n".join(lines) + "\n").encode())
    write_bytes(
        root / SYNTHETIC_MARKER,
        b"Synthetic faces drawn by `srgan-preprocess demo-data`; not CelebA.\n",
    )
