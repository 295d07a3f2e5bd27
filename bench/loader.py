"""Loader throughput: images/s of each loader on the same shards, side by side in one run.

    python bench/loader.py --data OUT [--scale 4|8] [--batch-size N] [--seconds S]
        [--prefetch 2[,4,...]]

Rows: DALI in CPU-only mode, the reference loader (webdataset + DataLoader), and DALI with
GPU decoding when CUDA is present; each at 1 thread/worker and at all cores, and at each
--prefetch depth (DALI's prefetch queue, the DataLoader's prefetch factor). Each row runs
whole epochs (training settings: shuffle and flip on) for at least --seconds after a warm-up
batch, and counts the images that reached the caller as tensors on the training device.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from pipeline.data import LoaderConfig, build_loader  # noqa: E402
from pipeline.data.factory import dali_available  # noqa: E402
from pipeline.runtime.distributed import ProcessPlace  # noqa: E402


def measure(cfg: LoaderConfig, seconds: float) -> float:
    loader = build_loader(cfg, ProcessPlace())
    iterator = iter(loader)
    next(iterator)  # warm-up: pipeline build, first prefetch
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in iterator:
            if batch.hr.is_cuda:
                torch.cuda.synchronize()
            images += batch.hr.shape[0]
            if time.perf_counter() - start >= seconds:
                break
        else:
            iterator = iter(loader)  # next epoch
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="srgan-preprocess output")
    parser.add_argument("--scale", type=int, default=4, choices=[4, 8])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--split", default="train")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--prefetch", default=str(LoaderConfig.prefetch), help="comma list")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = []
    setups = [("reference", "cpu")]
    if dali_available():
        setups.insert(0, ("DALI", "cpu"))
        if torch.cuda.is_available():
            setups.append(("DALI", "gpu"))
    else:
        print("nvidia-dali is not installed: DALI rows not measured")
    depths = [int(d) for d in args.prefetch.split(",")]
    for name, device in setups:
        for threads, prefetch in itertools.product(sorted({1, cores}), depths):
            cfg = LoaderConfig(
                data=args.data,
                split=args.split,
                scale=args.scale,
                batch_size=args.batch_size,
                backend="dali" if name == "DALI" else "reference",
                decode_device=device,
                threads=threads,
                prefetch=prefetch,
            )
            rows.append((name, device, threads, prefetch, measure(cfg, args.seconds)))
    base_depth = LoaderConfig.prefetch if LoaderConfig.prefetch in depths else depths[0]
    baseline = next(
        r[4] for r in rows if r[0] == "reference" and r[2] == cores and r[3] == base_depth
    )
    print(
        f"\n{args.data} {args.split}, scale {args.scale}, batch {args.batch_size}, "
        f"{cores} CPU cores, {torch.__version__}"
    )
    vs = f"vs reference ({cores} workers, prefetch {base_depth})"
    print(f"| loader | decode | CPU threads | prefetch | images/s | {vs} |")
    print("|---|---|---|---|---|---|")
    for name, device, threads, prefetch, rate in rows:
        print(
            f"| {name} | {device} | {threads} | {prefetch} | {rate:.0f} | {rate / baseline:.2f}x |"
        )


if __name__ == "__main__":
    main()
