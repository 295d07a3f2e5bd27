"""Start-up, evaluation and tracking cost at the full CelebA size, 1 process against 2.

    python bench/scale.py [--fraction 1.0] [--work DIR] [--pool 500] [--train-steps 60]

Builds demo-face shards with CelebA's split sizes (162,770 / 19,867 / 19,962 faces, `faces128`;
--fraction takes that part of each split): `--pool` distinct procedural faces (drawing one takes
about 17 ms) linked under every CelebA name, then the real `srgan-preprocess shard`. Then,
side by side in one run, every process on one CPU thread (as torchrun sets it for several
processes per node):
- time to the first training batch with 1 and 2 processes (`pipeline.train`'s own log line;
  the shard check is part of it);
- one full evaluation of the val split with 1 process (bicubic baseline computed, then cached)
  and with 2 (`pipeline.evaluate`: images per rank, wall time);
- a training window with MLflow tracking on (SQLite, a record every 5 steps) and off;
- the metric cost per image at HR 128 and HR 256 (SR scores; bicubic upscaling + its scores),
  and from it, labelled ESTIMATE with its formula, the metric time of CelebA's whole val split
  before and after distributed evaluation at 1, 8 and 64 ranks (none of which ran).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from pipeline.archs import SRResNet  # noqa: E402
from pipeline.evaluation import image_scores  # noqa: E402
from pipeline.evaluation.metrics import bicubic_upscale  # noqa: E402
from pipeline.training.config import ModelConfig, TrainConfig  # noqa: E402
from preprocess.celeba import IMAGES_DIR, PARTITION_FILE, SYNTHETIC_MARKER  # noqa: E402
from preprocess.demo_faces import write_demo_celeba  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CELEBA_SPLITS = {"train": 162_770, "val": 19_867, "test": 19_962}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def build_shards(work: Path, fraction: float, pool: int) -> Path:
    """Demo faces under CelebA's names and split sizes, sharded by srgan-preprocess."""
    shards = work / "shards"
    if (shards / "manifest.json").is_file():
        print(f"shards: reusing {shards}")
        return shards
    drawn, root = work / "pool", work / "celeba"
    start = time.perf_counter()
    write_demo_celeba(drawn, pool)
    faces = sorted((drawn / IMAGES_DIR).iterdir())
    shutil.rmtree(root, ignore_errors=True)
    (root / IMAGES_DIR).mkdir(parents=True)
    lines, number = [], 0
    for code, size in enumerate(CELEBA_SPLITS.values()):
        for _ in range(max(1, round(size * fraction))):
            name = f"{number + 1:06d}.jpg"
            (root / IMAGES_DIR / name).symlink_to(faces[number % len(faces)])
            lines.append(f"{name} {code}")
            number += 1
    (root / PARTITION_FILE).write_text("\n".join(lines) + "\n")
    (root / SYNTHETIC_MARKER).write_text("bench/scale.py: demo faces, linked many times\n")
    print(f"demo CelebA: {number:,} names over {pool} drawn faces in "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "preprocess.cli", "shard", "--celeba-root", str(root),
                    "--out", str(shards), "--preset", "faces128", "--workers",
                    str(os.cpu_count())], cwd=ROOT, check=True)  # fmt: skip
    print(f"shards: {time.perf_counter() - start:.0f} s")
    return shards


