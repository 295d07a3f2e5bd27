"""The gradient noise scale of the generator: which batch its training can use at all.

    python bench/noise_scale.py --data SHARDS --model CHECKPOINT_OR_RUN [--model ...]
        [--fresh 4,32] [--micro-batch 16] [--micro-batches 8] [--draws 24] [--weights raw]

Why: issue 24 asks for a batch that fills a GPU without losing val PSNR at equal images seen,
and on the CPU calibration batches of 64 and 256 lost (docs/RECIPE.md). McCandlish et al.
(2018, "An Empirical Model of Large-Batch Training", arXiv 1812.06162) predict that loss from one
measurable number, the simple noise scale B_noise = tr(Sigma) / |G|^2 (per-sample gradient
variance over the squared true gradient): to reach a given loss, batch B needs
E_min * (1 + B / B_noise) images and S_min * (1 + B_noise / B) steps. A batch well above B_noise
wastes images, one well below it wastes steps; the paper finds B_noise growing as the loss falls.

How: for each model, `--draws` times, `--micro-batches` batches of `--micro-batch` training
faces (the pretrain loss, pixel MSE, on the run's own shards and loader, flips on, BatchNorm in
training mode per micro-batch as under DDP) give gradients g_i; with b = micro-batch and
B = b * micro-batches, |G_b|^2 = mean |g_i|^2 and |G_B|^2 = |mean g_i|^2 give the paper's
unbiased estimates (its appendix A.1)
    |G|^2 = (B |G_B|^2 - b |G_b|^2) / (B - b),   tr(Sigma) = (|G_b|^2 - |G_B|^2) / (1/b - 1/B),
each averaged over the draws before their ratio is taken. The two halves of the draws are
reported alone too: how far they disagree is the estimate's noise. The gradients are plain
(not Adam's preconditioned step), as in the paper.

Models: a trainer checkpoint or run folder (the raw weights by default: the trajectory the
optimizer is on), a released `.safetensors` (its averaged weights), or `--fresh BLOCKS,CHANNELS`
(a generator as initialised, seed 0).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402
from torch import nn  # noqa: E402

from pipeline.archs import SRResNet  # noqa: E402
from pipeline.data.config import LoaderConfig  # noqa: E402
from pipeline.data.factory import build_loader  # noqa: E402
from pipeline.serving.generators import LOAD_ERRORS, load_generator  # noqa: E402
from pipeline.training.losses import pixel_loss  # noqa: E402

COMPARED = (16, 64, 256)  # batches whose predicted cost is printed against the first


@dataclass
class NoiseScale:
    """The paper's two estimates, averaged over draws, and their ratio."""

    true_gradient_sq: float  # |G|^2
    trace_sigma: float  # tr(Sigma), per sample

    @property
    def resolved(self) -> bool:
        """Both estimates positive: otherwise the draws did not separate the true gradient
        from the noise (|G|^2 <= 0: the noise swamps it, as at a run's annealed end), and no
        ratio means anything."""
        return self.true_gradient_sq > 0 and self.trace_sigma > 0

    @property
    def batch(self) -> float:
        """B_noise (nan where not resolved)."""
        return self.trace_sigma / self.true_gradient_sq if self.resolved else float("nan")

    def summary(self) -> str:
        """B_noise and what it predicts, or why there is nothing to predict."""
        if not self.resolved:
            return (f"B_noise unresolved (|G|^2 {self.true_gradient_sq:.4g}, tr(Sigma) "
                    f"{self.trace_sigma:.4g}: an estimate <= 0, the gradient lost in the noise; "
                    "more draws or a larger --micro-batches)")  # fmt: skip
        costs = ", ".join(f"batch {b} x{images_relative(b, COMPARED[0], self.batch):.2f}"
                          for b in COMPARED[1:])  # fmt: skip
        return (f"B_noise {self.batch:.1f} (|G|^2 {self.true_gradient_sq:.4g}, tr(Sigma) "
                f"{self.trace_sigma:.4g}); images to the same loss against batch {COMPARED[0]}: "
                f"{costs}")  # fmt: skip


def estimate(small_sq: list[float], big_sq: list[float], small: int, big: int) -> NoiseScale:
    """McCandlish et al.'s appendix A.1 from per-draw |G_small|^2 and |G_big|^2."""
    if big <= small:
        raise ValueError(f"the big batch ({big}) must exceed the small one ({small})")
    s, b = sum(small_sq) / len(small_sq), sum(big_sq) / len(big_sq)
    return NoiseScale((big * b - small * s) / (big - small), (s - b) / (1 / small - 1 / big))


def images_relative(batch: int, reference: int, noise: float) -> float:
    """Images batch `batch` needs to reach a loss, over what `reference` needs (the paper's
    E(B) = E_min (1 + B / B_noise))."""
    return (1 + batch / noise) / (1 + reference / noise)


def flat_gradient(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten().double() for p in model.parameters()
                      if p.grad is not None])  # fmt: skip


def measure(model: nn.Module, batches, micro_batches: int, draws: int, device: torch.device,
            loss: str = "mse") -> tuple[list[float], list[float]]:  # fmt: skip
    """Per draw: mean |g_i|^2 over the micro-batches and |mean g_i|^2. The model is left as it
    came (its BatchNorm statistics, no gradients, eval mode)."""
    kept = {name: value.clone() for name, value in model.state_dict().items()}
    model.train()
    small_sq, big_sq = [], []
    for _ in range(draws):
        total, squares = None, 0.0
        for _ in range(micro_batches):
            batch = next(batches)
            model.zero_grad(set_to_none=True)
            pixel_loss(model(batch.lr.to(device)), batch.hr.to(device), loss).backward()
            g = flat_gradient(model)
            squares += float(g.square().sum())
            total = g if total is None else total + g
        small_sq.append(squares / micro_batches)
        big_sq.append(float((total / micro_batches).square().sum()))
    model.zero_grad(set_to_none=True)
    model.load_state_dict(kept)
    model.eval()
    return small_sq, big_sq


