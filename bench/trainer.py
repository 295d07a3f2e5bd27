"""What the trainer costs on top of the model, what the loader leaves spare, and DDP scaling.

    python bench/trainer.py --data SHARDS [--scale 4] [--phase pretrain] [--batch-size 16]
        [--blocks 4 --channels 32 --d-channels 16] [--steps 60] [--channels-last]
        [--precision fp32] [--compile off|on] [--compile-backend inductor]
        [--loader-threads 2] [--nproc 1,2]
        [--threads-per-process N] [--skip-loader] [--peak-seconds 2]

Rows, all in one run on the same shards and model:
- bare loop: `SRGANModel.train_step` on one batch already in memory, no loader, no logging;
- the real trainer (`torchrun -m pipeline.train`: DALI loader, DDP, MLflow logging, a
  checkpoint halfway) with 1 and with N processes; its images/s and data-wait fraction are
  read back from its own tracking journal, the first logging window (warm-up) left out;
- the loader alone (training settings, this process): images/s it can deliver.
Then: trainer / bare loop (target >= 0.90), loader headroom = loader / trainer images/s
(target > 1.5 on a GPU), and DDP efficiency = N-process images/s / (N x 1-process images/s).
Each row's MFU: images/s x the step's FLOPs per image (pipeline/training/perf.py) / a large
matmul's FLOP/s in the row's precision, measured first in this run. `--compile on` compiles
the bare loop and the trainer alike (bench/gpu_check.sh's trainer parts).
On a CPU, --threads-per-process 1 makes that comparison core for core: by default one process
uses every core, so N processes on the same cores cannot be N times faster.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402

from pipeline.data import LoaderConfig, build_loader  # noqa: E402
from pipeline.data.shardset import open_split  # noqa: E402
from pipeline.runtime.distributed import ProcessPlace  # noqa: E402
from pipeline.tracking.journal import load  # noqa: E402
from pipeline.training.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.training.perf import (  # noqa: E402
    matmul_peak,
    peak_label,
    seconds_per_step,
    step_flops,
)
from pipeline.training.steps import SRGANModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(cfg: TrainConfig, hr_size: int, steps: int) -> float:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return cfg.batch_size / seconds_per_step(cfg, hr_size, device, warmup=3, steps=steps)


def trainer(args: argparse.Namespace, nproc: int, work: Path) -> tuple[float, float]:
    """Global images/s and data-wait fraction of `torchrun -m pipeline.train`, from its run's
    tracking journal (what it sends to MLflow; read here so that no MLflow is needed, as on a
    bare GPU machine)."""
    out, db = work / f"run-{nproc}", work / f"mlflow-{nproc}.db"
    init = []
    if args.phase == "gan":  # the GAN phase starts from a generator: an untrained one will do
        init = ["--init", str(generator_checkpoint(args, work / "init.pt"))]
    log_every = max(args.steps // 6, 1)
    # one process without torchrun: torchrun puts its workers in a session of their own, which
    # a time limit on this script (bench/gpu_check.sh's parts) would not stop
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [sys.executable, *(launcher if nproc > 1 else []), "-m", "pipeline.train",
           "--data", str(args.data),
           "--scale", str(args.scale), "--phase", args.phase, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--blocks", str(args.blocks),
           "--channels", str(args.channels), "--d-channels", str(args.d_channels),
           "--precision", args.precision, "--log-every", str(log_every),
           "--checkpoint-every", str(args.steps // 2), "--eval-every", str(10**9),
           "--eval-batches", "1", "--out", str(out), "--tracking-uri", f"sqlite:///{db}",
           "--vgg-weights", "random", "--compile", args.compile,
           "--compile-backend", args.compile_backend,
           "--loader-threads", str(args.loader_threads), *init]  # fmt: skip
    # explicit both ways: the trainer's auto default differs by device, the bare loop's does not
    cmd.append("--channels-last" if args.channels_last else "--no-channels-last")
    env = dict(os.environ)
    if args.threads_per_process:
        env["OMP_NUM_THREADS"] = str(args.threads_per_process)  # torchrun keeps a value set
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(
            f"bench/trainer.py: the trainer failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    records, _ = load(out / "tracking")
    windows = [
        r["data"] for r in records if r["kind"] == "metrics" and "perf/images_per_s" in r["data"]
    ]
    windows = windows[1:]  # the first window holds start-up
    ips = [w["perf/images_per_s"] for w in windows]
    wait = [w["perf/data_wait_fraction"] for w in windows]
    return sum(ips) / len(ips), sum(wait) / len(wait)


def generator_checkpoint(args: argparse.Namespace, path: Path) -> Path:
    """A checkpoint holding a freshly initialised generator of the bench's size (--init)."""
    cfg = TrainConfig(scale=args.scale, phase="pretrain", precision="fp32",
                      model=ModelConfig(args.blocks, args.channels, args.d_channels))  # fmt: skip
    model = SRGANModel(cfg, 128, torch.device("cpu"), world_size=1)
    torch.save({"step": 0, "model": model.state_dict(), "config": cfg.to_dict()}, path)
    return path


