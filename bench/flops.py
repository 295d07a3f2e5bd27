"""FLOPs per image of one training step, counted, and the images/s ceiling they imply.

    python bench/flops.py [--peak-tflops 790]

For each preset (HR size) and scale: one pretrain step (G forward + backward, pixel MSE) and
one GAN step (G forward/backward; VGG19 to relu5_4 on SR and HR; D on SR for G's adversarial
term; D forward/backward on real and on fake), exactly as `SRGANModel.train_step` runs them,
counted with torch.utils.flop_counter on the paper's networks (B16, 64 channels, D 64) at
batch 1. Optimizer updates and elementwise ops are not counted (FlopCounterMode counts matmuls
and convolutions), which is what model FLOP utilisation is measured against. The ceiling is
peak / FLOPs: what a device running at its peak could reach, never more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from pipeline.training.config import TrainConfig  # noqa: E402
from pipeline.training.perf import forward_flops, step_flops  # noqa: E402
from preprocess.protocol import PRESETS  # noqa: E402

# H200 dense bf16 matmul, measured on one (shared/NOTES.md); bench/train_step.py measures the
# peak of the device it runs on.
H200_BF16_TFLOPS = 790.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"GFLOP per image of one training step (batch 1; ceiling at {args.peak_tflops:g} "
          "TFLOP/s)")  # fmt: skip
    header = (f"{'preset':9} {'HR':>4} {'scale':>5} {'pretrain':>9} {'gan':>8} "
              f"{'gan - G':>8} {'G fwd':>6} {'D fwd':>6} {'pretrain img/s':>15} "
              f"{'gan img/s':>10}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for preset, protocol in PRESETS.items():
        for scale in protocol.scales:
            pre = step_flops(TrainConfig(phase="pretrain", scale=scale), protocol.hr_size)
            gan = step_flops(TrainConfig(phase="gan", scale=scale), protocol.hr_size)
            g_fwd, d_fwd = forward_flops(TrainConfig(scale=scale), protocol.hr_size)
            peak = args.peak_tflops * 1e12
            print(
                f"{preset:9} {protocol.hr_size:>4} {scale:>5} {pre / 1e9:9.1f} {gan / 1e9:8.1f} "
                f"{(gan - pre) / 1e9:8.1f} {g_fwd / 1e9:6.1f} {d_fwd / 1e9:6.1f} "
                f"{peak / pre:15,.0f} {peak / gan:10,.0f}"
            )


if __name__ == "__main__":
    main()
