"""The generator as an MLflow model: logged so that it takes any batch and any image size,
registered as `srgan-celeba-x<scale>`, and loaded back from a `models:/` or `runs:/` URI.

MLflow 3 saves PyTorch models with `torch.export` and makes dynamic only the dimensions that
the signature leaves open (-1) AND that the input example does not pin: a batch of 1 or a
fixed-size example gives a program that accepts nothing else (`Guard failed: lr.size()[0] ==
1`). So the signature opens batch, height and width, and the example is a batch of 2 at a size
above 1.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.archs import to_uint8

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "srgan-celeba-x"
# (N, 3, H, W) in [0, 1] -> (N, 3, scale*H, scale*W) in [-1, 1]
OPEN_SHAPE = (-1, 3, -1, -1)
EXAMPLE_SIDE = 8  # any size above 1 keeps H and W dynamic; small keeps logging quick


def registry_name(scale: int) -> str:
    """One registered model per scale: versions of one name are comparable."""
    return f"{REGISTRY_PREFIX}{scale}"


def signature() -> Any:
    """Batch, height and width open (-1): what keeps them dynamic in MLflow's torch.export."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec() -> Schema:
        return Schema([TensorSpec(np.dtype(np.float32), OPEN_SHAPE)])

    return ModelSignature(inputs=spec(), outputs=spec())


def log_generator(
    generator: nn.Module,
    name: str,
    registered_name: str | None = None,
    version_tags: dict[str, Any] | None = None,
) -> Any:
    """Log `generator` (eval mode, on the CPU) into the active MLflow run; with
    `registered_name`, also as a new version of that registered model, tagged. Returns
    MLflow's ModelInfo."""
    import mlflow.pytorch

    example = np.zeros((2, 3, EXAMPLE_SIDE, EXAMPLE_SIDE), dtype=np.float32)
    info = mlflow.pytorch.log_model(
        generator.cpu().eval(),
        name=name,
        signature=signature(),
        input_example=example,
        registered_model_name=registered_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )
    if registered_name is not None and version_tags:
        version = str(info.registered_model_version)
        try:
            client = mlflow.MlflowClient()
            for key, value in version_tags.items():
                client.set_model_version_tag(registered_name, version, key, str(value))
        except Exception as exc:  # noqa: BLE001 - logged and registered: never register twice
            log.warning("MLflow: %s version %s registered without all its tags (%s)",
                        registered_name, version, str(exc).splitlines()[0])  # fmt: skip
    return info


def version_tags(
    run_id: str | None, step: int, val: dict[str, float], phase: str | None = None
) -> dict[str, Any]:
    """What a registry user compares versions by: where the weights came from (run, step,
    pretrain = SRResNet or gan = SRGAN) and their val scores (`val/sr_psnr_y` -> `val_psnr_y`;
    LPIPS only where it was measured)."""
    tags: dict[str, Any] = {"run_id": run_id, "step": step, "phase": phase}
    for metric in ("psnr_y", "ssim_y", "lpips"):
        if f"val/sr_{metric}" in val:
            tags[f"val_{metric}"] = f"{val[f'val/sr_{metric}']:.4f}"
    return {k: v for k, v in tags.items() if v is not None}


def is_model_uri(text: str) -> bool:
    """MLflow's model URIs, as opposed to a checkpoint path."""
    return text.startswith(("models:/", "runs:/"))


def load_generator_uri(uri: str, device: torch.device) -> tuple[nn.Module, int]:
    """The generator logged at `uri` (a `torch.export` program's module) and its scale, measured
    from the output size of a tiny input, since the exported graph keeps no attributes."""
    import mlflow.pytorch

    model = mlflow.pytorch.load_model(uri).to(device)
    with torch.no_grad():
        probe = model(torch.zeros(1, 3, 4, 4, device=device))
    return model, probe.shape[-1] // 4


# ---- serving: `mlflow models serve -m models:/srgan-celeba-x4/<version> --env-manager local` ----
# The scoring server takes MLflow's tensor input: POST /invocations with JSON
# {"inputs": [[[[...]]]]}, the LR images as (N, 3, H, W) floats in [0, 1] (RGB, rows, columns);
# it answers {"predictions": [...]}, (N, 3, scale*H, scale*W) in [-1, 1]. These two turn an image
# into that request and the answer back into 8-bit pixels, as srgan-upscale rounds them.


def request_body(images: np.ndarray) -> dict[str, Any]:
    """The JSON body for (N, H, W, 3) uint8 images (or one (H, W, 3) image)."""
    batch = images[None] if images.ndim == 3 else images
    return {"inputs": (batch.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).tolist()}


def images_from_response(body: dict[str, Any]) -> np.ndarray:
    """(N, sH, sW, 3) uint8 from the scoring server's JSON answer."""
    return to_uint8(torch.tensor(body["predictions"])).permute(0, 2, 3, 1).numpy()