def loader_alone(args: argparse.Namespace, seconds: float = 8.0) -> float:
    cfg = LoaderConfig(data=args.data, split="train", scale=args.scale,
                       batch_size=args.batch_size, threads=args.loader_threads)  # fmt: skip
    loader = build_loader(cfg, ProcessPlace())
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in loader:
            images += batch.hr.shape[0]
            if time.perf_counter() - start >= seconds:
                break
    return images / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--phase", default="pretrain", choices=["pretrain", "gan"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--d-channels", type=int, default=16)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", default="off", choices=["off", "on"])
    p.add_argument("--compile-backend", default="inductor", help="aot_eager: no codegen (tests)")
    p.add_argument("--loader-threads", type=int, default=2)
    p.add_argument("--skip-loader", action="store_true", help="leave out the loader-alone row")
    p.add_argument("--peak-seconds", type=float, default=2.0, help="the matmul peak's timing")
    p.add_argument("--nproc", default="1,2", help="process counts for the trainer rows")
    p.add_argument("--threads-per-process", type=int, help="CPU threads of each process")
    args = p.parse_args()
    if args.threads_per_process:
        torch.set_num_threads(args.threads_per_process)  # the bare loop, like each trainer

    hr_size = open_split(args.data, "train", args.scale).manifest["hr_size"]
    cfg = TrainConfig(phase=args.phase, scale=args.scale, batch_size=args.batch_size,
                      precision=args.precision, channels_last=args.channels_last,
                      vgg_weights="random", compile=args.compile,
                      compile_backend=args.compile_backend,
                      model=ModelConfig(args.blocks, args.channels, args.d_channels))  # fmt: skip
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"x{args.scale} {args.phase}, batch {args.batch_size} per process, B{args.blocks} "
          f"C{args.channels}, {args.precision}, {layout}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} threads per process, "
          f"CUDA: {torch.cuda.is_available()}")  # fmt: skip
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    flops = step_flops(cfg, hr_size)
    peak = matmul_peak(device, args.precision, args.peak_seconds)
    print(f"{flops / 1e9:.2f} GFLOP per image per step; peak {peak / 1e9:.1f} GFLOP/s "
          f"({peak_label(device, args.precision)} matmul, measured)")  # fmt: skip

    mfus: list[float] = []

    def mfu(images_per_s: float, processes: int = 1) -> str:
        mfus.append(images_per_s * flops / (processes * peak))
        return f"MFU {mfus[-1]:6.1%}"

    bare = bare_loop(cfg, hr_size, args.steps)
    print(f"{'bare loop, 1 process':34} {bare:9.2f} img/s   {mfu(bare)}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in map(int, args.nproc.split(",")):
            ips, wait = trainer(args, nproc, Path(tmp))
            results[nproc] = ips
            print(f"{f'trainer, {nproc} process(es)':34} {ips:9.2f} img/s   {mfu(ips, nproc)}   "
                  f"data wait {wait:6.1%} of step time")  # fmt: skip
    feed = None if args.skip_loader else loader_alone(args)
    if feed is not None:
        print(f"{'loader alone (training settings)':34} {feed:9.1f} img/s")
    if max(mfus) > 1:
        print("MFU above 100%: the matmul peak measured below what the step reached (other "
              "work while it was timed, or a precision whose matmul is slower than its "
              "convolutions here)")  # fmt: skip
    one = results.get(1)
    if one:
        print(f"\ntrainer / bare loop (1 process): {one / bare:.3f}   (target >= 0.90)")
        if feed is not None:
            print(f"loader headroom: {feed / one:.1f}x the trainer's consumption "
                  "(GPU target > 1.5)")  # fmt: skip
        for nproc, ips in results.items():
            if nproc > 1:
                print(f"DDP {nproc} processes: {ips / one:.2f}x one process, "
                      f"efficiency {ips / (nproc * one):.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
