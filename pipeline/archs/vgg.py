"""VGG19 feature maps for the content loss, with weights that never come from the network.

Weights, in order: an explicit file (`--vgg-weights PATH`), torchvision's IMAGENET1K_V1 file
already in the local torch hub cache (`python -m pipeline.weights fetch vgg19` puts it there),
or - for tests and smoke runs only - explicitly random
weights (`--vgg-weights random`), which the trainer logs loudly. Anything else stops before
training with a one-line error saying how to provide the weights.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from torch import nn

from pipeline.archs.pretrained import WEIGHTS, WeightsMissing

log = logging.getLogger(__name__)

RANDOM = "random"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsMissing(WeightsMissing):
    """No VGG19 weights available offline; the message says how to provide them."""


def _vgg19_plan() -> list[int | str]:
    """VGG19's layer plan in torchvision: channel counts, "M" for max-pooling. torchvision is
    imported here, when VGG is needed, not by every command that imports pipeline.archs: with
    it comes torch._dynamo, about 1 s on this 2-core machine (`python -X importtime -c 'import
    pipeline.upscale'`)."""
    from torchvision.models.vgg import cfgs

    return cfgs["E"]


@functools.cache
def layer_names() -> list[str]:
    """torchvision's vgg19.features, named the way papers do: conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 0
    for entry in _vgg19_plan():
        if entry == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


def imagenet_weights_path() -> Path:
    """Where torchvision keeps the IMAGENET1K_V1 file (under $TORCH_HOME/hub/checkpoints)."""
    return WEIGHTS["vgg19"].cached_path()


def _state_from_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise VGGWeightsMissing(f"{path}: VGG19 weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise VGGWeightsMissing(f"{path}: not a readable VGG19 state dict ({exc})") from None
    if "features.0.weight" not in state:
        raise VGGWeightsMissing(
            f"{path}: not a torchvision VGG19 state dict (no features.0.weight)"
        )
    return state


def describe_weights(weights: str | None) -> str:
    """What the run's MLflow params say about the VGG weights."""
    if weights == RANDOM:
        return "random (NOT ImageNet: content loss is meaningless; tests only)"
    return weights or f"torchvision IMAGENET1K_V1 ({imagenet_weights_path()})"


def load_vgg19_features(weights: str | None) -> nn.Sequential:
    """VGG19's convolutional part with the chosen weights (see the module docstring)."""
    from torchvision.models.vgg import make_layers

    features = make_layers(_vgg19_plan())
    if weights == RANDOM:
        log.warning("VGG19 has RANDOM weights (--vgg-weights random): for tests only")
        return features
    path = Path(weights) if weights else imagenet_weights_path()
    if not weights and not path.is_file():
        raise VGGWeightsMissing(
            f"VGG19 ImageNet weights not found at {path}: copy torchvision's "
            f"{path.name} there (python -m pipeline.weights fetch vgg19, or from "
            f"{WEIGHTS['vgg19'].url}) or pass --vgg-weights PATH"
        )
    state = _state_from_file(path)
    features.load_state_dict(
        {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    )
    return features


class VGGFeatures(nn.Module):
    """Frozen VGG19 up to `layer` (default relu5_4: phi_5,4 of the paper, after activation).

    Takes images in the HR range [-1, 1], maps them to [0, 1] and normalises with the
    ImageNet statistics VGG was trained with; feeding [-1, 1] directly shifts colours.
    """

    def __init__(self, weights: str | None, layer: str = "relu5_4") -> None:
        super().__init__()
        names = layer_names()
        if layer not in names:
            raise ValueError(f"unknown VGG19 layer {layer!r}; one of {', '.join(names)}")
        features = load_vgg19_features(weights)
        self.features = features[: names.index(layer) + 1].eval()
        for parameter in self.features.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatures:
        super().train(mode)
        self.features.eval()  # always: it is a fixed feature extractor
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        unit = (image + 1.0) / 2.0
        return self.features((unit - self.mean) / self.std)
