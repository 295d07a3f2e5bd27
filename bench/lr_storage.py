"""How to store the LR images losslessly: PNG or raw uint8, against JPEG q95.

For N faces of ../shared/data/celeba (faces128 protocol: HR 128, LR 32 at 4x, 16 at 8x) prints
per LR size and format: bytes per image, and decode rate on one CPU thread (PIL for the
images, numpy for raw bytes) and in DALI's CPU decoder (batches of 256, 1 thread) where DALI is
installed. Raw needs no decoding but carries no shape, so a reader must be told the size.

    python bench/lr_storage.py [--images 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from preprocess.images import Encoding, center_crop, resize_bicubic  # noqa: E402
from preprocess.protocol import PRESETS  # noqa: E402

CELEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba"


def encode(image: Image.Image, fmt: str) -> bytes:
    if fmt == "raw":
        return np.asarray(image).tobytes()
    return Encoding(codec=fmt).encode(image, fmt)  # type: ignore[arg-type]


def pil_rate(blobs: list[bytes], fmt: str, side: int, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for blob in blobs:
            if fmt == "raw":
                np.frombuffer(blob, np.uint8).reshape(side, side, 3).copy()
            else:
                with Image.open(io.BytesIO(blob)) as image:
                    np.asarray(image.convert("RGB"))
    return len(blobs) * repeat / (time.perf_counter() - start)


def dali_rate(blobs: list[bytes], repeat: int) -> float | None:
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError:
        return None
    batch = 256
    arrays = [np.frombuffer(b, np.uint8) for b in blobs[:batch]]

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None)
    def decode():  # type: ignore[no-untyped-def]
        data = fn.external_source(source=lambda: arrays, batch=True)
        return fn.decoders.image(data, device="cpu", output_type=types.RGB)

    pipe = decode()
    pipe.build()
    pipe.run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat * 4):
        pipe.run()
    return batch * repeat * 4 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    protocol = PRESETS["faces128"]
    paths = sorted((CELEBA / "img_align_celeba").iterdir())[: args.images]
    lrs: dict[int, list[Image.Image]] = {s: [] for s in protocol.scales}
    for path in paths:
        with Image.open(path) as image:
            hr = resize_bicubic(center_crop(image.convert("RGB"), protocol.crop), protocol.hr_size)
        for scale in protocol.scales:
            lrs[scale].append(resize_bicubic(hr, protocol.lr_size(scale)))
    print(f"{len(paths)} faces, faces128; decode rates in images/s on one thread")
    print(f"{'LR':>7} {'format':>6} {'bytes':>7} {'PIL/numpy':>10} {'DALI CPU':>9}")
    for scale in protocol.scales:
        side = protocol.lr_size(scale)
        for fmt in ("jpeg", "png", "raw"):
            blobs = [encode(image, fmt) for image in lrs[scale]]
            size = sum(map(len, blobs)) / len(blobs)
            rate = pil_rate(blobs, fmt, side, args.repeat)
            dali = dali_rate(blobs, args.repeat) if fmt != "raw" else None
            dali_text = f"{dali:9,.0f}" if dali else f"{'-':>9}"
            print(f"{side:>3}x{side:<3} {fmt:>6} {size:7,.0f} {rate:10,.0f} {dali_text}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
