"""Perceptual metrics beside PSNR/SSIM: LPIPS per image, FID per set.

PSNR and SSIM fall in the GAN phase by design; LPIPS (Zhang et al. 2018, AlexNet, v0.1: what
super-resolution papers report) and FID (Heusel et al. 2017) say whether the textures it adds
look right. Packages: `lpips`, the authors' own implementation, whose linear heads ship inside
the wheel; `torch-fidelity`'s InceptionV3, a port of the TensorFlow FID network that takes an
explicit weights file (pytorch-fid takes no path, only its URL). The backbones come from
pipeline.weights: an explicit path or the torch hub cache, never a download during a run.

Modes: "auto" uses a metric when its weights are there and otherwise leaves it out with one
warning; "on" makes absent weights a one-line error; "off" never loads it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import nn

from pipeline.archs.pretrained import WEIGHTS, WeightsMissing, load_state
from pipeline.runtime.distributed import ProcessPlace, gather_objects

log = logging.getLogger(__name__)
M = TypeVar("M", bound=nn.Module)

MetricMode = Literal["auto", "on", "off"]
MODES = ("auto", "on", "off")


def _wanted(name: str, mode: str, explicit: str | None, quiet: bool) -> Path | None:
    """The weights file to load, None to leave the metric out (warned unless quiet), or an
    error."""
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None
    file = WEIGHTS["alexnet" if name == "lpips" else "inception"]
    try:
        return file.resolve(explicit)
    except WeightsMissing as exc:
        if mode == "on" or explicit:
            raise
        if not quiet:
            log.warning("%s left out of the evaluation: %s", name.upper(), exc)
        return None


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet: per-image distances of images in [0, 1] (lower is closer)."""

    def __init__(self, alexnet_weights: Path) -> None:
        super().__init__()
        import lpips

        with warnings.catch_warnings():  # torchvision's note on lpips's `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        state = load_state(WEIGHTS["alexnet"], alexnet_weights, "features.0.weight")
        # lpips cuts torchvision's alexnet.features into slices that keep the layer indices.
        backbone = {}
        for key in self.model.net.state_dict():
            _, index, param = key.split(".")
            backbone[key] = state[f"features.{index}.{param}"]
        self.model.net.load_state_dict(backbone)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # dropout in the heads stays off: a metric, not a loss

    @torch.no_grad()
    def forward(self, image01: torch.Tensor, reference01: torch.Tensor) -> torch.Tensor:
        distance = self.model(image01.float() * 2 - 1, reference01.float() * 2 - 1)
        return distance.flatten().double()


class InceptionFeatures(nn.Module):
    """The 2048-d pool features FID is defined on, for images in [0, 1]."""

    def __init__(self, inception_weights: Path) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        load_state(WEIGHTS["inception"], inception_weights, "Conv2d_1a_3x3.conv.weight")
        self.extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(inception_weights)
        )

    @torch.no_grad()
    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        as_saved = torch.round(image01.float().clamp(0, 1) * 255).to(torch.uint8)
        return self.extractor(as_saved)[0].double()


class SetStatistics:
    """Running sums of a set's features (sum, sum of outer products, count) in float64: the
    mean and covariance of a split are then one all-reduce away, whatever the rank count."""

    def __init__(self, dim: int, device: torch.device) -> None:
        self.sums = torch.zeros(dim + dim * dim + 1, dtype=torch.float64, device=device)
        self.dim = dim

    def add(self, features: torch.Tensor) -> None:
        d = self.dim
        self.sums[:d] += features.sum(dim=0)
        self.sums[d:-1] += (features.T @ features).flatten()
        self.sums[-1] += features.shape[0]

    def mean_and_covariance(self, sums: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        d, n = self.dim, sums[-1].item()
        if n < 2:
            raise ValueError(f"FID needs at least 2 images, got {int(n)}")
        mean = sums[:d] / n
        outer = sums[d:-1].view(d, d)
        covariance = (outer - n * torch.outer(mean, mean)) / (n - 1)
        return mean.cpu().numpy(), covariance.cpu().numpy()


def frechet_distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """FID between two (mean, covariance) pairs, as torch-fidelity computes it (the trace of
    the matrix square root from the eigenvalues of the product)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    result = fid_statistics_to_metric(
        {"mu": a[0], "sigma": a[1]}, {"mu": b[0], "sigma": b[1]}, verbose=False
    )
    return float(result[KEY_METRIC_FID])


def _agreed(name: str, metric: M | None, place: ProcessPlace) -> M | None:
    """Every rank scores its part of a split, so a metric is kept only if every rank has its
    weights (the hub cache is per node): otherwise the mean would cover some images only."""
    have = gather_objects(metric is not None)
    if all(have):
        return metric
    if any(have) and place.is_main:
        absent = [rank for rank, present in enumerate(have) if not present]
        log.warning("%s left out of the evaluation: its weights are absent on rank(s) %s",
                    name.upper(), ", ".join(map(str, absent)))  # fmt: skip
    return None


def load_lpips(mode: str, weights: str | None, place: ProcessPlace | None = None) -> LPIPS | None:
    """LPIPS on every rank or on none (one warning per run, from rank 0)."""
    place = place or ProcessPlace()
    path = _wanted("lpips", mode, weights, quiet=not place.is_main)
    return _agreed("lpips", None if path is None else LPIPS(path), place)


def load_fid(
    mode: str, weights: str | None, place: ProcessPlace | None = None
) -> InceptionFeatures | None:
    place = place or ProcessPlace()
    path = _wanted("fid", mode, weights, quiet=not place.is_main)
    return _agreed("fid", None if path is None else InceptionFeatures(path), place)
