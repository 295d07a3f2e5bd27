"""The GPU-only code paths, checked on a real GPU: nccl across ranks, BatchNorm statistics
shared across ranks, AMP (bf16, fp16 with GradScaler), channels_last, torch.compile, DALI's
nvJPEG decoding against the CPU decoder, and a step loop free of host-device syncs between
logging steps.

    python bench/gpu_checks.py [--data SHARDS]      # run by bench/gpu_check.sh
    python bench/gpu_checks.py --cross-rank-cpu [--unsynced-batchnorm]   # CI, no GPU

CI has no GPU: each path here also has a CPU test (gloo, AllReduceBatchNorm2d, fp32); this
script is the other half, for the rare runs on a device machine. The cross-rank checks run in
2 processes (one GPU each, NCCL) where there are 2 GPUs; with one GPU they are reported as NOT
CHECKED, since one process proves nothing about what crosses between ranks. `--cross-rank-cpu`
runs them in 2 gloo processes on the CPU instead (tests/bench/test_gpu_check.py), and
`--unsynced-batchnorm` is its control: plain BatchNorm in place of the synchronised one, which
the BatchNorm check must FAIL. Prints one PASS / FAIL / SKIPPED / NOT CHECKED line per check
with its numbers, then a summary line counting each, and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402

from pipeline.archs import SRResNet  # noqa: E402
from pipeline.archs.sync_bn import sync_batchnorm  # noqa: E402
from pipeline.training.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.training.steps import SRGANModel  # noqa: E402

OUTCOMES = ("PASS", "FAIL", "SKIPPED", "NOT CHECKED")
RANKS = 2  # processes of the cross-rank checks
CHECKS: list[Callable[[argparse.Namespace], str]] = []  # run in this process, on cuda:0
CROSS_RANK: list[Callable[[torch.device, bool], str]] = []  # run on each of RANKS processes


class Skipped(Exception):
    """A check that could not run here (no --data, no DALI): printed and counted as SKIPPED,
    never as PASS."""


def check(fn):  # type: ignore[no-untyped-def]
    CHECKS.append(fn)
    return fn


def cross_rank(fn):  # type: ignore[no-untyped-def]
    CROSS_RANK.append(fn)
    return fn


def attempt(fn: Callable[[], str]) -> tuple[str, float, str]:
    """(outcome, seconds, what it showed) of one check; a failure's text is its traceback."""
    start = time.perf_counter()
    try:
        outcome, detail = "PASS", fn()
    except Skipped as exc:
        outcome, detail = "SKIPPED", str(exc)
    except Exception:  # noqa: BLE001 - each check reports and the rest still run
        outcome, detail = "FAIL", "\n" + traceback.format_exc()
    return outcome, time.perf_counter() - start, detail


def report(counts: Counter[str], name: str, outcome: str, seconds: float, detail: str) -> None:
    counts[outcome] += 1
    print(f"{outcome} {name} ({seconds:.1f} s): {detail}", flush=True)


def summary(counts: Counter[str]) -> str:
    return "summary: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES)


