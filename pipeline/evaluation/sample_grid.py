"""The sample grid a person looks at in MLflow: one face per row, columns LR (nearest) |
bicubic | SR | HR under a header that names them, and each bicubic and SR tile captioned with
its own PSNR-Y / SSIM-Y, so a good-looking face with a poor score (or the reverse) shows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from pipeline.evaluation.metrics import bicubic_upscale, psnr, ssim
from preprocess.atomic import tmp_path

log = logging.getLogger(__name__)

COLUMNS = ("LR (nearest)", "bicubic", "SR", "HR")
GAP, HEADER, CAPTION = 2, 16, 14  # pixels
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)


@dataclass
class SampleGrid:
    """Rows collected over an evaluation (rank 0's first faces), written once at its end."""

    wanted: int
    scale: int
    tiles: list[list[np.ndarray]] = field(default_factory=list)  # per row: 4 x (H, W, 3) uint8
    captions: list[list[str]] = field(default_factory=list)  # per row: 4 captions

    def add(self, lr: torch.Tensor, sr01: torch.Tensor, hr01: torch.Tensor) -> None:
        """Take up to the rows still wanted from a batch: LR in [0, 1], SR/HR in [0, 1]."""
        take = min(self.wanted - len(self.tiles), lr.shape[0])
        if take <= 0:
            return
        lr = lr[:take].float().cpu()
        sr01, hr01 = sr01[:take].float().cpu(), hr01[:take].float().cpu()
        nearest = F.interpolate(lr, scale_factor=self.scale, mode="nearest")
        bicubic = bicubic_upscale(lr, self.scale)
        scores = {
            name: (psnr(image, hr01, self.scale), ssim(image, hr01, self.scale))
            for name, image in (("bicubic", bicubic), ("sr", sr01))
        }
        for i in range(take):
            row = [nearest[i], bicubic[i], sr01[i], hr01[i]]
            self.tiles.append([_to_uint8(t) for t in row])
            self.captions.append(
                [
                    f"{lr.shape[-1]}x{lr.shape[-2]}",
                    _caption(*(s[i] for s in scores["bicubic"])),
                    _caption(*(s[i] for s in scores["sr"])),
                    f"{hr01.shape[-1]}x{hr01.shape[-2]}",
                ]
            )

    def render(self) -> Image.Image:
        # faces of an image folder may differ in size: cells fit the largest
        height = max(row[0].shape[0] for row in self.tiles)
        width = max(row[0].shape[1] for row in self.tiles)
        cell_w, cell_h = width + GAP, height + CAPTION + GAP
        canvas = Image.new(
            "RGB", (len(COLUMNS) * cell_w + GAP, HEADER + len(self.tiles) * cell_h), BACKGROUND
        )
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=11)
        for column, label in enumerate(COLUMNS):
            draw.text((GAP + column * cell_w + 2, 2), label, fill=INK, font=font)
        for row, (tiles, captions) in enumerate(zip(self.tiles, self.captions, strict=True)):
            top = HEADER + row * cell_h
            for column, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
                left = GAP + column * cell_w
                canvas.paste(Image.fromarray(tile), (left, top))
                draw.text((left + 2, top + tile.shape[0] + 1), caption, fill=INK, font=font)
        return canvas

    def write(self, path: Path) -> None:
        """A sample image is not worth a crash: a full disk leaves a warning and no file."""
        if not self.tiles:
            return
        tmp = tmp_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.render().save(tmp, format="PNG")
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("%s: sample grid not written (%s)", path, exc.strerror or exc)


def _caption(psnr: torch.Tensor, ssim: torch.Tensor) -> str:
    return f"{float(psnr):.2f} dB  {float(ssim):.3f}"


def _to_uint8(image01: torch.Tensor) -> np.ndarray:
    return image01.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
