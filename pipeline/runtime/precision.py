"""Every precision decision of the pipeline: names, dtypes, what "auto" means, autocast.

Training and inference resolve "auto" differently on purpose: training takes bf16 wherever it
is fast (GPUs with it, CPUs with AVX-512 BF16 or AMX; emulated bf16 made train steps 16x-49x
slower than fp32 here, docs/PERFORMANCE.md), inference keeps fp32 on CPUs and takes fp16 on
GPUs without bf16, since it has no gradients to overflow.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with AVX-512 BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def training_precision(requested: str, device: torch.device) -> str:
    """The precision a training run uses on `device` for `requested` (one of PRECISIONS), with
    a warning where the choice is slow or was changed."""
    precision = requested
    if requested == "auto":
        precision = "bf16" if bf16_is_fast(device) else "fp32"
    elif requested == "fp16" and device.type == "cpu":
        log.warning("fp16 autocast is for GPUs: using bf16 on the CPU")
        precision = "bf16"
    elif requested == "bf16" and not bf16_is_fast(device):
        log.warning("bf16 is emulated on this %s and will be slow", device.type)
    if precision != requested:
        log.info("precision %s resolved to %s on %s", requested, precision, device)
    return precision


def inference_dtype(precision: str, device: torch.device) -> torch.dtype:
    """ "auto": bf16 on GPUs that have it, else fp16 on GPUs, fp32 on the CPU (where bf16 is
    slower than fp32 on most cores)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DTYPES[precision]


def autocast(
    device: torch.device, precision: str | torch.dtype
) -> contextlib.AbstractContextManager:
    """torch.autocast to `precision` (a name or a dtype) on `device`; fp32 runs as is (autocast
    has no fp32 mode), and so does an unresolved "auto"."""
    dtype = DTYPES.get(precision) if isinstance(precision, str) else precision
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
