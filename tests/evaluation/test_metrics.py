"""Our PSNR/SSIM against scikit-image's, on sample faces and their degraded versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_celeba
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.evaluation.metrics import bicubic_upscale, psnr, rgb_to_y, ssim


def _faces(count: int = 4, size: int = 128) -> torch.Tensor:
    paths = sorted((shared_celeba() / "img_align_celeba").iterdir())[:count]
    images = [
        np.asarray(Image.open(p).convert("RGB").crop((0, 20, 178, 198)).resize((size, size)))
        for p in paths
    ]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def _y_numpy(batch: torch.Tensor, border: int) -> list[np.ndarray]:
    rgb = batch.permute(0, 2, 3, 1).double().numpy()
    y = 16 + rgb @ np.array([65.481, 128.553, 24.966])
    return [img[border:-border, border:-border] for img in y]


@pytest.mark.parametrize("border", [4, 8])
def test_y_channel_metrics_agree_with_scikit_image(border):
    hr = _faces()
    degraded = bicubic_upscale(torch.nn.functional.avg_pool2d(hr, 4), 4)
    ours_psnr = psnr(degraded, hr, border=border)
    ours_ssim = ssim(degraded, hr, border=border)
    for i, (a, b) in enumerate(zip(_y_numpy(degraded, border), _y_numpy(hr, border), strict=True)):
        assert ours_psnr[i].item() == pytest.approx(
            peak_signal_noise_ratio(b, a, data_range=255), abs=1e-6
        )
        reference = structural_similarity(
            b, a, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ours_ssim[i].item() == pytest.approx(reference, abs=1e-6)


def test_rgb_metrics_agree_with_scikit_image():
    hr = _faces(2)
    noisy = (hr + 0.03 * torch.randn_like(hr)).clamp(0, 1)
    for i in range(2):
        a = (noisy[i].permute(1, 2, 0).double().numpy() * 255)[4:-4, 4:-4]
        b = (hr[i].permute(1, 2, 0).double().numpy() * 255)[4:-4, 4:-4]
        expected = structural_similarity(
            b,
            a,
            data_range=255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=2,
        )
        assert ssim(noisy, hr, 4, y_channel=False)[i].item() == pytest.approx(expected, abs=1e-6)
        assert psnr(noisy, hr, 4, y_channel=False)[i].item() == pytest.approx(
            peak_signal_noise_ratio(b, a, data_range=255), abs=1e-6
        )


def test_identical_images_and_y_range():
    hr = _faces(1)
    assert ssim(hr, hr, 4).item() == pytest.approx(1.0)
    assert psnr(hr, hr).item() > 100
    assert rgb_to_y(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(16.0)
    assert rgb_to_y(torch.ones(1, 3, 1, 1)).item() == pytest.approx(235.0)


def test_bicubic_matches_pil():
    lr = torch.rand(1, 3, 8, 8)
    pixels = (lr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    expected = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC))
    got = (bicubic_upscale(lr, 4)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(got, expected)
