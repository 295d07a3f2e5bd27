"""The learning rate at each step: a linear warm-up, then constant, cosine, or the paper's drop.

Why a warm-up: Adam's first steps use second-moment estimates from a handful of batches, and
BatchNorm's statistics are still moving; a full-size step then throws a fresh network far
off. Why cosine: it ends at `min_lr`, so the last evaluations are of weights that stopped
wandering, with no milestones tuned to the run's length. Measured (docs/RECIPE.md): at a
constant 1e-3 the val curve fell up to 1.56 dB below an earlier evaluation, with warm-up and
cosine by 0.01 dB at most; at the same peak, a constant lr with the weight average ended
higher than cosine with it, and cosine from twice the peak matched it.
"""

from __future__ import annotations

import math

from pipeline.training.config import OptimConfig

SCALING_POWER = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def lr_factor(optim: OptimConfig, global_batch: int) -> float:
    """What `lr` and `min_lr` are multiplied by at `global_batch` (OptimConfig.lr_scaling).
    Why: a batch 16 times larger takes 16 times fewer steps over the same images, and at the
    same lr ends short of where the small batch got. On the short CPU calibration the sqrt rule
    did not close that gap, it widened it (its lr was already at the network's edge:
    docs/RECIPE.md, "A batch that fills the GPU"); default "none"."""
    return (global_batch / optim.lr_reference_batch) ** SCALING_POWER[optim.lr_scaling]


def learning_rate(
    optim: OptimConfig, phase: str, step: int, steps: int, global_batch: int | None = None
) -> float:
    """The lr for the update that takes the weights from `step` to `step + 1`, scaled to
    `global_batch` (default: the reference batch, unscaled)."""
    factor = 1.0 if global_batch is None else lr_factor(optim, global_batch)
    return factor * _unscaled(optim, phase, step, steps)


def _unscaled(optim: OptimConfig, phase: str, step: int, steps: int) -> float:
    peak = optim.lr
    warmup = min(optim.warmup_steps, max(steps - 1, 0))
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    if optim.schedule == "constant":
        return peak
    if optim.schedule == "paper":
        # pretrain constant; GAN: 1e-4, then 1e-5 for the second half (Ledig et al. 2017)
        dropped = phase == "gan" and step >= optim.gan_lr_drop_at * steps
        return peak * optim.gan_lr_drop if dropped else peak
    progress = min((step - warmup) / max(steps - warmup, 1), 1.0)  # 0 after warm-up, -> 1
    return optim.min_lr + (peak - optim.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
