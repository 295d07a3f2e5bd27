"""`pipeline.export --onnx`: a graph with dynamic batch, height and width that onnxruntime runs
like PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import torch

from pipeline import export
from pipeline.archs import SRResNet
from pipeline.checkpoint import save_checkpoint
from pipeline.config import ModelConfig, TrainConfig


def test_onnx_export_runs_like_pytorch_at_any_size(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = TrainConfig(scale=8, model=ModelConfig(blocks=2, channels=8))
    generator = SRResNet(8, blocks=2, channels=8)
    with torch.no_grad():  # running statistics that are not the identity, as after training
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    save_checkpoint(tmp_path / "run" / "checkpoints", 7,
                    {"config": cfg.to_dict(), "model": {"generator": generator.state_dict()}},
                    keep=1)  # fmt: skip
    target = tmp_path / "g.onnx"
    assert export.main(["--checkpoint", str(tmp_path / "run"), "--onnx", str(target)]) == 0
    out = capsys.readouterr().out
    assert "x8 generator from" in out and "onnxruntime vs PyTorch: max |difference|" in out
    assert not list(tmp_path.glob("*.tmp"))

    graph = onnx.load(target).graph
    (lr,) = graph.input
    dims = [d.dim_param or d.dim_value for d in lr.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    generator.eval()
    for shape in [(1, 3, 37, 53), (2, 3, 48, 48), (4, 3, 5, 9)]:
        x = torch.rand(shape)
        (ours,) = session.run(None, {"lr": x.numpy()})
        with torch.no_grad():
            reference = generator(x).numpy()
        assert ours.shape == (shape[0], 3, shape[2] * 8, shape[3] * 8)
        assert np.abs(ours - reference).max() < 1e-4


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert export.main(["--checkpoint", str(tmp_path / "none"), "--onnx", "x.onnx"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"pipeline.export: error: {tmp_path / 'none'}: checkpoint not found"
    )
