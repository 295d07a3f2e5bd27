"""SRResNet, the SRGAN generator (Ledig et al. 2017, fig. 4)."""

from __future__ import annotations

import math

import torch
from torch import nn

OUTPUTS = ("tanh", "linear")


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN with an identity skip.

    Convolutions followed by BN have no bias: BN's shift subsumes it, and a bias whose
    gradient is zero up to rounding gets Adam steps of full size in random directions.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def icnr_(weight: torch.Tensor, upscale: int) -> None:
    """ICNR init (Aitken et al. 2017): every sub-pixel of an output pixel starts with the same
    kernel, so conv + PixelShuffle begins as nearest-neighbour upsampling of a normal conv
    and makes no checkerboard pattern.

    The kernel is drawn as PyTorch draws any conv's (kaiming_uniform with a = sqrt(5), std
    1/sqrt(3 fan_in)). kaiming_normal's std sqrt(2/fan_in), 2.45x larger per upsampling stage,
    cost 0.37 dB after 600 steps of the calibration model (docs/RECIPE.md,
    bench/arch_ablation.py)."""
    out_channels, in_channels, kh, kw = weight.shape
    sub = upscale * upscale
    base = torch.empty(out_channels // sub, in_channels, kh, kw)
    nn.init.kaiming_uniform_(base, a=math.sqrt(5))
    with torch.no_grad():
        # PixelShuffle makes output channel c from input channels c*sub ... c*sub + sub - 1.
        weight.copy_(base.repeat_interleave(sub, dim=0))


class UpsampleStage(nn.Module):
    """conv to 4C, PixelShuffle x2, PReLU: one doubling, with its own weights."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)
        icnr_(self.conv.weight, 2)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """LR in [0, 1] -> SR in the HR range [-1, 1].

    blocks: residual blocks B (paper: 16); channels: feature width (paper: 64). output: "tanh"
    bounds SR to the HR range (0.38 dB better after 600 calibration steps, docs/RECIPE.md);
    "linear" is the paper's figure 4, and what checkpoints made before the choice existed hold.
    """

    def __init__(
        self, scale: int, blocks: int = 16, channels: int = 64, output: str = "tanh"
    ) -> None:
        super().__init__()
        stages = math.log2(scale)
        if scale < 2 or stages != int(stages):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.scale, self.output = scale, output
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.body_tail = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        self.upsample = nn.Sequential(*(UpsampleStage(channels) for _ in range(int(stages))))
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        features = self.head(lr)
        features = features + self.body_tail(self.body(features))
        sr = self.tail(self.upsample(features))
        return torch.tanh(sr) if self.output == "tanh" else sr


def to_uint8(sr: torch.Tensor) -> torch.Tensor:
    """SRResNet's output range [-1, 1] -> the nearest of 256 grey levels."""
    return sr.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
