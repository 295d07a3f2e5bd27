"""The GPU-only code paths, checked on a real GPU: nccl, synchronised BatchNorm, AMP (bf16,
fp16 with GradScaler), channels_last, torch.compile, DALI's nvJPEG decoding against the CPU
decoder, and a step loop free of host-device syncs between logging steps.

    python bench/gpu_checks.py [--data SHARDS]      # run by bench/gpu_check.sh

CI has no GPU: each path here also has a CPU test (gloo, AllReduceBatchNorm2d, fp32); this
script is the other half, for the rare runs on a device machine. Prints one PASS/FAIL line per
check with its numbers and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

# bench/preprocess.py would shadow the `preprocess` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

from pipeline.archs import SRResNet  # noqa: E402
from pipeline.archs.sync_bn import sync_batchnorm  # noqa: E402
from pipeline.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.srgan import SRGANModel  # noqa: E402

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def nccl_all_reduce(args) -> str:
    t = torch.full((4,), 2.0, device="cuda")
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((4,), 2.0 * dist.get_world_size(), device="cuda")), t
    return f"backend {dist.get_backend()}, world {dist.get_world_size()}"


@check
def allreduce_batchnorm_matches_batchnorm_without_syncs(args) -> str:
    """The synchronised BatchNorm DDP runs use, on CUDA/NCCL: the group here has one rank, so
    the module is told there are two to take its all-reduce path; it must equal BatchNorm
    (outputs, input gradients, running statistics) and never sync host and device."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).cuda()
    synced = sync_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))).cuda()
    synced.load_state_dict(plain.state_dict())
    kind = type(synced[1]).__name__
    x = torch.randn(4, 3, 16, 16, device="cuda").mul_(3).add_(5).requires_grad_(True)
    y1 = plain(x)
    y1.square().mean().backward()
    g1 = x.grad.clone()
    x.grad = None
    real_world_size = dist.get_world_size
    dist.get_world_size = lambda group=None: 2  # type: ignore[assignment]
    torch.cuda.set_sync_debug_mode("error")
    try:
        y2 = synced(x)
        y2.square().mean().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
        dist.get_world_size = real_world_size
    diff = (y1 - y2).abs().max().item()
    gdiff = (g1 - x.grad).abs().max().item()
    sdiff = max((plain[1].running_mean - synced[1].running_mean).abs().max().item(),
                (plain[1].running_var - synced[1].running_var).abs().max().item())  # fmt: skip
    assert diff < 1e-4 and gdiff < 1e-6 and sdiff < 1e-5, (diff, gdiff, sdiff)
    return f"{kind}: max |out diff| {diff:.1e}, |grad diff| {gdiff:.1e}, stats {sdiff:.1e}"


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
    cfg = TrainConfig(phase="gan", scale=4, precision="bf16", compile=True, vgg_weights="random",
                      model=ModelConfig(4, 32, 16))  # fmt: skip
    model = SRGANModel(cfg, 128, torch.device("cuda"), world_size=1)
    lr = torch.rand(8, 3, 32, 32, device="cuda")
    hr = torch.rand(8, 3, 128, 128, device="cuda") * 2 - 1
    start = time.perf_counter()
    losses = [model.train_step(lr, hr)["loss/generator"].item() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses))), losses
    return f"gan bf16 compiled, 3 steps incl. compile {time.perf_counter() - start:.1f} s"


@check
def dali_gpu_decoding_matches_cpu(args) -> str:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return "SKIPPED: nvidia-dali is not installed here: DALI GPU decoding NOT measured"
    if args.data is None:
        return "SKIPPED: no --data"
    from pipeline.data import LoaderConfig, build_loader
    from pipeline.distributed import ProcessPlace

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
        return "SKIPPED: no --data"
    import tempfile

    from pipeline.distributed import ProcessPlace
    from pipeline.stopping import StopRequest
    from pipeline.train import Trainer, parse_args, resolve_device_defaults

    log_every, device, seen = 6, torch.device("cuda"), []
    # fp16: GradScaler's inf check must stay on the device (fused Adam takes it)
    for phase, precision in (("pretrain", "bf16"), ("gan", "bf16"), ("pretrain", "fp16")):
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["--data", str(args.data), "--scale", "4", "--phase", phase, "--steps", "50",
                    "--log-every", str(log_every), "--eval-every", "1000", "--checkpoint-every",
                    "1000", "--out", tmp, "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
                    "--blocks", "2", "--channels", "16", "--d-channels", "8", "--batch-size", "8",
                    "--precision", precision, "--vgg-weights", "random"]  # fmt: skip
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("FAIL: CUDA is not available")
        return 1
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda:0"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"bf16 supported: {torch.cuda.is_bf16_supported()}")  # fmt: skip
    failed = 0
    for fn in CHECKS:
        start = time.perf_counter()
        try:
            result = fn(args)
            print(f"PASS {fn.__name__} ({time.perf_counter() - start:.1f} s): {result}", flush=True)
        except Exception:  # noqa: BLE001 - each check reports and the rest still run
            failed += 1
            print(f"FAIL {fn.__name__}:\n{traceback.format_exc()}", flush=True)
    dist.destroy_process_group()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