@contextlib.contextmanager
def no_host_syncs(device: torch.device) -> Iterator[None]:
    """On CUDA, any host-device sync inside raises (CUDA's sync debug mode); elsewhere a no-op."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


@cross_rank
def all_reduce_sums_across_ranks(device: torch.device, unsynced_batchnorm: bool) -> str:
    """Rank r sends r + 1: every rank must get 1 + 2 + ... + world, which one process cannot
    fake."""
    world = dist.get_world_size()
    t = torch.full((4,), float(dist.get_rank() + 1), device=device)
    dist.all_reduce(t)
    expected = world * (world + 1) / 2
    assert torch.equal(t, torch.full_like(t, expected)), (dist.get_rank(), t.tolist(), expected)
    return f"backend {dist.get_backend()}, {world} ranks, each got the sum {expected:g}"


def batchnorm_against_whole_batch(device: torch.device, rank: int, world: int, synced: bool) -> str:
    """Rank `rank` of `world` normalises its rows of one global batch whose rank blocks differ
    (block r shifted by 4r, so per-rank statistics are far from the global ones); its outputs,
    input gradients and running statistics must equal those of BatchNorm over the whole batch
    in one process. `synced=False` is the control: plain BatchNorm on each rank, which must
    fail wherever there is more than one rank."""
    per_rank, channels = 4, 8
    torch.manual_seed(0)
    offsets = 4.0 * torch.arange(world, device=device).repeat_interleave(per_rank)
    x = torch.randn(world * per_rank, channels, 6, 6, device=device) * 3 + 5
    x += offsets.view(-1, 1, 1, 1)
    loss_weights = torch.rand_like(x)  # a loss whose input gradient is not symmetric
    plain = nn.BatchNorm2d(channels).to(device)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    mine = nn.BatchNorm2d(channels).to(device)
    mine.load_state_dict(plain.state_dict())
    if synced:
        mine = sync_batchnorm(mine)
    whole = x.clone().requires_grad_(True)
    expected = plain(whole)
    (expected * loss_weights).sum().backward()
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    part = x[rows].clone().requires_grad_(True)
    with no_host_syncs(device):
        out = mine(part)
        (out * loss_weights[rows]).sum().backward()
    diffs = {
        "out": (out - expected[rows]).abs().max().item(),
        "grad": (part.grad - whole.grad[rows]).abs().max().item(),  # type: ignore[operator]
        "stats": max((mine.running_mean - plain.running_mean).abs().max().item(),
                     (mine.running_var - plain.running_var).abs().max().item()),
    }  # fmt: skip
    shown = ", ".join(f"max |{k} diff| {v:.1e}" for k, v in diffs.items())
    assert max(diffs.values()) < 1e-4, f"rank {rank}: {type(mine).__name__}: {shown}"
    return f"{type(mine).__name__}, {world} rank(s) of {per_rank} rows: {shown}"


@cross_rank
def batchnorm_statistics_span_ranks(device: torch.device, unsynced_batchnorm: bool) -> str:
    return batchnorm_against_whole_batch(
        device, dist.get_rank(), dist.get_world_size(), synced=not unsynced_batchnorm
    )


@cross_rank
def batchnorm_compiles_whole_across_ranks(device: torch.device, unsynced_batchnorm: bool) -> str:
    """A network holding the all-reduce BatchNorm compiles in one piece across ranks, with the
    gradients of eager: its all-reduce once made dynamo give up on every module holding one
    (multi-GPU runs stayed eager), and sums about the running mean, compiled, gave wrong
    gradients (the backward read the running mean after the forward's update)."""
    from torch._dynamo.utils import counters

    def network() -> nn.Module:
        torch.manual_seed(0)
        layers = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU())
        return (layers if unsynced_batchnorm else sync_batchnorm(layers)).to(device)

    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(dist.get_rank()))
    grads = []
    for compiled in (False, True):
        net = network()
        run = torch.compile(net, backend="inductor" if device.type == "cuda" else "aot_eager")
        counters.clear()
        (run if compiled else net)(x.to(device)).square().mean().backward()
        grads.append(net[0].weight.grad)
    frames = dict(counters["frames"])
    assert frames.get("total") == frames.get("ok") == 1, f"{type(net[1]).__name__}: {frames}"
    diff = (grads[1] - grads[0]).abs().max().item()
    assert diff < 1e-5, f"{type(net[1]).__name__}: max |grad diff| {diff:.1e} compiled vs eager"
    return f"{type(net[1]).__name__}: 1 frame compiled, max |grad diff| {diff:.1e} vs eager"


@check
def allreduce_batchnorm_path_on_one_gpu_without_syncs(args: argparse.Namespace) -> str:
    """The all-reduce BatchNorm's distributed path on CUDA, in ONE process (the module is told
    there are two ranks, the all-reduce sums only this one's rows): the formula against
    BatchNorm, and no host-device sync in forward or backward. Sharing statistics across ranks
    is batchnorm_statistics_span_ranks's, which needs 2 GPUs."""
    real_world_size = dist.get_world_size
    dist.get_world_size = lambda group=None: 2  # type: ignore[assignment]
    try:
        return batchnorm_against_whole_batch(torch.device("cuda"), 0, 1, synced=True)
    finally:
        dist.get_world_size = real_world_size


