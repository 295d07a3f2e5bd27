"""The learning-rate schedule (pipeline/training/schedule.py): warm-up, cosine, constant, the
paper's."""

from __future__ import annotations

import itertools

import pytest

from pipeline.training.config import OptimConfig
from pipeline.training.schedule import learning_rate, lr_factor


def _lrs(phase: str = "pretrain", steps: int = 100, **optim: object) -> list[float]:
    cfg = OptimConfig(**optim)  # type: ignore[arg-type]
    return [learning_rate(cfg, phase, step, steps) for step in range(steps)]


def test_warmup_rises_linearly_to_the_peak_then_cosine_decays_towards_min_lr():
    lrs = _lrs(lr=1e-3, warmup_steps=9, schedule="cosine", min_lr=1e-5)
    assert lrs[:9] == pytest.approx([1e-3 * (s + 1) / 10 for s in range(9)])
    assert lrs[9] == pytest.approx(1e-3)  # the peak right after warm-up
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))  # never rises again
    assert 1e-5 < lrs[-1] < 1.1e-5  # almost at the floor, not below it
    assert lrs[55] == pytest.approx((1e-3 + 1e-5) / 2, rel=0.03)  # halfway through the decay


def test_constant_and_the_papers_drop_only_in_the_gan_phase():
    assert set(_lrs(lr=1e-4, warmup_steps=0, schedule="constant")) == {1e-4}
    assert set(_lrs("pretrain", lr=1e-4, warmup_steps=0, schedule="paper")) == {1e-4}
    gan = _lrs("gan", lr=1e-4, warmup_steps=0, schedule="paper", gan_lr_drop_at=0.5)
    assert gan[:50] == [1e-4] * 50 and gan[50:] == pytest.approx([1e-5] * 50)


def test_a_warmup_longer_than_the_run_still_reaches_the_peak():
    lrs = _lrs(steps=5, lr=1e-3, warmup_steps=1000, schedule="constant")
    assert lrs == pytest.approx([1e-3 * (s + 1) / 5 for s in range(4)] + [1e-3])


def test_the_lr_scales_with_the_global_batch_by_the_chosen_rule():
    sqrt = OptimConfig(lr=1e-4, lr_scaling="sqrt", lr_reference_batch=16)
    assert lr_factor(sqrt, 256) == pytest.approx(4.0)  # 16 times the batch: 4 times the lr
    assert lr_factor(sqrt, 16) == 1.0
    linear = OptimConfig(lr=1e-4, lr_scaling="linear", lr_reference_batch=16)
    assert lr_factor(linear, 64) == pytest.approx(4.0)
    assert lr_factor(OptimConfig(lr_scaling="none"), 2048) == 1.0  # the paper's: one lr
    # the whole schedule scales (warm-up, peak, cosine floor), not only the peak
    optim = OptimConfig(lr=1e-3, lr_scaling="sqrt", lr_reference_batch=16, warmup_steps=4,
                        min_lr=1e-5)  # fmt: skip
    for step in (0, 3, 4, 50, 99):
        assert learning_rate(optim, "pretrain", step, 100, 64) == pytest.approx(
            2 * learning_rate(optim, "pretrain", step, 100)
        )
