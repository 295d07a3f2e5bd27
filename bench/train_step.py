"""Train-step throughput and model FLOP utilisation, every setting side by side in one run.

    python bench/train_step.py [--phases pretrain,gan] [--precisions fp32,bf16,fp16]
        [--modes eager,compile] [--layouts nchw,cl] [--batch-sizes 16,32,64]
        [--preset faces128] [--scale 4] [--blocks 16 --channels 64 --d-channels 64]
        [--steps 10] [--warmup 3] [--json FILE]

Each row builds `SRGANModel` as the trainer does (one process) and times `train_step` on
batches already on the device, so it measures the model alone; bench/trainer.py measures what
the loader, DDP, logging and checkpoints add. MFU = images/s x FLOPs per image (counted,
pipeline/training/perf.py) / the peak of a large matmul in the row's precision, measured
first in the same run. A row that fails (out of memory, a compile error) says so and the table
goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from pipeline.training.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.training.perf import (  # noqa: E402
    matmul_peak,
    peak_label,
    seconds_per_step,
    step_flops,
)
from preprocess.protocol import PRESETS  # noqa: E402


def measure(cfg: TrainConfig, hr_size: int, device: torch.device, warmup: int,
            steps: int) -> dict:  # fmt: skip
    """One row: ms/step, images/s and peak device memory, or the error that stopped it."""
    cuda = device.type == "cuda"
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = seconds_per_step(cfg, hr_size, device, warmup, steps)
    except Exception as exc:  # noqa: BLE001 - a failed row is reported, the table goes on
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        if cuda:
            torch.cuda.empty_cache()
    memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"ms_per_step": seconds * 1e3, "images_per_s": cfg.batch_size / seconds,
            "memory_gib": memory}  # fmt: skip


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phases", default="pretrain,gan")
    p.add_argument("--precisions", default="fp32,bf16,fp16" if cuda else "fp32,bf16")
    p.add_argument("--modes", default="eager,compile" if cuda else "eager")
    p.add_argument("--layouts", default="nchw,cl")
    p.add_argument("--batch-sizes", default="16,32,64" if cuda else "16")
    p.add_argument("--preset", default="faces128", choices=sorted(PRESETS))
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--blocks", type=int, default=ModelConfig.blocks)
    p.add_argument("--channels", type=int, default=ModelConfig.channels)
    p.add_argument("--d-channels", type=int, default=ModelConfig.d_channels)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-seconds", type=float, default=2.0)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()

    device = torch.device("cuda" if cuda else "cpu")
    hr_size = PRESETS[args.preset].hr_size
    model_cfg = ModelConfig(args.blocks, args.channels, args.d_channels)
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"train step on {name}: {args.preset} HR {hr_size}, x{args.scale}, B{args.blocks} "
          f"C{args.channels} D{args.d_channels}, torch {torch.__version__}")  # fmt: skip
    unit, unit_name = (1e12, "TFLOP/s") if cuda else (1e9, "GFLOP/s")
    peaks = {}
    for precision in args.precisions.split(","):
        peaks[precision] = matmul_peak(device, precision, args.peak_seconds)
        label = peak_label(device, precision)
        print(f"peak ({label} matmul): {peaks[precision] / unit:,.1f} {unit_name}")
    header = (f"{'phase':8} {'prec':5} {'mode':7} {'layout':6} {'batch':>5} {'ms/step':>9} "
              f"{'img/s':>9} {unit_name:>8} {'MFU':>6} {'mem GiB':>8}")  # fmt: skip
    rows = []
    for phase in args.phases.split(","):
        base = TrainConfig(phase=phase, scale=args.scale, model=model_cfg, vgg_weights="random")
        flops = step_flops(base, hr_size)
        print(f"\n{phase}: {flops / 1e9:.1f} GFLOP per image (counted)")
        print(f"{header}\n" + "-" * len(header))
        settings = itertools.product(
            args.precisions.split(","), args.modes.split(","), args.layouts.split(","),
            map(int, args.batch_sizes.split(",")),
        )  # fmt: skip
        for precision, mode, layout, batch in settings:
            cfg = dataclasses.replace(
                base, precision=precision, compile="on" if mode == "compile" else "off",
                channels_last=layout == "cl", batch_size=batch,
            )  # fmt: skip
            row = measure(cfg, hr_size, device, args.warmup, args.steps)
            row.update(phase=phase, precision=precision, mode=mode, layout=layout, batch=batch)
            label = f"{phase:8} {precision:5} {mode:7} {layout:6} {batch:>5}"
            if "error" in row:
                print(f"{label} failed: {row['error'][:90]}", flush=True)
            else:
                row["flop_per_s"] = row["images_per_s"] * flops
                row["mfu"] = row["images_per_s"] * flops / peaks[precision]
                print(f"{label} {row['ms_per_step']:9.1f} {row['images_per_s']:9.1f} "
                      f"{row['flop_per_s'] / unit:8.1f} {row['mfu']:6.1%} {row['memory_gib']:8.2f}",
                      flush=True)  # fmt: skip
            rows.append(row)
        done = [r for r in rows if r["phase"] == phase and "images_per_s" in r]
        if done:
            best = max(done, key=lambda r: r["images_per_s"])
            print(f"fastest {phase}: {best['precision']} {best['mode']} {best['layout']} "
                  f"batch {best['batch']}: {best['images_per_s']:.1f} img/s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"device": name, "peaks": peaks, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
