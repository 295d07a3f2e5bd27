"""The SRGAN losses (Ledig et al. 2017, section 2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.archs.vgg import VGGFeatures


class ContentLoss(nn.Module):
    """MSE between VGG19 feature maps of SR and HR (VGG54 by default), both multiplied by
    `rescale` (LossConfig.vgg_rescale: the paper's 1/12.75, so that the VGG loss is of the
    order of the MSE)."""

    def __init__(self, vgg: VGGFeatures, rescale: float) -> None:
        super().__init__()
        self.vgg, self.rescale = vgg, rescale

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.vgg(hr) * self.rescale
        return F.mse_loss(self.vgg(sr) * self.rescale, target.to(sr.dtype))


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Pixel loss in the HR range [-1, 1]: MSE (the paper's SRResNet pre-training loss) or L1
    (BasicSR's default, which EDSR found to converge better for PSNR)."""
    if kind == "l1":
        return F.l1_loss(sr.float(), hr.float())
    return F.mse_loss(sr.float(), hr.float())


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """-log D(x) for real targets, -log(1 - D(x)) for fake ones, on logits (stable in AMP)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())
