"""Scoring generators: metrics (PSNR, SSIM, LPIPS, FID), the bicubic cache they are compared
with, the distributed evaluation of a split, sample grids and the reports people read."""

from pipeline.evaluation.bicubic_cache import BicubicBaseline
from pipeline.evaluation.evaluator import Scores, evaluate, image_scores
from pipeline.evaluation.perceptual import load_fid, load_lpips
from pipeline.evaluation.report import markdown_rows, report

__all__ = [
    "BicubicBaseline",
    "Scores",
    "evaluate",
    "image_scores",
    "load_fid",
    "load_lpips",
    "markdown_rows",
    "report",
]
