"""Batch statistics over all ranks, so N processes train like one with the global batch.

One implementation for gloo and NCCL: an autograd-aware all-gather of per-channel statistics.
torch's SyncBatchNorm is not used even on CUDA: it refuses CPU tensors, and on CUDA it reads the
gathered counts back to the host in every forward (a mask over empty ranks, torch 2.14,
pytorch issue 78656), which puts dozens of host-device syncs in every GAN step. Each rank's
variance is taken about its own mean, so nothing cancels catastrophically when a channel's mean
is large against its spread. (Sums about the running mean did that once, but compiled, the
backward pass then read the running mean after the forward's update: wrong gradients; bench/
gpu_checks.py's batchnorm_compiles_whole_across_ranks, run on 2 CPU ranks in CI.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        # statistics in fp32 at least (bf16/fp16 activations), in float64 when given float64
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        shape = (1, channels, 1, 1)
        # each rank's mean and variance about its own mean (no cancellation), combined exactly
        # over ranks (Chan et al.'s pairwise formula)
        var_here, mean_here = torch.var_mean(x32, dim=(0, 2, 3), correction=0)
        count = x32.new_full((1,), x.numel() // channels)
        # all-gather with autograd from the functional collectives: torch.compile traces it
        # (torch.distributed.nn's all_reduce made dynamo give up on every module holding a
        # BatchNorm, so multi-GPU runs stayed eager)
        gathered = funcol.all_gather_single_autograd(
            torch.cat([mean_here, var_here, count]), 0, dist.group.WORLD
        ).view(-1, 2 * channels + 1)  # a row per rank
        means, variances = gathered[:, :channels], gathered[:, channels:-1]
        counts = gathered[:, -1:]
        n = counts.sum()
        mean = (counts * means).sum(dim=0) / n
        var = (counts * (variances + (means - mean) ** 2)).sum(dim=0) / n
        if self.track_running_stats:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
                self.num_batches_tracked += 1
        out = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Replace every BatchNorm2d with AllReduceBatchNorm2d (the same on every device)."""
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, AllReduceBatchNorm2d):
        replacement = AllReduceBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module


__all__ = ["AllReduceBatchNorm2d", "sync_batchnorm"]
