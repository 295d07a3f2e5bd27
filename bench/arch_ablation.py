"""Where does the generator lose its dB? Variants of SRResNet on one plain training loop.

    python bench/arch_ablation.py [--celeba ../shared/data/celeba] [--steps 600]
        [--eval-at 300,600] [--variants project,tanh,...] [--seeds 0] [--train-faces 2000]

Issue 13 measured about 0.6 dB lost in the network's definition or initialisation: on a plain
loop (lossless faces in memory, batch 16 drawn with replacement, pixel MSE, Adam at a constant
1e-3) the project's SRResNet(4, 4, 32) ended 0.6 dB below a plain net of the same size. This
script runs that loop for each variant of the project's net (one change each, see VARIANTS)
from the same seed and the same batches, and prints the val Y-PSNR gain over bicubic (border 4,
200 val faces of the faces128 protocol) at each evaluation. Val only: the test split is for the
final evaluation.

The lr follows a warm-up and a cosine decay to 0 by default (`--schedule constant` for issue
13's loop): at a constant 1e-3 the val gain of one net moves by a dB between evaluations
(docs/RECIPE.md), which would drown the differences between nets.

It is deliberately not the trainer: the trainer's data path is measured by bench/recipe.py;
here only the network changes between rows.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from pipeline.archs.srresnet import SRResNet, icnr_  # noqa: E402
from pipeline.evaluation.metrics import psnr  # noqa: E402
from preprocess.celeba import read_partition  # noqa: E402
from preprocess.images import center_crop, resize_bicubic  # noqa: E402

SCALE, HR, CROP = 4, 128, 178


def _reinit_upsample_default(g: SRResNet) -> None:
    """PyTorch's default conv init in place of ICNR: every sub-pixel starts different."""
    for stage in g.upsample:
        stage.conv.reset_parameters()


def _icnr_kaiming(g: SRResNet) -> None:
    """ICNR with a kaiming_normal base kernel (std sqrt(2/fan_in)): the init issue 13 measured,
    2.45x the scale of PyTorch's default that icnr_ now uses."""
    for stage in g.upsample:
        conv = stage.conv
        base = torch.empty(conv.out_channels // 4, conv.in_channels, 3, 3)
        nn.init.kaiming_normal_(base)
        with torch.no_grad():
            conv.weight.copy_(base.repeat_interleave(4, dim=0))


def _shared_prelu(g: nn.Module) -> None:
    for module in list(g.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.PReLU):
                setattr(module, child_name, nn.PReLU(1))


def _no_batchnorm(g: nn.Module) -> None:
    """BN out, a bias on every conv in (EDSR's finding for SR)."""
    for module in list(g.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, nn.Identity())
            elif isinstance(child, nn.Conv2d) and child.bias is None:
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                 padding=child.padding)  # fmt: skip
                with torch.no_grad():
                    conv.weight.copy_(child.weight)
                setattr(module, child_name, conv)


def _issue13(*changes: Callable[[SRResNet], None], output: str = "linear") -> nn.Module:
    """The net issue 13 measured (linear output, kaiming ICNR), then `changes`."""
    g = SRResNet(SCALE, 4, 32, output=output)
    _icnr_kaiming(g)
    for change in changes:
        change(g)
    return g


# One change each against issue 13's net, and the project's net as it is now.
VARIANTS: dict[str, Callable[[], nn.Module]] = {
    "issue13": lambda: _issue13(),
    "tanh": lambda: _issue13(output="tanh"),
    "upsample-default-init": lambda: _issue13(_reinit_upsample_default),
    "icnr-default-gain": lambda: _issue13(lambda g: [icnr_(s.conv.weight, 2) for s in g.upsample]),
    "prelu-shared": lambda: _issue13(_shared_prelu),
    "no-bn": lambda: _issue13(_no_batchnorm),
    "project": lambda: SRResNet(SCALE, 4, 32),  # tanh, ICNR at PyTorch's default scale
}


