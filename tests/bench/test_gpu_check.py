"""bench/gpu_check.sh, the script for the rare, short runs on a GPU machine, run whole on this
CPU: device time is too scarce to find a renamed flag there. Tiny sizes are appended to each
part's flags (the last occurrence wins), so every flag the device run passes is still parsed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import present_by_split, shared_celeba, synthetic_sample
from helpers import PROJECT_ROOT
from PIL import Image

from preprocess.celeba import SYNTHETIC_MARKER, read_partition

pytestmark = pytest.mark.system  # the GPU check scripts, run whole on the CPU

DEVICE_RUN_LIMIT = 64 * 2**20  # what one device run may carry: project + bundle
TINY_NETS = "--blocks 1 --channels 8 --d-channels 4"
TINY_STEP = f"--precisions fp32 --batch-sizes 1 --steps 1 --warmup 1 --peak-seconds 0.2 {TINY_NETS}"


def _tracked_bytes() -> int:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    return sum((PROJECT_ROOT / f.decode()).stat().st_size for f in files if f)


def _split_of(celeba: Path) -> dict[str, str]:
    splits = read_partition(celeba / "list_eval_partition.txt")
    return {name: split for split, names in splits.items() for name in names}


def _gpu_image_lacks(tmp_path: Path) -> Path:
    """Stand-ins for what the GPU image does not have (put on PYTHONPATH after the bundle's
    wheels, before this venv): a part that imports MLflow, or safetensors when the bundle did
    not carry it, fails here as it would there (both once made most parts fail on the GPU)."""
    shadow = tmp_path / "gpu-image-lacks"
    for package in ("mlflow", "safetensors"):
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(
            f"raise ImportError('{package} is not on the GPU image')\n"
        )
    return shadow


def _env(**values: str | Path) -> dict[str, str]:
    # python3 -> this venv's python (it has pip), as on a dev machine with the venv active
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, **{k: str(v) for k, v in values.items()}}


def test_prepared_bundle_fits_one_run_and_the_script_runs_every_part(tmp_path):
    celeba = shared_celeba()
    bundle = tmp_path / "bundle"
    prepared = subprocess.run(
        ["bash", "bench/gpu_check_prepare.sh", str(celeba)],
        cwd=PROJECT_ROOT, env=_env(GPU_CHECK_BUNDLE=bundle),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    split_of = _split_of(celeba)
    sent = [split_of[p.name] for p in (bundle / "celeba" / "img_align_celeba").iterdir()]
    present = {split: len(names) for split, names in present_by_split(celeba).items()}
    assert "test" not in sent  # the test split stays for final evaluation
    assert sent.count("val") == present["val"]
    assert sent.count("train") == min(2400, present["train"])  # the demo faces have fewer
    assert (bundle / "celeba" / SYNTHETIC_MARKER).is_file() == synthetic_sample()
    assert sorted(re.sub(r"-.*", "", w.name) for w in (bundle / "wheels").iterdir()) == [
        "braceexpand", "safetensors", "webdataset",
    ]  # fmt: skip
    size = _tracked_bytes() + sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    assert size < DEVICE_RUN_LIMIT, f"{size / 2**20:.1f} MiB to send"

    # the run itself on part of that bundle (its size is checked above): the shards and
    # evaluate parts take time with each face, and their code is the same for 160 faces
    images = bundle / "celeba" / "img_align_celeba"
    keep = {"train": 100, "val": 60}
    for path in sorted(images.iterdir()):
        if keep[split_of[path.name]] > 0:
            keep[split_of[path.name]] -= 1
        else:
            path.unlink()
    sent = [split_of[p.name] for p in images.iterdir()]
    out, work = tmp_path / "out", tmp_path / "work"
    run = subprocess.run(
        ["bash", "bench/gpu_check.sh"],
        cwd=PROJECT_ROOT,
        env=_env(
            OUT=out, GPU_CHECK_WORK=work, GPU_CHECK_BUNDLE=bundle, PYTHON=sys.executable,
            DALI_SITE=tmp_path / "no-dali", GPU_CHECK_SHADOW=_gpu_image_lacks(tmp_path),
            EXTRA_STEP_ARGS=TINY_STEP,
            EXTRA_PROFILE_ARGS=f"--batch-size 1 {TINY_NETS} --precision fp32 --steps 1 "
            "--warmup 1 --compile-backend aot_eager --peak-seconds 0.1 --top 3",
            # the GAN phase only in the trainer and profile parts: the pretrain ones are the same
            # commands but for --phase
            TRAINER_PHASES="gan",
            EXTRA_TRAINER_ARGS=f"--batch-size 1 {TINY_NETS} --precision fp32 --steps 3 "
            "--compile-backend aot_eager --loader-threads 1 --peak-seconds 0.1",
            EXTRA_TRAIN_ARGS=f"--steps 4 --batch-size 4 --precision fp32 {TINY_NETS} "
            "--eval-every 2 --checkpoint-every 2 --eval-batches 2 --log-every 1 --loader-threads 2",
            EXTRA_EVAL_ARGS="--batch-size 4 --loader-threads 2",
            EXTRA_LOADER_ARGS="--seconds 0.5",
            EXTRA_UPSCALE_ARGS="--device cpu", UPSCALE_IMAGES="1",
            PART_LIMIT_SCALE="4",  # the GPU's limits; the trainer part took 30 of 50 s here
            BUDGET="270",  # x4: 18 minutes, so the script stops a slow part before the test does
        ),
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    log = (out / "gpu_check.log").read_text()
    assert run.returncode == 0, log[-3000:]
    status = dict(re.findall(r"^=== (\w+): exit (\d+) after", log, re.MULTILINE))
    # every part ran; without CUDA only the GPU checks (and nvidia-smi, whose status the
    # environment part does not return) fail, and they must; with CUDA they must pass
    cuda = torch.cuda.is_available()
    assert status == {
        "environment": "0", "install": "0", "shards": "0",
        "gpu_checks": "0" if cuda else "1", "train_step": "0", "trainer_gan": "0", "profile": "0",
        "train": "0", "evaluate": "0", "upscale": "0", "loader": "0",
    }, log[-3000:]  # fmt: skip
    # the environment part's own python: its torch, and whether it saw CUDA
    assert re.search(rf"^3\.\d+\.\d+ {re.escape(torch.__version__)} \S+ {cuda}$", log, re.M), log[
        :3000
    ]
    manifest = json.loads((work / "shards" / "manifest.json").read_text())["splits"]
    for split in ("train", "val"):  # the shards part sharded every face sent, counted apart
        assert manifest[split]["samples"] == sent.count(split), manifest
    checks = (out / "gpu_checks.txt").read_text()
    if cuda:
        assert re.search(r"^summary: [1-9]\d* PASS, 0 FAIL, ", checks, re.MULTILINE), checks
    else:
        assert "FAIL: CUDA is not available" in checks, checks
    assert "DALI GPU decoding is NOT measured" in log
    rows = json.loads((out / "train_step.json").read_text())["rows"]
    assert {(r["phase"], r["layout"]) for r in rows} == {("pretrain", "cl"), ("gan", "cl")}
    assert all(r["images_per_s"] > 0 for r in rows), rows
    # the profile part (bench/profile_step.py), its sums too
    _check_profile(json.loads((out / "profile_gan.json").read_text()))
    assert not (out / "profile_pretrain.json").exists()  # TRAINER_PHASES="gan"
    assert (out / "profile.txt").read_text().count("own time by kind") == 1
    # the trainer part (bench/trainer.py), its sums too
    _check_trainer_table((out / "trainer_gan.txt").read_text(), "gan")
    train = (out / "train.txt").read_text()
    assert len(re.findall(r"step [24]: val PSNR-Y [\d.]+ dB \(bicubic [\d.]+\)", train)) == 2, train
    assert re.search(r"^SR +[\d.]+ +[\d.]+", log, re.MULTILINE), log[-3000:]  # the evaluate table
    for label in ("float32", "bfloat16", "float16"):  # the upscale part, each precision
        assert re.search(rf"1 images upscaled x4 .* 0 skipped; [\d.]+ s on cpu in {label}", log)
    assert re.search(r"^sr-tiled vs sr-fp32: 1 images, max \|diff\| \d+", log, re.MULTILINE)
    dali_row = r"^\| DALI \| cpu \| 1 \| 2 \| [1-9]\d* \|"  # 1 thread, prefetch 2, images/s
    assert re.search(dali_row, (out / "loader.txt").read_text(), re.MULTILINE)


def _check_profile(profile: dict) -> None:
    """bench/profile_step.py's numbers: shares that add up, a ceiling that is the roofline's."""
    assert sum(profile["own_time_by_kind"].values()) == pytest.approx(1.0)
    assert len(profile["top"]) == 3 and profile["own_time_by_kind"]["conv/matmul"] > 0
    flops, moved = profile["flops_per_image"], profile["bytes_per_image"]
    peak, bandwidth = profile["peak_flop_per_s"], profile["bandwidth_bytes_per_s"]
    roof = min(peak, flops / moved * bandwidth) / flops
    assert profile["ceiling_images_per_s"] == pytest.approx(roof)
    assert profile["bound"] == ("compute" if peak <= flops / moved * bandwidth else "memory")
    assert profile["images_per_s"] > 0


def _check_trainer_table(out: str, phase: str) -> None:
    """bench/trainer.py's table: the bare step and the trainer, their MFU recomputed from the
    FLOPs and peak it printed, and their ratio from the two rows."""
    assert out.startswith(f"x4 {phase}, batch 1 per process"), out
    flops = float(re.search(r"([\d.]+) GFLOP per image per step", out)[1]) * 1e9
    peak = float(re.search(r"peak ([\d.]+) GFLOP/s", out)[1]) * 1e9
    row = r"^(bare loop, 1 process|trainer, 1 process\(es\)) +([\d.]+) img/s +MFU +([\d.]+)%"
    rows = {name: (float(ips), float(mfu) / 100) for name, ips, mfu in re.findall(row, out, re.M)}
    assert set(rows) == {"bare loop, 1 process", "trainer, 1 process(es)"}, out
    # each printed number is rounded (img/s to 0.01, GFLOP to 0.01, GFLOP/s to 0.1, MFU to
    # 0.1%, the ratio to 0.001): recomputed from them, a value may be off by that much only
    d_ips, d_flops, d_peak = 0.005, 0.005e9, 0.05e9
    for ips, mfu in rows.values():
        low = (ips - d_ips) * (flops - d_flops) / (peak + d_peak)
        high = (ips + d_ips) * (flops + d_flops) / (peak - d_peak)
        assert mfu > 0 and low - 0.0005 <= mfu <= high + 0.0005, (mfu, low, high)
    # on a shared device (this suite runs on two workers) the peak can still be timed low
    highest = max(mfu for _, mfu in rows.values())
    if abs(highest - 1) > 0.0005:  # a printed 100.0% may be either side
        assert (highest > 1) == ("MFU above 100%: the matmul peak measured below" in out), out
    ratio = float(re.search(r"^trainer / bare loop \(1 process\): ([\d.]+)", out, re.M)[1])
    bare, trainer = rows["bare loop, 1 process"][0], rows["trainer, 1 process(es)"][0]
    low, high = (trainer - d_ips) / (bare + d_ips), (trainer + d_ips) / (bare - d_ips)
    assert low - 0.0005 <= ratio <= high + 0.0005, (ratio, low, high)
    assert "loader alone" not in out  # --skip-loader


def _cross_rank_cpu(*flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "bench/gpu_checks.py", "--cross-rank-cpu", *flags],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _diffs(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"max \|\w+ diff\| ([\d.e+-]+)", line)]


def test_cross_rank_checks_see_the_other_rank_and_fail_when_batchnorm_is_not_shared():
    """2 gloo processes, as 2 GPUs would run them under NCCL. The control puts plain BatchNorm
    on each rank: the same comparison must then FAIL, or it could not tell shared statistics
    from per-rank ones."""
    synced, control = _cross_rank_cpu(), _cross_rank_cpu("--unsynced-batchnorm")
    out, err = synced.communicate(timeout=300)
    control_out, control_err = control.communicate(timeout=300)
    assert synced.returncode == 0, out + err[-3000:]
    # rank r sends r + 1: 3 only if both ranks took part
    assert "PASS all_reduce_sums_across_ranks" in out and "each got the sum 3" in out, out
    (bn,) = [ln for ln in out.splitlines() if ln.startswith("PASS batchnorm_statistics_span")]
    assert "AllReduceBatchNorm2d, 2 rank(s)" in bn and len(_diffs(bn)) == 3, bn
    assert max(_diffs(bn)) < 1e-4, bn  # outputs, input gradients, running statistics
    # compiled in one piece across ranks, with eager's gradients (the check fails on the
    # former all-reduce, 7 frames of which 5 compiled, and on sums about the running mean)
    (whole,) = [ln for ln in out.splitlines() if ln.startswith("PASS batchnorm_compiles_whole")]
    assert "AllReduceBatchNorm2d: 1 frame compiled" in whole, whole
    assert out.splitlines()[-1] == "summary: 3 PASS, 0 FAIL, 0 SKIPPED, 0 NOT CHECKED", out

    assert control.returncode == 1, control_out + control_err[-3000:]
    assert "PASS all_reduce_sums_across_ranks" in control_out, control_out
    assert "FAIL batchnorm_statistics_span_ranks" in control_out, control_out
    (error,) = [ln for ln in control_out.splitlines() if ln.startswith("AssertionError")]
    assert "BatchNorm2d:" in error and _diffs(error)[0] > 0.1, error  # far off, not rounding
    assert control_out.splitlines()[-1] == "summary: 2 PASS, 1 FAIL, 0 SKIPPED, 0 NOT CHECKED"


def test_on_one_gpu_skips_and_cross_rank_checks_are_counted_apart_never_as_pass(
    monkeypatch, capsys
):
    """main()'s bookkeeping on a one-GPU machine, faked on the CPU: the GPU checks are
    replaced by one that passes, one that is skipped and one that fails."""
    spec = importlib.util.spec_from_file_location(
        "gpu_checks", PROJECT_ROOT / "bench" / "gpu_checks.py"
    )
    gpu_checks = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(gpu_checks)  # type: ignore[union-attr]

    def skipped(args):  # type: ignore[no-untyped-def]
        raise gpu_checks.Skipped("no --data")

    def failed(args):  # type: ignore[no-untyped-def]
        raise AssertionError("differs")

    monkeypatch.setattr(gpu_checks, "CHECKS", [lambda args: "fine", skipped, failed])
    for name, value in (("is_available", True), ("device_count", 1), ("is_bf16_supported", True),
                        ("get_device_name", "Fake GPU")):  # fmt: skip
        monkeypatch.setattr(torch.cuda, name, lambda *a, value=value: value)
    monkeypatch.setattr(gpu_checks.dist, "init_process_group", lambda *a, **k: None)
    monkeypatch.setattr(gpu_checks.dist, "destroy_process_group", lambda: None)
    monkeypatch.setattr(sys, "argv", ["gpu_checks.py"])
    assert gpu_checks.main() == 1  # one failed
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "summary: 1 PASS, 1 FAIL, 1 SKIPPED, 3 NOT CHECKED", lines
    assert any(ln.startswith("SKIPPED skipped (") and ln.endswith(": no --data") for ln in lines)
    for name in ("all_reduce_sums_across_ranks", "batchnorm_statistics_span_ranks",
                 "batchnorm_compiles_whole_across_ranks"):  # fmt: skip
        assert f"NOT CHECKED {name} (0.0 s): one GPU; 2 ranks need 2 GPUs" in lines, lines


def test_the_gpu_release_script_runs_on_a_cpu(small_root, tmp_path):
    """bench/gpu_release.sh as the device run would start it, at SIZE=smoke and 4x only: the
    bundle now carries the test split and FSRNet's faces, and the release comes back in $OUT."""
    faces = tmp_path / "faces"
    faces.mkdir()
    for path in sorted((small_root / "img_align_celeba").iterdir())[:3]:
        Image.open(path).crop((25, 45, 153, 173)).save(faces / path.name)
    bundle = tmp_path / "bundle"
    prepared = subprocess.run(
        ["bash", "bench/gpu_check_prepare.sh", str(small_root)], cwd=PROJECT_ROOT,
        env=_env(GPU_CHECK_BUNDLE=bundle, RELEASE=1, TRAIN_IMAGES=40, FSRNET=faces),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    split_of = _split_of(small_root)
    sent = [split_of[p.name] for p in (bundle / "celeba" / "img_align_celeba").iterdir()]
    assert (sent.count("train"), sent.count("val"), sent.count("test")) == (40, 12, 8)
    assert len(list((bundle / "fsrnet").iterdir())) == 3
    assert any(w.name.startswith("safetensors-") for w in (bundle / "wheels").iterdir())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip
    assert (bundle / "commit").read_text().strip() == head
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", "bench/gpu_release.sh"], cwd=PROJECT_ROOT,
        env=_env(GPU_CHECK_BUNDLE=bundle, OUT=out, GPU_RELEASE_WORK=tmp_path / "work",
                 SIZE="smoke", EXTRA_RELEASE_ARGS="--scales 4 --train-arg=--tracking-uri=none",
                 PYTHON=sys.executable, GPU_CHECK_SHADOW=_gpu_image_lacks(tmp_path)),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert "=== gpu_release: exit 0" in (out / "gpu_release.log").read_text()
    results = json.loads((out / "release" / "results.json").read_text())
    assert set(results["models"]) == {"x4"}
    assert results["models"]["x4"]["scores"]["test"]["images"] == 8
    assert results["models"]["x4"]["scores"]["fsrnet"]["images"] == 3
    assert results["commit"] == head  # from the bundle, as on a device without .git
    with tarfile.open(out / "release-logs.tar.gz") as logs:  # what a cut-short run keeps
        names = logs.getnames()
    assert "weights/srgan-celeba-x4.safetensors" in names and "stages.json" in names, names
