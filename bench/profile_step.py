"""Why the step is as fast as it is: a torch.profiler table of one training step and a roofline.

    python bench/profile_step.py [--phase pretrain|gan] [--batch-size 256] [--precision bf16]
        [--channels-last] [--compile on|off] [--compile-backend inductor] [--steps 5]
        [--warmup 3] [--top 15] [--blocks 16 --channels 64 --d-channels 64] [--json FILE]

Builds `SRGANModel` as the trainer does (one process, one batch already on the device), runs
`--warmup` steps (compiling, when on), then profiles `--steps` steps and prints:
- the top kernels (GPU) or operators (CPU) by their own time, each with its share;
- that time summed by kind: convolution and matmul, normalisation, elementwise (pointwise,
  activations, the residual adds; Inductor's fused pointwise kernels too), reductions,
  optimizer, memory (copies, fills), other;
- a roofline from what the step must do: its FLOPs (FlopCounterMode, as pipeline/training/perf.py
  counts them) and the bytes its layers read and write (each conv, norm, activation and add:
  its inputs, output and weights once forward, twice backward: an ESTIMATE, since a fused or
  cached kernel moves less, and it is printed as one), against a large matmul's FLOP/s and a
  large copy's bytes/s measured in the same run. The ceiling is min(peak, intensity x
  bandwidth) in img/s, next to what the step did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from pipeline.training.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.training.perf import matmul_peak, step_flops  # noqa: E402
from pipeline.training.steps import SRGANModel  # noqa: E402

# (kind, substrings of a kernel's or operator's name), first match wins: Inductor's generated
# kernels by their own kind first (a fused pointwise kernel is named after the ops it fuses,
# "triton_poi_fused_convolution_0" included), then cuDNN's batch norm before its convolutions
KINDS = (
    ("elementwise", ("triton_poi",)),
    ("reduction", ("triton_red", "triton_per")),
    ("normalisation", ("batch_norm", "batchnorm", "bn_fw", "bn_bw", "welford")),
    ("conv/matmul", ("conv", "cudnn", "gemm", "xmma", "mm", "winograd", "implicit")),
    ("optimizer", ("adam", "foreach", "multi_tensor")),
    ("memory", ("copy", "memcpy", "memset", "fill", "zero", "clone", "cat")),
    ("reduction", ("reduce", "sum", "mean")),
    ("elementwise", ("elementwise", "add", "mul", "prelu", "relu", "tanh", "sigmoid", "where",
                     "pixel_shuffle", "sub", "div", "pow", "leaky")),
)  # fmt: skip
LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.PReLU, nn.LeakyReLU, nn.ReLU, nn.Tanh,
          nn.PixelShuffle)  # fmt: skip


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, marks in KINDS:
        if any(mark in lowered for mark in marks):
            return kind
    return "other"


def layer_bytes(model: SRGANModel, lr: torch.Tensor, hr: torch.Tensor) -> float:
    """ESTIMATE of the bytes one step's layers move: per layer call, its inputs, output and
    parameters once in the forward and twice in the backward (read the saved input and the
    output's gradient, write the input's gradient)."""
    moved = 0.0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal moved
        tensors = [t for t in (*inputs, output) if isinstance(t, torch.Tensor)]
        tensors += list(module.parameters(recurse=False))
        moved += 3 * sum(t.numel() * t.element_size() for t in tensors)

    nets = [n for n in (model.g_raw, model.d_raw) if n is not None]
    if model.content is not None:
        nets.append(model.content)
    handles = [m.register_forward_hook(count) for net in nets for m in net.modules()
               if isinstance(m, LAYERS)]  # fmt: skip
    try:
        # the shapes and dtypes of a step's layers, without its update
        with torch.no_grad(), model.autocast():
            sr = model.g_raw(lr)
            if model.content is not None and model.d_raw is not None:
                model.content(sr, hr)
                model.d_raw(sr)
                model.d_raw(hr)
    finally:
        for handle in handles:
            handle.remove()
    return moved


def copy_bandwidth(device: torch.device, seconds: float) -> float:
    """Bytes/s of a large device-to-device copy (read + write), measured."""
    n = (256 if device.type == "cuda" else 32) * 2**20
    a, b = torch.empty(n, dtype=torch.uint8, device=device), torch.empty(n, dtype=torch.uint8,
                                                                        device=device)  # fmt: skip
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    b.copy_(a)
    sync()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        b.copy_(a)
        runs += 1
        if runs % 10 == 0:
            sync()
    sync()
    return 2 * n * runs / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phase", default="pretrain", choices=["pretrain", "gan"])
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--hr-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--d-channels", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", default="off", choices=["off", "on"])
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--peak-seconds", type=float, default=2.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    cfg = TrainConfig(phase=args.phase, scale=args.scale, batch_size=args.batch_size,
                      precision=args.precision, channels_last=args.channels_last,
                      compile=args.compile, compile_backend=args.compile_backend,
                      vgg_weights="random",
                      model=ModelConfig(args.blocks, args.channels, args.d_channels))  # fmt: skip
    torch.manual_seed(0)
    model = SRGANModel(cfg, args.hr_size, device, world_size=1)
    side = args.hr_size // args.scale
    lr = torch.rand(args.batch_size, 3, side, side, device=device)
    hr = torch.rand(args.batch_size, 3, args.hr_size, args.hr_size, device=device) * 2 - 1
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(args.warmup):
        model.train_step(lr, hr)
    if model.compile_state == "failed":
        sys.exit(f"bench/profile_step.py: torch.compile failed: {model.compile_error}")
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            model.train_step(lr, hr)
        sync()
    seconds = time.perf_counter() - started

    # own time per kernel (GPU) or operator (CPU), in microseconds
    attribute = "self_device_time_total" if cuda else "self_cpu_time_total"
    own = Counter()
    for event in prof.key_averages():
        if cuda and event.device_type.name != "CUDA":
            continue
        own[event.key] += getattr(event, attribute)
    total = sum(own.values()) or 1.0
    by_kind = Counter()
    for name, micros in own.items():
        by_kind[kind_of(name)] += micros
    layout = "channels_last" if args.channels_last else "NCHW"
    where = torch.cuda.get_device_name(0) if cuda else "CPU"
    images_per_s = args.batch_size * args.steps / seconds
    print(f"x{args.scale} {args.phase}, batch {args.batch_size}, B{args.blocks} C{args.channels}, "
          f"{args.precision}, {layout}, compile {args.compile}, {where}: {images_per_s:.1f} img/s "
          f"under the profiler ({args.steps} steps)")  # fmt: skip
    print(f"\ntop {args.top} {'kernels' if cuda else 'operators'} by own time")
    for name, micros in own.most_common(args.top):
        print(f"{micros / total:6.1%}  {kind_of(name):13} {name[:90]}")
    print("\nown time by kind")
    for kind, micros in by_kind.most_common():
        print(f"{micros / total:6.1%}  {kind}")

    flops = step_flops(cfg, args.hr_size)  # per image
    moved = layer_bytes(model, lr, hr) / args.batch_size  # per image, ESTIMATE
    peak = matmul_peak(device, args.precision, args.peak_seconds)
    bandwidth = copy_bandwidth(device, args.peak_seconds)
    intensity = flops / moved
    ceiling = min(peak, intensity * bandwidth) / flops  # img/s
    bound = "compute" if peak <= intensity * bandwidth else "memory"
    print("\nroofline (ESTIMATE: bytes = each layer's inputs, output and weights, x1 forward "
          "x2 backward; ceiling = min(peak, intensity x bandwidth) / FLOPs)")  # fmt: skip
    print(f"{flops / 1e9:.2f} GFLOP and {moved / 1e6:.1f} MB per image: {intensity:.1f} FLOP/byte; "
          f"matmul peak {peak / 1e12:.2f} TFLOP/s, copy {bandwidth / 1e9:.1f} GB/s (measured) "
          f"-> ridge {peak / bandwidth:.1f} FLOP/byte")  # fmt: skip
    print(f"ceiling {ceiling:.1f} img/s ({bound}-bound); this step {images_per_s:.1f} img/s = "
          f"{images_per_s / ceiling:.1%} of it, MFU {images_per_s * flops / peak:.1%}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps({
            "images_per_s": images_per_s, "flops_per_image": flops, "bytes_per_image": moved,
            "peak_flop_per_s": peak, "bandwidth_bytes_per_s": bandwidth,
            "ceiling_images_per_s": ceiling, "bound": bound,
            "own_time_by_kind": {k: v / total for k, v in by_kind.items()},
            "top": [{"name": n, "share": v / total, "kind": kind_of(n)}
                    for n, v in own.most_common(args.top)],
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