def _steps(precision: str, phase: str, channels_last: bool = False, steps: int = 3) -> list[float]:
    cfg = TrainConfig(phase=phase, scale=4, precision=precision, channels_last=channels_last,
                      vgg_weights="random", model=ModelConfig(4, 32, 16))  # fmt: skip
    torch.manual_seed(0)
    model = SRGANModel(cfg, 128, torch.device("cuda"), world_size=1)
    lr = torch.rand(8, 3, 32, 32, device="cuda")
    hr = torch.rand(8, 3, 128, 128, device="cuda") * 2 - 1
    losses = []
    for _ in range(steps):
        out = model.train_step(lr, hr)
        key = "loss/pixel_mse" if phase == "pretrain" else "loss/generator"
        losses.append(out[key].item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    if precision == "fp16":
        assert model.scaler.is_enabled() and model.scaler.get_scale() > 0
    return losses


@check
def amp_bf16_and_fp16_steps_are_finite(args) -> str:
    parts = []
    for precision in ("bf16", "fp16"):
        for phase in ("pretrain", "gan"):
            losses = _steps(precision, phase)
            parts.append(f"{precision}/{phase} {losses[0]:.4f}->{losses[-1]:.4f}")
    return ", ".join(parts)


@check
def amp_pretrain_tracks_fp32(args) -> str:
    ref = _steps("fp32", "pretrain", steps=5)
    out = []
    for precision in ("bf16", "fp16"):
        got = _steps(precision, "pretrain", steps=5)
        rel = abs(got[-1] - ref[-1]) / ref[-1]
        assert rel < 0.05, (precision, got, ref)
        out.append(f"{precision} {rel:.2%}")
    return "loss after 5 steps vs fp32: " + ", ".join(out)


def _generator_and_input() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return SRResNet(4, 4, 32).cuda().eval(), torch.rand(4, 3, 32, 32, device="cuda")


@check
def channels_last_matches_nchw(args) -> str:
    # In strict fp32: under TF32 (cuDNN's default) the two layouts pick different algorithms
    # and differed by 4.1e-4 on the H200 (2026-11-29), which says nothing about the layout.
    g, x = _generator_and_input()
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        a = g(x)
        b = g.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    diff = (a - b).abs().max().item()
    assert diff < 1e-4, diff
    return f"max |diff| {diff:.1e} (strict fp32)"


@check
def compile_matches_eager(args) -> str:
    g, x = _generator_and_input()
    with torch.no_grad():
        eager = g(x)
        start = time.perf_counter()
        compiled = torch.compile(g)(x)
        torch.cuda.synchronize()
    diff = (eager - compiled).abs().max().item()
    assert diff < 1e-3, diff
    return f"max |diff| {diff:.1e}, first call (compile) {time.perf_counter() - start:.1f} s"


@check
def compiled_training_steps(args) -> str:
    cfg = TrainConfig(phase="gan", scale=4, precision="bf16", compile="on", vgg_weights="random",
                      model=ModelConfig(4, 32, 16))  # fmt: skip
    model = SRGANModel(cfg, 128, torch.device("cuda"), world_size=1)
    lr = torch.rand(8, 3, 32, 32, device="cuda")
    hr = torch.rand(8, 3, 128, 128, device="cuda") * 2 - 1
    start = time.perf_counter()
    losses = [model.train_step(lr, hr)["loss/generator"].item() for _ in range(3)]
    assert model.compile_state == "compiled", f"fell back to eager: {model.compile_error}"
    assert all(torch.isfinite(torch.tensor(losses))), losses
    return f"gan bf16 compiled, 3 steps incl. compile {time.perf_counter() - start:.1f} s"


@check
def dali_gpu_decoding_matches_cpu(args) -> str:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise Skipped("nvidia-dali is not installed here: DALI GPU decoding NOT measured") from None
    if args.data is None:
        raise Skipped("no --data")
    from pipeline.data import LoaderConfig, build_loader
    from pipeline.runtime.distributed import ProcessPlace

    def batches(device: str):
        cfg = LoaderConfig(data=args.data, split="val", scale=4, batch_size=16, shuffle=False,
                           flip=False, backend="dali", decode_device=device)  # fmt: skip
        return [(b.lr.cuda(), b.hr.cuda()) for b in build_loader(cfg, ProcessPlace())]

    gpu, cpu = batches("gpu"), batches("cpu")
    assert len(gpu) == len(cpu) > 0
    worst = max(max((a - b).abs().max().item() for a, b in zip(g, c, strict=True))
                for g, c in zip(gpu, cpu, strict=True))  # fmt: skip
    # nvJPEG and libjpeg-turbo may round IDCT/upsampling differently: a few grey levels at most
    assert worst <= 4 / 255 * 2, worst  # HR is in [-1, 1]: 2 units = 255 levels
    return f"{len(gpu)} val batches, max |GPU - CPU decode| {worst * 127.5:.2f} grey levels"


@check
def step_loop_syncs_only_at_logging_steps(args) -> str:
    """The trainer's loop under CUDA's sync debug mode: the first host-device sync must be the
    logging step's (the CPU test does the same on the meta device)."""
    if args.data is None:
        raise Skipped("no --data")
    import tempfile

    from pipeline.runtime.distributed import ProcessPlace
    from pipeline.runtime.stopping import StopRequest
    from pipeline.train import parse_args
    from pipeline.training.trainer import Trainer, resolve_device_defaults

    log_every, device, seen = 6, torch.device("cuda"), []
    # fp16: GradScaler's inf check must stay on the device (fused Adam takes it). Eager: this
    # checks the step loop's syncs; compiling (auto on CUDA) would check the compiler's.
    for phase, precision in (("pretrain", "bf16"), ("gan", "bf16"), ("pretrain", "fp16")):
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["--data", str(args.data), "--scale", "4", "--phase", phase, "--steps", "50",
                    "--log-every", str(log_every), "--eval-every", "1000", "--checkpoint-every",
                    "1000", "--out", tmp, "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
                    "--blocks", "2", "--channels", "16", "--d-channels", "8", "--batch-size", "8",
                    "--precision", precision, "--vgg-weights", "random",
                    "--compile", "off"]  # fmt: skip
            cfg = resolve_device_defaults(parse_args(argv), device)
            trainer = Trainer(cfg, ProcessPlace(), device)
            torch.cuda.set_sync_debug_mode("error")
            try:
                trainer.train(StopRequest())
                raise AssertionError(f"{phase} {precision}: no sync, not even the logging step's")
            except RuntimeError as exc:
                assert "synchroniz" in str(exc), exc
                assert trainer.step == log_every, f"{phase} {precision}: at {trainer.step}: {exc}"
            finally:
                torch.cuda.set_sync_debug_mode(0)
                trainer.tracker.end("KILLED")
            seen.append(f"{phase} {precision} first sync at step {trainer.step}")
    return ", ".join(seen) + f" (log every {log_every})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, backend: str, port: int, out: str, unsynced_batchnorm: bool) -> None:
    """One of the RANKS processes: every cross-rank check, outcomes written to out/RANK.json."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    dist.init_process_group(backend, rank=rank, world_size=RANKS,
                            timeout=datetime.timedelta(seconds=60))  # fmt: skip
    try:
        results = {
            fn.__name__: attempt(lambda fn=fn: fn(device, unsynced_batchnorm)) for fn in CROSS_RANK
        }
    finally:
        dist.destroy_process_group()
    Path(out, f"{rank}.json").write_text(json.dumps(results))


def run_cross_rank(backend: str, unsynced_batchnorm: bool, counts: Counter[str]) -> None:
    """The cross-rank checks in RANKS fresh processes; a check fails if it failed on any rank."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        try:
            mp.spawn(_rank_main, args=(backend, free_port(), out, unsynced_batchnorm),
                     nprocs=RANKS)  # fmt: skip
            crashed = ""
        except Exception as exc:  # noqa: BLE001 - a rank that died: its checks FAIL
            crashed = "a rank died: " + (str(exc).strip().splitlines() or [repr(exc)])[-1]
        ranks = [json.loads(f.read_text()) for f in sorted(Path(out).glob("*.json"))]
    for fn in CROSS_RANK:
        name = fn.__name__
        if crashed or len(ranks) < RANKS:
            report(counts, name, "FAIL", time.perf_counter() - start, crashed or "no result")
            continue
        failed = [r[name] for r in ranks if r[name][0] != "PASS"]
        report(counts, name, *(failed[0] if failed else ranks[0][name]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path)
    p.add_argument(
        "--cross-rank-cpu",
        action="store_true",
        help=f"only the cross-rank checks, in {RANKS} gloo processes on the CPU",
    )
    p.add_argument("--unsynced-batchnorm", action="store_true",
                   help="the control: plain BatchNorm per rank, which the BatchNorm check "
                   "must FAIL")  # fmt: skip
    args = p.parse_args()
    counts: Counter[str] = Counter()
    if args.cross_rank_cpu:
        print(f"cross-rank checks on the CPU: {RANKS} gloo processes, torch {torch.__version__}")
        run_cross_rank("gloo", args.unsynced_batchnorm, counts)
        print(summary(counts))
        return 1 if counts["FAIL"] else 0
    if not torch.cuda.is_available():
        print("FAIL: CUDA is not available")
        return 1
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    gpus = torch.cuda.device_count()
    print(f"{torch.cuda.get_device_name()} x {gpus}, torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}, bf16 supported: {torch.cuda.is_bf16_supported()}")  # fmt: skip
    # a group of one for the one-GPU BatchNorm check; the trainer ignores a group of one
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda:0"))
    try:
        for fn in CHECKS:
            report(counts, fn.__name__, *attempt(lambda fn=fn: fn(args)))
    finally:
        dist.destroy_process_group()
    if gpus >= RANKS:
        run_cross_rank("nccl", args.unsynced_batchnorm, counts)
    else:
        for fn in CROSS_RANK:
            report(counts, fn.__name__, "NOT CHECKED", 0.0,
                   f"one GPU; {RANKS} ranks need {RANKS} GPUs")  # fmt: skip
    print(summary(counts))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
