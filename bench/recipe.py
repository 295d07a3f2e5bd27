"""Does a recipe converge? The small-model calibration of issue 13, recipes side by side.

    python bench/recipe.py --data SHARDS [--old-data JPEG_LR_SHARDS] [--steps 2000]
        [--eval-every 250] [--recipes old,new] [--blocks 4 --channels 32 --batch-size 16]
        [--work DIR] [--extra "FLAGS"]

Each recipe is a real `python -m pipeline.train` 4x pretrain run (fp32, one process) on the
same shards from the same seed; its val Y-PSNR and the bicubic baseline's are read back from
its tracking journal at every evaluation. Printed: one row per number of training images seen
(step x batch, so that recipes of different batches line up) with each recipe's gain over
bicubic in dB, then per recipe the final gain, the best gain, and the largest fall below the
best evaluation before it (issue 13's targets: the new recipe ends >= +1.0 dB, and no
evaluation falls more than 0.1 dB below an earlier best).

RECIPES holds the flags that make each recipe; `--recipe NAME=FLAGS` adds one (ablations). A
recipe's flags come last, so they may set its own --batch-size, --steps and --eval-every: issue
24's check of a GPU batch at equal images is

    python bench/recipe.py --data SHARDS --recipes new,b256 --eval-every 400
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(ROOT))

from pipeline.tracking.journal import load  # noqa: E402

RECIPES = {
    # what issue 13 measured: linear output head, constant lr 1e-3, no warm-up, no weight
    # average (and JPEG LR: give it such shards with --old-data). Its kaiming ICNR init is no
    # longer in the code: bench/arch_ablation.py measures that one.
    "old": "--output linear --lr 1e-3 --schedule constant --warmup-steps 0 --ema-decay 0",
    # the defaults (tanh head, ICNR at PyTorch's scale), a warm-up and cosine decay to 0 from
    # 2e-3, the warmed-up weight average of G (evaluated)
    "new": "--lr 2e-3 --schedule cosine --warmup-steps 50 --min-lr 0 --ema-decay 0.999",
}
# configs/h200.toml's rule on the calibration: 16 times the batch in 1/16 of the steps (2,000
# at batch 16), the warm-up and the evaluations too, the lr of batch 16 scaled by sqrt(16), the
# weight average's horizon kept in images (0.999^16)
RECIPES["b256"] = (RECIPES["new"] + " --batch-size 256 --steps 125 --eval-every 25 "
                   "--warmup-steps 3 --lr-scaling sqrt --lr-reference-batch 16 "
                   "--ema-decay 0.9841")  # fmt: skip


def run(name: str, flags: str, args: argparse.Namespace, work: Path) -> dict[int, float]:
    """Val Y-PSNR gain over bicubic (dB) by training images seen at each evaluation of one
    training run, read from the run's tracking journal (so it works where MLflow is not
    installed, as on a bare GPU machine)."""
    out = work / name
    data = args.old_data if name == "old" and args.old_data else args.data
    cmd = [sys.executable, "-m", "pipeline.train", "--data", str(data), "--scale", "4",
           "--phase", "pretrain", "--steps", str(args.steps), "--batch-size",
           str(args.batch_size), "--blocks", str(args.blocks), "--channels", str(args.channels),
           "--precision", args.precision, "--eval-every", str(args.eval_every),
           "--checkpoint-every", str(args.steps), "--log-every", str(args.eval_every),
           "--seed", str(args.seed), "--out", str(out),
           "--tracking-uri", f"sqlite:///{work / f'{name}.db'}",
           *shlex.split(flags), *shlex.split(args.extra)]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"recipe {name}: pipeline.train exited {result.returncode}:\n"
                 f"{result.stderr[-3000:]}")  # fmt: skip
    records, _ = load(out / "tracking")
    (params,) = (r["data"] for r in records if r.get("kind") == "params")
    batch = int(params["config.batch_size"]) * int(params["world_size"])
    gains = {
        record["step"] * batch: record["data"]["val/sr_psnr_y"]
        - record["data"]["val/bicubic_psnr_y"]
        for record in records
        if record.get("kind") == "metrics" and "val/sr_psnr_y" in record.get("data", {})
    }
    trail = " ".join(f"{gains[seen]:+.2f}" for seen in sorted(gains))
    print(f"recipe {name}: batch {batch}, {len(gains)} evaluations in "
          f"{time.perf_counter() - started:.0f} s: {trail} ({flags})", flush=True)  # fmt: skip
    return gains


def worst_fall(gains: dict[int, float]) -> float:
    """The largest drop of an evaluation below the best one before it (dB, >= 0)."""
    best, fall = float("-inf"), 0.0
    for step in sorted(gains):
        fall = max(fall, best - gains[step])
        best = max(best, gains[step])
    return fall


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="faces128 shards")
    p.add_argument("--old-data", type=Path,
                   help="the old recipe's shards (issue 13's: JPEG LR) [--data]")  # fmt: skip
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipes", default="old,new", help="comma-separated names of RECIPES")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=FLAGS",
                   help="one more recipe (repeatable)")  # fmt: skip
    p.add_argument("--extra", default="", help="flags appended to every run")
    p.add_argument("--work", type=Path, help="keep runs here (default: a temporary folder)")
    args = p.parse_args(argv)

    recipes = {name: RECIPES[name] for name in args.recipes.split(",") if name}
    for item in args.recipe:
        name, _, flags = item.partition("=")
        recipes[name] = flags
    with tempfile.TemporaryDirectory(prefix="recipe-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"4x pretrain, B{args.blocks} C{args.channels}, batch {args.batch_size}, "
              f"{args.steps} steps (unless a recipe's flags say otherwise), {args.precision}, "
              f"seed {args.seed}, shards {args.data}"
              + (f" (old: {args.old_data})" if args.old_data else ""),
              flush=True)  # fmt: skip
        gains = {name: run(name, flags, args, work) for name, flags in recipes.items()}

    names = list(gains)
    print("\nval Y-PSNR gain over bicubic (dB)")
    print("| images seen | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for seen in sorted({s for g in gains.values() for s in g}):
        cells = [f"{gains[n][seen]:+.2f}" if seen in gains[n] else "" for n in names]
        print(f"| {seen} | " + " | ".join(cells) + " |")
    print()
    for name in names:
        last = max(gains[name])
        print(f"{name}: final {gains[name][last]:+.2f} dB at {last} images, best "
              f"{max(gains[name].values()):+.2f} dB, worst fall below an earlier best "
              f"{worst_fall(gains[name]):.2f} dB")  # fmt: skip


if __name__ == "__main__":
    main()