def torchrun(nproc: int, module: str, *args: str) -> tuple[float, str]:
    """Wall seconds and stderr of `torchrun --nproc_per_node=nproc -m module args`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", module, *args]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **ONE_THREAD})  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{module} on {nproc} process(es) failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stderr


def train_args(args: argparse.Namespace, shards: Path, out: Path, steps: int, uri: str) -> list:
    return ["--data", str(shards), "--out", str(out), "--scale", "4", "--phase", "pretrain",
            "--steps", str(steps), "--batch-size", str(args.batch_size), "--blocks",
            str(args.blocks), "--channels", str(args.channels), "--precision", "fp32",
            "--log-every", "5", "--eval-every", str(10**9), "--checkpoint-every", str(10**9),
            "--eval-batches", "1", "--loader-threads", "1", "--tracking-uri", uri]  # fmt: skip


def first_batch(stderr: str) -> tuple[float, float]:
    found = re.search(r"first batch ([\d.]+) s after start-up began \(shards checked in "
                      r"([\d.]+) s\)", stderr)  # fmt: skip
    if found is None:
        raise RuntimeError(f"no first-batch line in:\n{stderr[-2000:]}")
    return float(found[1]), float(found[2])


def images_per_s(stderr: str) -> float:
    found = re.search(r"([\d.]+) images/s since the first batch", stderr)
    if found is None:
        raise RuntimeError(f"no throughput line in:\n{stderr[-2000:]}")
    return float(found[1])


def metric_ms(hr: int, scale: int = 4, images: int = 8, repeats: int = 3) -> tuple[float, float]:
    """ms per image, one thread, best of `repeats` after a warm-up: SR scores; bicubic
    upscaling plus its scores."""
    torch.set_num_threads(1)
    sr, target = torch.rand(images, 3, hr, hr), torch.rand(images, 3, hr, hr)
    lr = torch.rand(images, 3, hr // scale, hr // scale)

    def best(fn) -> float:  # type: ignore[no-untyped-def]
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times) / images * 1e3

    return (best(lambda: image_scores(sr, target, scale)),
            best(lambda: image_scores(bicubic_upscale(lr, scale), target, scale)))  # fmt: skip


def metric_rows(images: int = 8, repeats: int = 3) -> list[tuple[str, str]]:
    """The measured metric cost per image, then what it makes of a whole CelebA val split:
    an ESTIMATE (no run of 19,867 images behind it, nor more than 2 processes), printed with
    its formula. Before: rank 0 alone scored SR and bicubic for every image; after: bicubic is
    cached and each of W ranks scores 1/W of the images."""
    rows = []
    val = CELEBA_SPLITS["val"]
    for hr in (128, 256):
        sr_ms, bicubic_ms = metric_ms(hr, images=images, repeats=repeats)
        costs = f"SR scores {sr_ms:.2f} ms, bicubic + scores {bicubic_ms:.2f} ms"
        rows.append((f"metrics per image at HR {hr}, one thread (measured)", costs))
        before = val * (sr_ms + bicubic_ms) / 1e3
        after = {w: val * sr_ms / w / 1e3 for w in (1, 8, 64)}
        rows.append((f"CelebA val metrics at HR {hr}, ESTIMATE: before -> after (1 / 8 / 64 ranks)",
                     f"{before / 60:.1f} min -> {after[1] / 60:.1f} min / {after[8]:.0f} s / "
                     f"{after[64]:.0f} s"))  # fmt: skip
    formula = (f"before = {val:,} x (SR + bicubic ms), after = {val:,} x SR ms / ranks, "
               "from the measured rows")  # fmt: skip
    return [*rows, ("ESTIMATE rows", formula)]


def print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:{width}}  {value}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fraction", type=float, default=1.0, help="of each CelebA split [1.0]")
    p.add_argument("--work", type=Path, default=Path("/tmp/srgan-scale"))
    p.add_argument("--pool", type=int, default=500, help="distinct demo faces drawn [500]")
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--metrics-only", action="store_true", help="only the metric-cost rows")
    p.add_argument("--pairs", type=int, default=2, help="tracking on/off training pairs [2]")
    p.add_argument("--metric-images", type=int, default=8, help="images per metric timing [8]")
    p.add_argument("--metric-repeats", type=int, default=3, help="metric timings, best kept [3]")
    args = p.parse_args()
    if args.metrics_only:
        print_rows(metric_rows(args.metric_images, args.metric_repeats))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    shards = build_shards(args.work, args.fraction, args.pool)
    manifest = json.loads((shards / "manifest.json").read_text())
    sizes = {s: manifest["splits"][s]["samples"] for s in CELEBA_SPLITS}
    print(f"{sizes['train']:,} / {sizes['val']:,} / {sizes['test']:,} faces, "
          f"{os.cpu_count()} cores, one thread per process, "
          f"G B{args.blocks} C{args.channels}, batch {args.batch_size}")  # fmt: skip

    rows: list[tuple[str, str]] = []
    for nproc in (1, 2):
        wall, stderr = torchrun(
            nproc,
            "pipeline.train",
            *train_args(args, shards, args.work / f"start-{nproc}", 2, "none"),
        )
        after, check = first_batch(stderr)
        rows.append((f"first training batch, {nproc} process(es)",
                     f"{after:.1f} s after start-up began (shard check {check:.1f} s); "
                     f"whole 2-step run {wall:.0f} s"))  # fmt: skip

    torch.manual_seed(0)
    run = args.work / "eval-run"
    checkpoint = run / "checkpoints" / "step-00000000.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(scale=4, model=ModelConfig(args.blocks, args.channels))
    generator = SRResNet(4, args.blocks, args.channels)
    torch.save({"step": 0, "config": cfg.to_dict(),
                "model": {"generator": generator.state_dict()}}, checkpoint)  # fmt: skip
    shutil.rmtree(shards / "baselines", ignore_errors=True)
    for nproc, label in ((1, "bicubic computed"), (1, "bicubic cached"), (2, "bicubic cached")):
        out = args.work / f"eval-{nproc}.json"
        wall, _ = torchrun(nproc, "pipeline.evaluate", "--checkpoint", str(checkpoint),
                           "--data", str(shards), "--split", "val", "--scale", "4",
                           "--batch-size", str(args.batch_size), "--loader-threads", "1",
                           "--json", str(out))  # fmt: skip
        scores = json.loads(out.read_text())
        rows.append((f"val evaluation, {nproc} process(es), {label}",
                     f"{scores['seconds']:.0f} s ({wall:.0f} s wall), images per rank "
                     f"{scores['images_per_rank']}"))  # fmt: skip

    speeds = {}
    for attempt in range(1, args.pairs + 1):
        for tracking in ("on", "off"):
            uri = f"sqlite:///{args.work / f'mlflow-{attempt}.db'}" if tracking == "on" else "none"
            out = args.work / f"train-{tracking}-{attempt}"
            shutil.rmtree(out, ignore_errors=True)
            _, stderr = torchrun(
                1, "pipeline.train", *train_args(args, shards, out, args.train_steps, uri)
            )
            speeds.setdefault(tracking, []).append(images_per_s(stderr))
    for attempt in range(args.pairs):
        on, off = speeds["on"][attempt], speeds["off"][attempt]
        rows.append((f"training window, tracking on / off (pair {attempt + 1})",
                     f"{on:.1f} / {off:.1f} img/s = {on / off:.2f}"))  # fmt: skip

    print_rows(rows + metric_rows(args.metric_images, args.metric_repeats))


if __name__ == "__main__":
    main()
