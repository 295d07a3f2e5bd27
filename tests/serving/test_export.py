"""`pipeline.export --onnx`: a graph with dynamic batch, height and width that onnxruntime runs
like PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from pipeline import export
from pipeline.archs import SRResNet
from pipeline.runtime.checkpoint import save_checkpoint
from pipeline.training.config import ModelConfig, TrainConfig

pytestmark = pytest.mark.integration  # ONNX export and onnxruntime


def _run_folder(folder: Path, scale: int = 8) -> SRResNet:
    torch.manual_seed(0)
    cfg = TrainConfig(scale=scale, model=ModelConfig(blocks=2, channels=8))
    generator = SRResNet(scale, blocks=2, channels=8)
    with torch.no_grad():  # running statistics that are not the identity, as after training
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    save_checkpoint(folder / "checkpoints", 7,
                    {"config": cfg.to_dict(), "model": {"generator": generator.state_dict()}},
                    keep=1)  # fmt: skip
    return generator


def test_onnx_export_runs_like_pytorch_at_any_size(tmp_path, capsys):
    generator = _run_folder(tmp_path / "run")
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
    shapes = [(1, 3, 29, 41), (2, 3, 40, 24), (4, 3, 5, 9)]
    # sizes the export's own check did not run
    assert not {(n, h, w) for n, _, h, w in shapes} & set(export.CHECK_SHAPES)
    for shape in shapes:
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


def test_a_graph_that_fails_its_check_leaves_the_file_already_there_byte_for_byte(
    tmp_path, monkeypatch, capsys
):
    """A tolerance no graph meets: the real export and onnxruntime run, the check fails, and
    the file at the target (here not even ONNX) is left exactly as it was, with no temporary
    file beside it."""
    _run_folder(tmp_path / "run", scale=4)
    target = tmp_path / "g.onnx"
    before = b"an earlier export, kept \x00\xff"
    target.write_bytes(before)
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    assert export.main(["--checkpoint", str(tmp_path / "run"), "--onnx", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"{target} not written: onnxruntime differs from PyTorch by " in err, err
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx", "run"]
