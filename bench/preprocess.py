"""Preprocessing throughput on the real CelebA sample, printed as tables.

1. The whole `srgan-preprocess shard` command on every image of ../shared/data/celeba with 1
   and 2 workers (images/s, and the speed-up of 2 over 1).
2. The resize step alone (centre crop, HR resize, one LR resize per scale, single thread) with
   the installed pillow-simd and with plain pillow, each in its own process in this same run,
   so the ratio is measured under the same machine load.

    python bench/preprocess.py [--preset seed|faces128] [--images N]

Plain pillow is installed once into a cache folder (--plain-pillow-dir) from the package index.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELEBA = ROOT.parent / "shared" / "data" / "celeba"
PLAIN_PILLOW = "pillow==13.0.0"

RESIZE_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import PIL
from PIL import Image
sys.path.insert(0, sys.argv[4])
from preprocess.images import center_crop, resize_bicubic
from preprocess.protocol import PRESETS
protocol = PRESETS[sys.argv[2]]
paths = sorted(Path(sys.argv[1]).iterdir())[: int(sys.argv[3])]
images = []
for p in paths:
    im = Image.open(p); im.load(); images.append(im.convert("RGB"))
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    for im in images:
        hr = resize_bicubic(center_crop(im, protocol.crop), protocol.hr_size)
        for s in protocol.scales:
            resize_bicubic(hr, protocol.lr_size(s))
    best = min(best, time.perf_counter() - start)
print(json.dumps({"pil": PIL.__version__, "file": PIL.__file__, "seconds": best,
                  "images": len(images)}))
"""


def run_shard(preset: str, workers: int, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "preprocess.cli",
            "shard",
            "--celeba-root",
            str(CELEBA),
            "--out",
            str(out),
            "--preset",
            preset,
            "--workers",
            str(workers),
            "--no-progress",
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    return time.perf_counter() - start


def ensure_plain_pillow(target: Path) -> Path:
    if not (target / "PIL").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(target),
                PLAIN_PILLOW,
            ],
            check=True,
        )
    return target


def run_resize(preset: str, count: int, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RESIZE_SCRIPT,
            str(CELEBA / "img_align_celeba"),
            preset,
            str(count),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="seed", choices=["seed", "faces128"])
    parser.add_argument("--images", type=int, default=2000, help="images for the resize test")
    parser.add_argument(
        "--plain-pillow-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "srgan-bench-plain-pillow",
    )
    args = parser.parse_args()
    if not (CELEBA / "img_align_celeba").is_dir():
        sys.exit(f"bench: real CelebA sample not found at {CELEBA}")
    count = sum(1 for _ in (CELEBA / "img_align_celeba").iterdir())
    print(f"machine: {os.cpu_count()} CPUs; {count} images from {CELEBA}; preset {args.preset}")

    print("\n| workers | seconds | images/s | speed-up |\n|---|---|---|---|")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            seconds = run_shard(args.preset, workers, Path(tmp) / f"w{workers}")
            rates[workers] = count / seconds
            print(
                f"| {workers} | {seconds:.1f} | {rates[workers]:.0f} | "
                f"{rates[workers] / rates[1]:.2f}x |"
            )

    plain_dir = ensure_plain_pillow(args.plain_pillow_dir)
    simd = run_resize(args.preset, args.images, None)
    plain = run_resize(args.preset, args.images, str(plain_dir))
    if simd["file"] == plain["file"]:
        sys.exit("bench: both resize runs imported the same PIL; the comparison is void")
    print(f"\nresize step alone, {simd['images']} images, 1 thread, best of 3:")
    print("| PIL | seconds | images/s |\n|---|---|---|")
    for label, r in (("installed " + simd["pil"], simd), ("plain pillow " + plain["pil"], plain)):
        print(f"| {label} | {r['seconds']:.2f} | {r['images'] / r['seconds']:.0f} |")
    print(f"pillow-simd speed-up over plain pillow: {plain['seconds'] / simd['seconds']:.2f}x")


if __name__ == "__main__":
    main()
