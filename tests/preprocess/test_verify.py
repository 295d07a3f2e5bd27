"""`srgan-preprocess verify`: the three readers, and that it catches broken outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import copy_of
from helpers import run_preprocess


@pytest.fixture(scope="module")
def good_out(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify-out")
    run_preprocess(
        "shard",
        "--celeba-root",
        small_root,
        "--out",
        out,
        "--preset",
        "faces128",
        "--samples-per-shard",
        "16",
        "--no-progress",
    )
    return out


@pytest.fixture
def broken(good_out: Path, tmp_path: Path) -> Path:
    return copy_of(good_out, tmp_path / "out")


def test_sound_output_passes_with_dali_on_cpu(good_out: Path):
    result = run_preprocess("verify", good_out)
    assert "is sound (tarfile, webdataset and DALI agree with the manifest)" in result.stdout
    assert "train: 40 samples in 3 shards checked" in result.stderr


def test_a_flipped_byte_is_found(broken: Path):
    tar_path = broken / "train" / "train-000001.tar"
    data = bytearray(tar_path.read_bytes())
    data[5000] ^= 0xFF
    tar_path.write_bytes(bytes(data))
    result = run_preprocess("verify", broken, check=False)
    assert result.returncode == 1
    assert "FAIL train/train-000001.tar: sha256 differs from the manifest" in result.stderr


def test_a_missing_index_is_found(broken: Path):
    (broken / "val" / "val-000000.idx").unlink()
    result = run_preprocess("verify", broken, "--no-dali", check=False)
    assert result.returncode == 1
    assert "FAIL val/val-000000.tar: index file val-000000.idx missing" in result.stderr


def test_an_index_with_wrong_offsets_is_found(broken: Path):
    idx = broken / "test" / "test-000000.idx"
    lines = idx.read_text().splitlines()
    fields = lines[2].split()
    fields[1] = str(int(fields[1]) + 512)
    lines[2] = " ".join(fields)
    idx.write_text("\n".join(lines) + "\n")
    result = run_preprocess("verify", broken, "--no-dali", check=False)
    assert result.returncode == 1
    assert "FAIL test/test-000000.tar: index test-000000.idx does not match" in result.stderr


def test_a_manifest_count_that_lies_is_found(broken: Path):
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["splits"]["val"]["samples"] = 13
    (broken / "manifest.json").write_text(json.dumps(manifest))
    result = run_preprocess("verify", broken, check=False)
    assert result.returncode == 1
    assert "webdataset val: 12 samples, manifest says 13" in result.stderr
    assert "DALI val: reader sees 12 samples, manifest says 13" in result.stderr


def test_no_manifest_is_a_one_line_error(tmp_path: Path):
    result = run_preprocess("verify", tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"srgan-preprocess: error: {tmp_path}/manifest.json: manifest not found "
        f"(is {tmp_path} an srgan-preprocess output?)"
    )
