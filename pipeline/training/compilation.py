"""torch.compile for the training steps: when it is on, how a module is compiled, and what
counts as a compile failure (the step then runs eager: pipeline/training/steps.py).

`--compile auto` is on for CUDA, where the compiled bare steps ran 1.23x-1.65x as fast as
eager on an H200 (bench/train_step.py, docs/PERFORMANCE.md), and off on CPUs, where they ran
0.81x-1.11x as fast on this 2-core machine. Shapes are fixed (`dynamic=False`): training drops
the last partial batch, and evaluation runs the uncompiled generator, so nothing recompiles
after the first step.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.runtime.messages import first_line


def compile_errors() -> tuple[type[Exception], ...]:
    """Dynamo's own errors and every backend failure it wraps (Inductor's, a missing C++
    compiler). A function, so that importing this module does not import torch._dynamo
    (about 1 s on this 2-core machine; training gets it from torch.optim anyway, evaluate,
    upscale and export need not); an `except compile_errors():` clause calls it only when an
    exception reaches it."""
    import torch._dynamo

    return (torch._dynamo.exc.TorchDynamoException,)


def compile_on(setting: str, device: torch.device) -> bool:
    """ "auto": on for CUDA, off elsewhere (see above); "on" and "off" as said."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def compiled(module: nn.Module, backend: str, mode: str) -> nn.Module:
    """`module` compiled lazily (at its first call) for fixed shapes."""
    return torch.compile(module, backend=backend, mode=None if mode == "default" else mode,
                         dynamic=False)  # fmt: skip


def failure_reason(exc: Exception) -> str:
    """One line: the backend's own error where Dynamo wrapped one (its message starts with a
    line that only names the backend), else Dynamo's."""
    inner = getattr(exc, "inner_exception", None)
    if inner is not None:
        return f"{type(inner).__name__}: {first_line(inner)}"
    return first_line(exc)
