"""How big a release run is: one table, so that the GPU default, the CPU fallback and the tests'
smoke run differ only where they must.

The GPU size is what one H200 trained in about 7 minutes on the shared sample (issue 22's runs:
x4 3,500 steps in 2.6 min, x8 5,000 in 4.5 min with its val PSNR flat after 3,750). The CPU size
is the calibration network (docs/RECIPE.md), given about an hour of a 2-core machine in bf16
where the CPU has it (train's `--precision auto`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReleaseSize:
    """The generator and its training for each scale (SRResNet pretrain, MSE, EMA weights)."""

    name: str
    blocks: int
    channels: int
    batch_size: int  # per process
    lr: float  # peak, after a linear warm-up, then a cosine decay to 0 at the last step
    warmup_steps: int
    steps_x4: int
    steps_x8: int
    eval_every: int
    precision: str
    loader_threads: int
    about: str

    def steps(self, scale: int) -> int:
        return {4: self.steps_x4, 8: self.steps_x8}[scale]

    def train_args(self, scale: int) -> list[str]:
        """pipeline.train's flags for `scale`, after the scale's configs/x<scale>.toml."""
        return [
            "--blocks",
            str(self.blocks),
            "--channels",
            str(self.channels),
            "--batch-size",
            str(self.batch_size),
            "--lr",
            f"{self.lr:g}",
            "--schedule",
            "cosine",
            "--warmup-steps",
            str(self.warmup_steps),
            "--min-lr",
            "0",
            "--ema-decay",
            "0.999",
            "--steps",
            str(self.steps(scale)),
            "--eval-every",
            str(self.eval_every),
            "--checkpoint-every",
            str(self.eval_every),
            "--precision",
            self.precision,
            "--loader-threads",
            str(self.loader_threads),
        ]


SIZES = {
    "gpu": ReleaseSize(
        name="gpu",
        blocks=16,
        channels=64,
        batch_size=64,
        lr=1e-3,
        warmup_steps=300,
        steps_x4=3500,
        steps_x8=4000,
        eval_every=500,
        precision="bf16",
        loader_threads=8,
        about="paper-size SRResNet-B16 (64 channels); about 7 minutes of training on one H200",
    ),
    "cpu": ReleaseSize(
        name="cpu",
        blocks=4,
        channels=32,
        batch_size=16,
        lr=2e-3,
        warmup_steps=50,
        steps_x4=3500,
        steps_x8=3500,
        eval_every=1000,
        precision="auto",
        loader_threads=2,
        about="SRResNet-B4 (32 channels), the calibration network; about an hour on 2 CPU cores",
    ),
    "smoke": ReleaseSize(
        name="smoke",
        blocks=1,
        channels=8,
        batch_size=4,
        lr=1e-3,
        warmup_steps=2,
        steps_x4=6,
        steps_x8=6,
        eval_every=3,
        precision="fp32",
        loader_threads=1,
        about="a few steps of a tiny network: shows the release command working, not quality",
    ),
}
