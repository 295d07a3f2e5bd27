from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pipeline.evaluation.metrics import bicubic_upscale, psnr, ssim
from pipeline.evaluation.sample_grid import CAPTION, COLUMNS, GAP, HEADER, SampleGrid


def test_grid_has_labelled_columns_and_each_images_scores(tmp_path):
    torch.manual_seed(0)
    hr01 = torch.rand(3, 3, 32, 32)
    lr = torch.nn.functional.avg_pool2d(hr01, 4)
    sr01 = (hr01 + 0.05 * torch.randn_like(hr01)).clamp(0, 1)
    grid = SampleGrid(wanted=2, scale=4)
    grid.add(lr, sr01, hr01)
    grid.add(lr, sr01, hr01)  # already full: nothing more
    assert len(grid.tiles) == 2

    bicubic = bicubic_upscale(lr, 4)
    for i in range(2):
        _, bicubic_caption, sr_caption, _ = grid.captions[i]
        sr_psnr, sr_ssim = psnr(sr01, hr01, 4)[i], ssim(sr01, hr01, 4)[i]
        assert sr_caption == f"{sr_psnr:.2f} dB  {sr_ssim:.3f}"
        assert bicubic_caption.startswith(f"{psnr(bicubic, hr01, 4)[i]:.2f} dB")
    assert grid.captions[0][0] == "8x8" and grid.captions[0][3] == "32x32"

    grid.write(tmp_path / "grid.png")
    pixels = np.asarray(Image.open(tmp_path / "grid.png"))
    cell = 32 + GAP
    assert pixels.shape == (HEADER + 2 * (32 + CAPTION + GAP), len(COLUMNS) * cell + GAP, 3)
    for column in range(len(COLUMNS)):  # a label above each column, a caption under each tile
        label = pixels[:HEADER, GAP + column * cell : GAP + (column + 1) * cell - GAP]
        caption = pixels[HEADER + 32 : HEADER + 32 + CAPTION, GAP + column * cell :][:, :32]
        assert (label < 128).any() and (caption < 128).any()
    first_sr = pixels[HEADER : HEADER + 32, GAP + 2 * cell : GAP + 2 * cell + 32]
    assert np.array_equal(first_sr, sr01[0].mul(255).round().byte().permute(1, 2, 0).numpy())


def test_faces_of_different_sizes_each_fit_their_cell():
    grid = SampleGrid(wanted=2, scale=4)
    for side in (8, 20):  # an image folder's faces need not share a size
        hr01 = torch.rand(1, 3, side * 4, side * 4)
        grid.add(torch.nn.functional.avg_pool2d(hr01, 4), hr01, hr01)
    pixels = np.asarray(grid.render())
    cell = 80 + GAP
    assert pixels.shape == (HEADER + 2 * (80 + CAPTION + GAP), len(COLUMNS) * cell + GAP, 3)
    hr_of_second = pixels[HEADER + cell + CAPTION :][:80, GAP + 3 * cell :][:, :80]
    assert np.array_equal(hr_of_second, grid.tiles[1][3])
