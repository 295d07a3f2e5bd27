"""`srgan-preprocess shard` end to end on the faces of the CelebA sample (real or demo)."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import (
    listed_count,
    make_subset_root,
    present_by_split,
    shared_celeba,
    synthetic_sample,
)
from helpers import PROJECT_ROOT, preprocess_cmd, run_preprocess, tree_bytes
from PIL import Image

from preprocess import job as job_module
from preprocess.images import Encoding
from preprocess.job import run_shard_job
from preprocess.plan import ShardJob
from preprocess.protocol import PRESETS
from preprocess.shards import parse_dali_index, read_tar_members


def shard(root: Path, out: Path, *extra: str) -> dict:
    run_preprocess("shard", "--celeba-root", root, "--out", out, "--no-progress", *extra)
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def seed_out(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seed-out")
    shard(small_root, out, "--samples-per-shard", "16", "--workers", "2")
    return out


def test_manifest_describes_the_output(seed_out: Path, small_root: Path):
    manifest = json.loads((seed_out / "manifest.json").read_text())
    assert manifest["preset"] == "seed" and manifest["synthetic"] is synthetic_sample()
    assert (manifest["crop"], manifest["hr_size"], manifest["scales"]) == (144, 256, [4, 8])
    assert manifest["lr_sizes"] == {"4": 64, "8": 32}
    assert (manifest["codec"], manifest["lr_codec"]) == ("jpeg", "png")
    assert manifest["jpeg_quality"] == 95
    assert manifest["components"] == {"hr": "hr.jpg", "x4": "x4.png", "x8": "x8.png"}
    assert {s: v["samples"] for s, v in manifest["splits"].items()} == {
        "train": 40,
        "val": 12,
        "test": 8,
    }
    # 40 train in shards of 16: 16 + 16 + 8.
    assert [s["samples"] for s in manifest["splits"]["train"]["shards"]] == [16, 16, 8]
    assert manifest["missing"] == listed_count(small_root) - 60
    assert manifest["rejected"] == [] and manifest["images"]["written"] == 60
    for split in manifest["splits"].values():
        for entry in split["shards"]:
            assert (seed_out / entry["tar"]).is_file() and (seed_out / entry["index"]).is_file()


def test_tar_headers_are_plain_and_deterministic(seed_out: Path):
    for tar_path in sorted(seed_out.glob("*/*.tar")):
        with tarfile.open(tar_path) as tar:
            assert tar.pax_headers == {}
            for member in tar.getmembers():
                assert member.isfile() and member.pax_headers == {}
                assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o444)
                assert member.name.count(".") == 2  # key.role.ext, key without dots
        header = tar_path.read_bytes()[257:263]
        assert header == b"ustar\x00"


def test_index_offsets_match_tarfile_and_dali_tool(seed_out: Path, tmp_path: Path):
    for tar_path in sorted(seed_out.glob("*/*.tar")):
        idx_path = tar_path.with_suffix(".idx")
        indexed = [m for s in parse_dali_index(idx_path.read_text(), idx_path) for m in s]
        members = read_tar_members(tar_path)
        assert [(m.name, m.data_offset, m.size) for m in indexed] == [
            (m.name, m.data_offset, m.size) for m in members
        ]
        data = tar_path.read_bytes()
        with tarfile.open(tar_path) as tar:
            for m in indexed[:5]:
                assert (
                    data[m.data_offset : m.data_offset + m.size] == tar.extractfile(m.name).read()
                )
        # DALI's own indexer (wds2idx, installed with DALI) writes the very same file.
        reference = tmp_path / "reference.idx"
        wds2idx = Path(sys.executable).with_name("wds2idx")
        subprocess.run(
            [str(wds2idx), str(tar_path), str(reference)], check=True, capture_output=True
        )
        assert reference.read_bytes() == idx_path.read_bytes()


def test_samples_are_shuffled_and_cover_each_split(seed_out: Path, small_root: Path):
    manifest = json.loads((seed_out / "manifest.json").read_text())
    partition = dict(
        line.split()
        for line in (small_root / "list_eval_partition.txt").read_text().split("\n")
        if line.strip()
    )
    present = {p.name.split(".")[0] for p in (small_root / "img_align_celeba").iterdir()}
    codes = {"train": "0", "val": "1", "test": "2"}
    for split, info in manifest["splits"].items():
        keys = [
            m.key for entry in info["shards"] for m in read_tar_members(seed_out / entry["tar"])
        ][::3]
        assert len(keys) == len(set(keys)) == info["samples"]
        assert set(keys) == {k for k in present if partition[f"{k}.jpg"] == codes[split]}
        if len(keys) > 5:
            assert keys != sorted(keys)


def test_same_input_gives_byte_identical_shards(seed_out: Path, small_root: Path, tmp_path):
    # Another run, in-process worker instead of a pool: the bytes must not depend on it.
    again = tmp_path / "again"
    shard(small_root, again, "--samples-per-shard", "16", "--workers", "1")
    assert tree_bytes(again) == tree_bytes(seed_out)
    other_seed = tmp_path / "other-seed"
    shard(small_root, other_seed, "--samples-per-shard", "16", "--seed", "1")
    assert (
        tree_bytes(other_seed)["train/train-000000.tar"]
        != tree_bytes(seed_out)["train/train-000000.tar"]
    )


def test_zip_download_gives_the_same_shards(seed_out: Path, small_root: Path, tmp_path):
    root = tmp_path / "zipped"
    root.mkdir()
    with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as archive:
        for image in sorted((small_root / "img_align_celeba").iterdir()):
            archive.write(image, f"img_align_celeba/{image.name}")
    shutil.copy(small_root / "list_eval_partition.txt", root / "list_eval_partition.txt")
    out = tmp_path / "out"
    manifest = shard(root, out, "--samples-per-shard", "16", "--workers", "2")
    assert manifest["source"] == "img_align_celeba.zip"
    produced, reference = tree_bytes(out), tree_bytes(seed_out)
    assert {k: v for k, v in produced.items() if k.endswith((".tar", ".idx"))} == {
        k: v for k, v in reference.items() if k.endswith((".tar", ".idx"))
    }


def test_faces128_preset_and_png_codec(small_root: Path, tmp_path: Path):
    manifest = shard(
        small_root, tmp_path / "out", "--preset", "faces128", "--codec", "png", "--scales", "4"
    )
    assert (manifest["crop"], manifest["hr_size"], manifest["lr_sizes"]) == (178, 128, {"4": 32})
    assert manifest["components"] == {"hr": "hr.png", "x4": "x4.png"}
    tar_path = tmp_path / "out" / manifest["splits"]["val"]["shards"][0]["tar"]
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".x4.png"))
        image = Image.open(tar.extractfile(member))
        assert image.format == "PNG" and image.size == (32, 32)


def test_bad_files_are_skipped_counted_and_never_fatal(tmp_path: Path):
    real = shared_celeba() / "img_align_celeba"
    root = tmp_path / "root"
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    good = ["000001.jpg", "000002.jpg", "000003.jpg"]
    for name in good:
        shutil.copy(real / name, images / name)
    face = Image.open(real / "000001.jpg")
    (images / "000010.jpg").write_bytes(b"")
    (images / "000011.jpg").write_bytes((real / "000002.jpg").read_bytes()[:3000])
    (images / "000012.jpg").write_text("<html>not an image</html>")
    face.resize((90, 110)).save(images / "000013.jpg")
    face.convert("L").save(images / "000014.jpg")
    face.convert("CMYK").save(images / "000015.jpg")
    listed = [*good, *(f"0000{i}.jpg" for i in range(10, 16)), "000099.jpg"]  # last one absent
    (root / "list_eval_partition.txt").write_text("\n".join(f"{n} 0" for n in listed))

    out = tmp_path / "out"
    result = run_preprocess("shard", "--celeba-root", root, "--out", out, "--no-progress")
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {item["file"]: item["reason"] for item in manifest["rejected"]}
    assert reasons == {
        "img_align_celeba/000010.jpg": "empty file",
        "img_align_celeba/000011.jpg": reasons["img_align_celeba/000011.jpg"],
        "img_align_celeba/000012.jpg": "not an image (no known image format)",
        "img_align_celeba/000013.jpg": "too small: 90x110, the crop needs 144x144",
    }
    assert reasons["img_align_celeba/000011.jpg"].startswith("corrupt or truncated image")
    assert manifest["images"]["converted"] == {"CMYK": 1, "L": 1}
    assert manifest["splits"]["train"]["samples"] == 5
    assert manifest["missing"] == 1
    for name in ("000010.jpg", "000011.jpg", "000012.jpg", "000013.jpg"):
        assert f"warning: skipped img_align_celeba/{name}:" in result.stdout + result.stderr


def test_missing_inputs_fail_before_any_work(tmp_path: Path, small_root: Path):
    out = tmp_path / "out"
    result = run_preprocess(
        "shard", "--celeba-root", tmp_path / "absent", "--out", out, check=False
    )
    assert result.returncode == 2
    assert "absent: CelebA root not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()

    root = tmp_path / "no-partition"
    (root / "img_align_celeba").mkdir(parents=True)
    result = run_preprocess("shard", "--celeba-root", root, "--out", out, check=False)
    assert result.returncode == 2
    assert "list_eval_partition.txt: partition file not found" in result.stderr
    assert not out.exists()


def test_a_second_job_on_a_folder_being_written_is_refused(seed_out: Path, small_root, tmp_path):
    # a resubmitted job beside a running one would delete its temporary files and write the
    # same shards: it stops at once with one line, and the running job's files are untouched
    out = tmp_path / "out"
    shutil.copytree(seed_out, out)
    leftover = out / "train" / "train-000099.tar.tmp"  # the running job's shard in progress
    leftover.write_bytes(b"half a shard")
    with open(out / ".progress" / "lock", "a+") as held:  # as the running job holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        result = run_preprocess("shard", "--celeba-root", small_root, "--out", out,
                                "--samples-per-shard", "16", check=False)  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.endswith(f"{out}: another srgan-preprocess job is writing there (pid 4242); "
                         "wait for it or use another --out")  # fmt: skip
    assert leftover.read_bytes() == b"half a shard"
    # once it has ended, the same command goes on (and takes the leftover for its own)
    result = run_preprocess("shard", "--celeba-root", small_root, "--out", out,
                            "--samples-per-shard", "16", "--no-progress")  # fmt: skip
    assert "resuming: 5 of 5 shards already complete" in result.stderr
    assert not leftover.exists() and tree_bytes(out) == tree_bytes(seed_out)


def test_other_settings_on_the_same_output_are_refused(seed_out: Path, small_root: Path, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(seed_out, out)
    same = ["shard", "--celeba-root", small_root, "--out", out, "--samples-per-shard", "16"]
    result = run_preprocess(*same, "--hr-size", "128", check=False)
    assert result.returncode == 2
    assert "holds shards made with other settings (protocol differ)" in result.stderr
    result = run_preprocess(*same, "--seed", "7", check=False)
    assert "holds shards made with other settings (plan_sha256, seed differ)" in result.stderr
    # The same settings again: nothing to redo, the same manifest.
    result = run_preprocess(*same, "--no-progress")
    assert "resuming: 5 of 5 shards already complete" in result.stderr
    assert tree_bytes(out) == tree_bytes(seed_out)


def test_rerun_after_a_kill_finishes_without_redoing_complete_shards(tmp_path: Path):
    root = make_subset_root(tmp_path / "root", {"train": 160, "val": 20, "test": 20}, seed=3)
    args = [
        "shard",
        "--celeba-root",
        root,
        "--samples-per-shard",
        "10",
        "--workers",
        "1",
        "--no-progress",
    ]
    reference = tmp_path / "reference"
    run_preprocess(*args, "--out", reference)

    out = tmp_path / "out"
    process = subprocess.Popen(
        preprocess_cmd(*args, "--out", out),
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(list((out / ".progress").glob("train-*.json"))) < 3:
        assert process.poll() is None, "the job finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    done = {p: p.stat().st_mtime_ns for p in out.glob("train/*.tar")}
    assert 3 <= len(done) < 20

    result = run_preprocess(*args, "--out", out)
    assert f"resuming: {len(done)} of 20 shards already complete" in result.stderr
    for path, mtime in done.items():
        assert path.stat().st_mtime_ns == mtime, f"{path.name} was written again"
    assert tree_bytes(out) == tree_bytes(reference)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.integration  # the whole shared sample, verified by three readers
def test_whole_shared_sample_with_verify(tmp_path: Path):
    # The real sample: 4657 / 780 / 659 of the 202,599 listed; the demo faces list only themselves.
    sample, out = shared_celeba(), tmp_path / "out"
    present = {split: len(names) for split, names in present_by_split(sample).items()}
    manifest = shard(sample, out, "--preset", "faces128")
    assert {s: v["samples"] for s, v in manifest["splits"].items()} == present
    assert manifest["missing"] == listed_count(sample) - sum(present.values())
    assert manifest["rejected"] == [] and manifest["synthetic"] is synthetic_sample()
    result = run_preprocess("verify", out)
    assert "DALI agree with the manifest" in result.stdout


_DYING = {}  # set by the test before the workers fork: the image that kills its worker


def _process_or_die(name: str):
    # module level: the executor pickles the function it runs by name
    if name == _DYING["victim"]:
        os._exit(9)  # as the kernel's OOM killer or a decoder crash ends a worker
    return _DYING["real"](name)


def test_a_worker_that_dies_costs_its_image_not_the_job(small_root: Path, tmp_path, monkeypatch):
    # a multiprocessing.Pool waited forever for the lost image's result
    victim = sorted(p.name for p in (small_root / "img_align_celeba").iterdir())[5]
    monkeypatch.setitem(_DYING, "victim", victim)
    monkeypatch.setitem(_DYING, "real", job_module._process)
    monkeypatch.setattr(job_module, "_process", _process_or_die)  # the forked workers get it
    job = ShardJob(small_root, tmp_path / "out", PRESETS["faces128"], Encoding(), 16, workers=2)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["manifest"] = run_shard_job(job, progress=False)
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the job hung on the dead worker"
    manifest = outcome.get("manifest")
    assert manifest is not None, outcome.get("error")
    assert [r["file"].split("/")[-1] for r in manifest["rejected"]] == [victim]
    assert "worker process died" in manifest["rejected"][0]["reason"]
    assert manifest["images"]["written"] == 40 + 12 + 8 - 1


def test_a_file_system_without_locks_or_folder_fsync_still_gets_its_shards(
    small_root: Path, tmp_path, monkeypatch, caplog
):
    # Lustre without flock, NFS with nolock, FUSE without fsync of a folder: warned, not fatal
    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    real_fsync = os.fsync

    def no_folder_fsync(descriptor):
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(descriptor)

    monkeypatch.setattr(job_module.fcntl, "flock", no_locks)
    monkeypatch.setattr(os, "fsync", no_folder_fsync)
    job = ShardJob(small_root, tmp_path / "out", PRESETS["faces128"], Encoding(), 16, workers=1)
    with caplog.at_level(logging.WARNING):
        manifest = run_shard_job(job, progress=False)
    assert manifest["images"]["written"] == 40 + 12 + 8
    assert any("no file locks here (No locks available)" in r.getMessage() for r in caplog.records)
