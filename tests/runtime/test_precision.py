"""pipeline/runtime/precision.py: the one place that says what each precision means."""

from __future__ import annotations

import logging

import pytest
import torch

from pipeline.runtime import precision
from pipeline.runtime.precision import autocast, inference_dtype, training_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_training_takes_bf16_only_where_it_is_fast(monkeypatch, caplog, fast):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: fast)
    assert training_precision("auto", CPU) == ("bf16" if fast else "fp32")
    with caplog.at_level(logging.WARNING, logger="pipeline.runtime.precision"):
        assert training_precision("bf16", CPU) == "bf16"  # asked for: kept, with a warning
    assert ("emulated" in caplog.text) is (not fast)
    assert training_precision("fp16", CPU) == "bf16"  # fp16 autocast is for GPUs
    assert training_precision("fp32", CPU) == "fp32"


def test_inference_keeps_fp32_on_the_cpu_unless_asked():
    assert inference_dtype("auto", CPU) == torch.float32
    assert inference_dtype("bf16", CPU) == torch.bfloat16
    assert inference_dtype("fp16", CPU) == torch.float16
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        inference_dtype("int8", CPU)


def test_autocast_takes_names_and_dtypes_and_runs_fp32_as_is():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for spec in ("bf16", torch.bfloat16):
        with autocast(CPU, spec):
            assert layer(x).dtype == torch.bfloat16
    for spec in ("fp32", torch.float32, "auto"):  # "auto" unresolved: no autocast at all
        with autocast(CPU, spec):
            assert layer(x).dtype == torch.float32
