"""The SRGAN discriminator (Ledig et al. 2017, fig. 4), sized from the HR image size."""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(in_ch: int, out_ch: int, stride: int, norm: bool) -> list[nn.Module]:
    # No bias before BN: BN's shift subsumes it (see ResidualBlock).
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class Discriminator(nn.Module):
    """Eight 3x3 convs (64 -> 512 channels, strides 1/2 alternating), BN, LeakyReLU 0.2,
    dense 1024, dense 1 (a logit). The dense layer's input is 8C x (H/16)^2, hence `hr_size`.

    channels: width of the first conv (paper: 64).
    """

    def __init__(self, hr_size: int, channels: int = 64) -> None:
        super().__init__()
        if hr_size % 16:
            raise ValueError(f"HR size must be a multiple of 16, got {hr_size}")
        widths = [
            channels,
            channels,
            2 * channels,
            2 * channels,
            4 * channels,
            4 * channels,
            8 * channels,
            8 * channels,
        ]
        layers = _conv_block(3, widths[0], 1, norm=False)
        for i in range(1, 8):
            layers += _conv_block(widths[i - 1], widths[i], stride=2 if i % 2 else 1, norm=True)
        self.features = nn.Sequential(*layers)
        side = hr_size // 16
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1] * side * side, 1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image)).squeeze(1)
