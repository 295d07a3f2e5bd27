"""What the trainer costs on top of the model, what the loader leaves spare, and DDP scaling.

    python bench/trainer.py --data SHARDS [--scale 4] [--phase pretrain] [--batch-size 16]
        [--blocks 4 --channels 32 --d-channels 16] [--steps 60] [--channels-last]
        [--precision fp32] [--nproc 1,2] [--threads-per-process N]

Rows, all in one run on the same shards and model:
- bare loop: `SRGANModel.train_step` on one batch already in memory, no loader, no logging;
- the real trainer (`torchrun -m pipeline.train`: DALI loader, DDP, MLflow logging, a
  checkpoint halfway) with 1 and with N processes; its images/s and data-wait fraction are
  read back from its own MLflow metrics, the first logging window (warm-up) left out;
- the loader alone (training settings, this process): images/s it can deliver.
Then: trainer / bare loop (target >= 0.90), loader headroom = loader / trainer images/s
(target > 1.5 on a GPU), and DDP efficiency = N-process images/s / (N x 1-process images/s).
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
from pipeline.training.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.training.perf import seconds_per_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def bare_loop(cfg: TrainConfig, hr_size: int, steps: int) -> float:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return cfg.batch_size / seconds_per_step(cfg, hr_size, device, warmup=3, steps=steps)


def trainer(args: argparse.Namespace, nproc: int, work: Path) -> tuple[float, float]:
    """Global images/s and data-wait fraction of `torchrun -m pipeline.train`, from MLflow."""
    import mlflow

    out, db = work / f"run-{nproc}", work / f"mlflow-{nproc}.db"
    log_every = max(args.steps // 6, 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "pipeline.train", "--data", str(args.data),
           "--scale", str(args.scale), "--phase", args.phase, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--blocks", str(args.blocks),
           "--channels", str(args.channels), "--d-channels", str(args.d_channels),
           "--precision", args.precision, "--log-every", str(log_every),
           "--checkpoint-every", str(args.steps // 2), "--eval-every", str(10**9),
           "--eval-batches", "1", "--out", str(out), "--tracking-uri", f"sqlite:///{db}",
           "--vgg-weights", "random"]  # fmt: skip
    # explicit both ways: the trainer's auto default differs by device, the bare loop's does not
    cmd.append("--channels-last" if args.channels_last else "--no-channels-last")
    env = dict(os.environ)
    if args.threads_per_process:
        env["OMP_NUM_THREADS"] = str(args.threads_per_process)  # torchrun keeps a value set
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=env)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    ips = [m.value for m in client.get_metric_history(run.info.run_id, "perf/images_per_s")]
    wait = [m.value for m in client.get_metric_history(run.info.run_id, "perf/data_wait_fraction")]
    ips, wait = ips[1:], wait[1:]  # the first window holds start-up
    return sum(ips) / len(ips), sum(wait) / len(wait)


def loader_alone(args: argparse.Namespace, seconds: float = 8.0) -> float:
    cfg = LoaderConfig(data=args.data, split="train", scale=args.scale,
                       batch_size=args.batch_size)  # fmt: skip
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
    p.add_argument("--nproc", default="1,2", help="process counts for the trainer rows")
    p.add_argument("--threads-per-process", type=int, help="CPU threads of each process")
    args = p.parse_args()
    if args.threads_per_process:
        torch.set_num_threads(args.threads_per_process)  # the bare loop, like each trainer

    hr_size = open_split(args.data, "train", args.scale).manifest["hr_size"]
    cfg = TrainConfig(phase=args.phase, scale=args.scale, batch_size=args.batch_size,
                      precision=args.precision, channels_last=args.channels_last,
                      vgg_weights="random",
                      model=ModelConfig(args.blocks, args.channels, args.d_channels))  # fmt: skip
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"x{args.scale} {args.phase}, batch {args.batch_size} per process, B{args.blocks} "
          f"C{args.channels}, {args.precision}, {layout}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} threads per process, "
          f"CUDA: {torch.cuda.is_available()}")  # fmt: skip
    bare = bare_loop(cfg, hr_size, args.steps)
    print(f"{'bare loop, 1 process':34} {bare:9.1f} img/s")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in map(int, args.nproc.split(",")):
            ips, wait = trainer(args, nproc, Path(tmp))
            results[nproc] = ips
            print(f"{f'trainer, {nproc} process(es)':34} {ips:9.1f} img/s   "
                  f"data wait {wait:6.1%} of step time")  # fmt: skip
    feed = loader_alone(args)
    print(f"{'loader alone (DALI, training)':34} {feed:9.1f} img/s")
    one = results.get(1)
    if one:
        print(f"\ntrainer / bare loop (1 process): {one / bare:.2f}   (target >= 0.90)")
        print(f"loader headroom: {feed / one:.1f}x the trainer's consumption (GPU target > 1.5)")
        for nproc, ips in results.items():
            if nproc > 1:
                print(f"DDP {nproc} processes: {ips / one:.2f}x one process, "
                      f"efficiency {ips / (nproc * one):.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
