"""PSNR and SSIM the way the super-resolution literature reports them.

Y channel of ITU-R BT.601 YCbCr (as MATLAB's rgb2ycbcr, values 16..235), a border of `scale`
pixels cropped, SSIM with an 11x11 Gaussian window (sigma 1.5) and K1=0.01, K2=0.03 (Wang et
al. 2004), data range 255. The RGB variants use the same code on each channel. Inputs are
N x 3 x H x W tensors in [0, 1]; results are per image, so callers can average over a split.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> Y in 16..235 (N x 1 x H x W)."""
    weights = rgb.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return 16.0 + (rgb * weights).sum(dim=1, keepdim=True)


def _prepare(image: torch.Tensor, border: int, y_channel: bool) -> torch.Tensor:
    image = image.clamp(0, 1).double()
    image = rgb_to_y(image) if y_channel else image * 255.0
    if border:
        image = image[..., border:-border, border:-border]
    return image


def psnr(
    sr: torch.Tensor, hr: torch.Tensor, border: int = 0, y_channel: bool = True
) -> torch.Tensor:
    a, b = _prepare(sr, border, y_channel), _prepare(hr, border, y_channel)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-12))


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    sr: torch.Tensor, hr: torch.Tensor, border: int = 0, y_channel: bool = True
) -> torch.Tensor:
    a, b = _prepare(sr, border, y_channel), _prepare(hr, border, y_channel)
    channels = a.shape[1]
    g = _gaussian_1d().to(a.device)
    rows = g.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = g.view(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        # The 11x11 Gaussian is separable: two 11-tap passes, 'valid' (no padded borders).
        return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3))


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """PIL's bicubic (a = -0.5, as MATLAB's imresize), the baseline papers compare against.

    torch's bicubic uses a = -0.75 and gives a different, usually lower, baseline.
    """
    out = []
    for image in lr.detach().float().cpu().clamp(0, 1):
        pixels = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        size = (pixels.shape[1] * scale, pixels.shape[0] * scale)
        up = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))
        out.append(torch.from_numpy(up.copy()).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out).to(lr.device)
