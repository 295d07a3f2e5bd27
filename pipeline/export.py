"""Export a trained generator to ONNX, for runtimes without PyTorch (onnxruntime, TensorRT).

    srgan-export --checkpoint CKPT|RUN_DIR|WEIGHTS.safetensors|MODEL_URI --onnx FILE
    srgan-export --model x4|x8 --onnx FILE      # a generator shipped in models/
    python -m pipeline.export ...the same flags...

The graph takes any batch, height and width: input `lr` (N, 3, H, W) float32 in [0, 1], output
`sr` (N, 3, scale*H, scale*W) in [-1, 1] (as pipeline.upscale maps it: (sr + 1) * 127.5). It is
made by torch's maintained exporter (`torch.onnx.export(dynamo=True)`, from torch.export), then
run with onnxruntime at a few sizes against PyTorch before the file is put in place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn
from torch.export import Dim

from pipeline.cli import generator_options, load_chosen_generator, run_command, weights_option
from pipeline.runtime.messages import first_line
from preprocess.atomic import tmp_path

INPUT, OUTPUT = "lr", "sr"
# (batch, height, width) of the inputs the exported graph is checked at: odd, non-square, one.
CHECK_SHAPES = ((1, 37, 53), (2, 48, 48), (3, 16, 24))
# float32 graph vs eager float32 on the CPU: measured about 1e-7 (tests/serving/test_export.py)
TOLERANCE = 1e-4


def export_onnx(
    generator: nn.Module, path: Path, opset: int | None = None, check: bool = True
) -> float | None:
    """Write `generator` as an ONNX graph with dynamic batch, height and width. With `check`,
    the graph is run with onnxruntime against PyTorch (returns the largest difference) BEFORE it
    replaces `path`, so a bad export never overwrites a good file."""
    generator = generator.cpu().eval()
    example = torch.zeros(2, 3, 16, 16)  # sizes above 1, or the exporter pins them
    program = torch.onnx.export(
        generator,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=({0: Dim("batch"), 2: Dim("height"), 3: Dim("width")},),
        opset_version=opset,
        verbose=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        program.save(tmp, external_data=False)
        worst = onnx_difference(tmp, generator) if check else None
        if worst is not None and worst > TOLERANCE:
            raise ValueError(f"onnxruntime differs from PyTorch by {worst:.2e} (> {TOLERANCE:g})")
        tmp.replace(path)
        return worst
    finally:
        tmp.unlink(missing_ok=True)


def onnx_difference(
    path: Path, generator: nn.Module, shapes: tuple[tuple[int, int, int], ...] = CHECK_SHAPES
) -> float:
    """The largest |onnxruntime - PyTorch| over random inputs of `shapes` (batch, H, W)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = generator.cpu().eval()
    rng = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch, height, width in shapes:
        lr = torch.rand(batch, 3, height, width, generator=rng)
        (ours,) = session.run([OUTPUT], {INPUT: lr.numpy()})
        with torch.no_grad():
            reference = generator(lr).numpy()
        if ours.shape != reference.shape:
            raise RuntimeError(f"{path}: output {ours.shape} for input {tuple(lr.shape)}, "
                               f"PyTorch gives {reference.shape}")  # fmt: skip
        worst = max(worst, float(np.abs(ours - reference).max()))
    return worst


@click.command(
    "pipeline.export",
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@generator_options
@click.option(
    "--onnx",
    "onnx_path",
    required=True,
    type=click.Path(path_type=Path),
    help="the .onnx file to write",
)
@weights_option
@click.option("--opset", type=int, default=None, help="ONNX opset  [default: the exporter's]")
@click.option("--check/--no-check", default=True,
              help=f"run the file with onnxruntime against PyTorch at (batch, H, W) "
                   f"{', '.join(str(s) for s in CHECK_SHAPES)}")  # fmt: skip
def cli(checkpoint: str | None, model: str | None, onnx_path: Path, weights: str,
        opset: int | None, check: bool) -> None:  # fmt: skip
    """Export a trained generator to ONNX with dynamic batch, height and width."""
    loaded = load_chosen_generator(checkpoint, model, torch.device("cpu"), weights)
    generator, found = loaded.model, loaded.source
    try:
        worst = export_onnx(generator, onnx_path, opset, check)
    except (ValueError, RuntimeError, ImportError, OSError) as exc:
        raise click.ClickException(f"{onnx_path} not written: {first_line(exc)}") from None
    line = f"{onnx_path}: x{loaded.scale} generator from {found}"
    if worst is not None:
        line += f"; onnxruntime vs PyTorch: max |difference| {worst:.2e}"
    click.echo(f"pipeline.export: {line}")


def main(argv: list[str] | None = None) -> int:
    return run_command(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