def load_faces(celeba: Path, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HR in [0, 1] (N x 3 x 128 x 128) and its lossless bicubic LR (N x 3 x 32 x 32)."""
    names = [n for n in read_partition(celeba / "list_eval_partition.txt")[split]
             if (celeba / "img_align_celeba" / n).is_file()][:count]  # fmt: skip
    hrs, lrs = [], []
    for name in names:
        with Image.open(celeba / "img_align_celeba" / name) as image:
            hr = resize_bicubic(center_crop(image.convert("RGB"), CROP), HR)
        lr = resize_bicubic(hr, HR // SCALE)
        hrs.append(np.asarray(hr))
        lrs.append(np.asarray(lr))

    def tensor(images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0

    return tensor(hrs), tensor(lrs)


@torch.no_grad()
def gain_over_bicubic(g: nn.Module, hr: torch.Tensor, lr: torch.Tensor) -> float:
    g.eval()
    sr = torch.cat([(g(lr[i : i + 50]) + 1) / 2 for i in range(0, len(lr), 50)])
    g.train()
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=SCALE, mode="bicubic",
                                              align_corners=False)  # fmt: skip
    return (psnr(sr, hr, border=SCALE) - psnr(bicubic, hr, border=SCALE)).mean().item()


def train(variant: str, seed: int, data: dict[str, tuple[torch.Tensor, torch.Tensor]],
          args: argparse.Namespace) -> dict[int, float]:  # fmt: skip
    torch.manual_seed(seed)
    g = VARIANTS[variant]()
    optimizer = torch.optim.Adam(g.parameters(), lr=args.lr)
    warmup = min(args.warmup_steps, args.steps)
    hr_train, lr_train = data["train"]
    batches = torch.Generator().manual_seed(1000 + seed)  # the same batches for every variant
    gains = {}
    for step in range(1, args.steps + 1):
        index = torch.randint(len(hr_train), (args.batch_size,), generator=batches)
        flip = torch.rand(args.batch_size, generator=batches) < 0.5
        hr, lr = hr_train[index], lr_train[index]
        hr = torch.where(flip.view(-1, 1, 1, 1), hr.flip(-1), hr)
        lr = torch.where(flip.view(-1, 1, 1, 1), lr.flip(-1), lr)
        if args.schedule == "cosine":
            progress = max(step - warmup, 0) / max(args.steps - warmup, 1)
            scale = min(step / warmup, 1.0) if warmup and step <= warmup else 1.0
            for group in optimizer.param_groups:
                group["lr"] = args.lr * scale * 0.5 * (1 + math.cos(math.pi * progress))
        loss = nn.functional.mse_loss(g(lr), hr * 2 - 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step in args.eval_at:
            gains[step] = gain_over_bicubic(g, *data["val"])
    return gains


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--celeba", type=Path, default=ROOT.parent / "shared/data/celeba")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-at", default="300,600")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--train-faces", type=int, default=2000)
    parser.add_argument("--val-faces", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    parser.add_argument("--warmup-steps", type=int, default=30)
    args = parser.parse_args(argv)
    args.eval_at = {int(s) for s in args.eval_at.split(",")} | {args.steps}
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if not (args.celeba / "list_eval_partition.txt").is_file():
        parser.error(f"{args.celeba}: no list_eval_partition.txt (the CelebA folder)")
    started = time.perf_counter()
    data = {"train": load_faces(args.celeba, "train", args.train_faces),
            "val": load_faces(args.celeba, "val", args.val_faces)}  # fmt: skip
    print(f"faces: {len(data['train'][0])} train, {len(data['val'][0])} val, loaded in "
          f"{time.perf_counter() - started:.0f} s; {torch.get_num_threads()} threads",
          flush=True)  # fmt: skip
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in variants:
            started = time.perf_counter()
            gains = train(variant, seed, data, args)
            trail = " ".join(f"{step}:{gain:+.3f}" for step, gain in sorted(gains.items()))
            print(f"seed {seed} {variant:24s} {trail}  ({time.perf_counter() - started:.0f} s)",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