def endless(loader):
    while True:
        yield from loader


NUMBER = r"([-+\d.eE]+|nan|inf)"
LINE = re.compile(rf"^(.+?) \(step (\d+), \w+\): B_noise .*?"
                  rf"\|G\|\^2 {NUMBER}, tr\(Sigma\) {NUMBER}", re.M)  # fmt: skip


def combine(logs: list[Path], first: int, last: int) -> str:
    """One noise scale for a stretch of a run from this script's lines for its checkpoints:
    the ratio of |G|^2's and tr(Sigma)'s averages over them (the paper's running averages over
    steps; one checkpoint's |G|^2 moves 40x between neighbours 128 steps apart)."""
    found: dict[tuple[str, int], tuple[float, float]] = {}
    for log in logs:
        for m in LINE.finditer(log.read_text()):
            if first <= int(m[2]) <= last:
                if (key := (m[1], int(m[2]))) in found:
                    raise ValueError(f"{log}: {m[1]} (step {m[2]}) measured twice in the logs")
                found[key] = float(m[3]), float(m[4])
    if not found:
        raise ValueError(
            f"no checkpoint line of steps {first}-{last} in {', '.join(map(str, logs))}"
        )
    true_sq = sum(f[0] for f in found.values()) / len(found)
    trace = sum(f[1] for f in found.values()) / len(found)
    steps = " ".join(str(step) for _, step in sorted(found, key=lambda k: k[1]))
    return (f"steps {steps}, {len(found)} checkpoints averaged: "
            f"{NoiseScale(true_sq, trace).summary()}")  # fmt: skip


def describe(name: str, small_sq: list[float], big_sq: list[float], small: int, big: int,
             seconds: float) -> str:  # fmt: skip
    half = len(small_sq) // 2
    parts = [(small_sq[:half], big_sq[:half]), (small_sq[half:], big_sq[half:])] if half else []
    halves = [estimate(s, b, small, big).batch for s, b in parts]
    return (f"{name}: {estimate(small_sq, big_sq, small, big).summary()}; halves of the draws: "
            f"{' / '.join(f'{h:.1f}' for h in halves)}; {len(small_sq)} draws of "
            f"{big // small} x {small} in {seconds:.0f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="srgan-preprocess shards")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="checkpoint, run folder or .safetensors (repeatable)",
    )
    parser.add_argument(
        "--fresh",
        action="append",
        default=[],
        metavar="BLOCKS,CHANNELS",
        help="an initialised generator (seed 0) at --scale (repeatable)",
    )
    parser.add_argument("--scale", type=int, default=4, help="for --fresh models")
    parser.add_argument("--weights", choices=["raw", "ema"], default="raw")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--micro-batches", type=int, default=8)
    parser.add_argument("--draws", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2, help="loader worker processes")
    parser.add_argument(
        "--pixel-loss",
        choices=["mse", "l1"],
        default="mse",
        help="the loss whose gradient is measured (the run's --pixel-loss)",
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="LOG",
        help="no measuring: one B_noise from earlier output's checkpoint lines",
    )
    parser.add_argument(
        "--steps",
        default="0-999999999",
        metavar="FIRST-LAST",
        help="with --combine: the checkpoints' steps to average over",
    )
    args = parser.parse_args(argv)
    if args.combine:
        try:
            first, last = (int(v) for v in args.steps.split("-"))
            print(combine(args.combine, first, last))
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        return
    if args.data is None:
        parser.error("--data is required (the shards to draw training faces from)")
    if not args.model and not args.fresh:
        parser.error("name at least one --model or --fresh")
    if args.micro_batches < 2 or args.draws < 1:
        parser.error("--micro-batches must be >= 2 and --draws >= 1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models: list[tuple[str, nn.Module, int]] = []
    for source in args.model:
        try:
            loaded = load_generator(source, device, args.weights)
        except LOAD_ERRORS as exc:
            parser.error(str(exc))
        models.append((f"{source} (step {loaded.step}, {loaded.weights})", loaded.model,
                       loaded.scale))  # fmt: skip
    for spec in args.fresh:
        try:
            blocks, channels = (int(v) for v in spec.split(","))
        except ValueError:
            parser.error(f"--fresh {spec!r}: expected BLOCKS,CHANNELS, e.g. 4,32")
        torch.manual_seed(0)
        models.append((f"fresh B{blocks} C{channels} x{args.scale}",
                       SRResNet(args.scale, blocks, channels).to(device), args.scale))  # fmt: skip
    big = args.micro_batch * args.micro_batches
    print(f"device {device}, micro-batch {args.micro_batch}, {args.micro_batches} per draw "
          f"(B = {big}), {args.draws} draws, {args.weights} weights, shards {args.data}",
          flush=True)  # fmt: skip
    for name, model, scale in models:
        cfg = LoaderConfig(args.data, "train", scale, args.micro_batch, backend="reference",
                           threads=args.threads)  # fmt: skip
        started = time.perf_counter()
        small_sq, big_sq = measure(model, endless(build_loader(cfg)), args.micro_batches,
                                   args.draws, device, args.pixel_loss)  # fmt: skip
        print(describe(name, small_sq, big_sq, args.micro_batch, big,
                       time.perf_counter() - started), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
