"""launch/release.sh as a user runs it, at the smoke size: shards, trains 4x and 8x, keeps the
EMA generators as half-precision files, scores those files, and writes results and a card that
agree with the files."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from helpers import PROJECT_ROOT
from PIL import Image

from pipeline import upscale
from pipeline.release import results_block
from pipeline.release.__main__ import main as release_main
from pipeline.release.card import BEGIN, END
from pipeline.runtime.checkpoint import find_checkpoint
from pipeline.serving.generator_file import read_generator_file, sha256

pytestmark = pytest.mark.system  # launch/release.sh run whole

FACES = 4  # "FSRNet's faces": HR crops made here from the sample's test faces
NO_TRACKING = "--train-arg=--tracking-uri=none"  # MLflow's part is test_train's; seconds here


@pytest.fixture(scope="module")
def release(small_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("release")
    faces = work / "faces"
    faces.mkdir()
    names = sorted((small_root / "img_align_celeba").iterdir())[-FACES:]
    for path in names:  # HR 128 crops, as FSRNet's test faces are
        Image.open(path).convert("RGB").crop((25, 45, 153, 173)).save(faces / f"{path.stem}.png")
    result = subprocess.run(
        ["bash", "launch/release.sh", str(small_root), "--size", "smoke", "--out",
         str(work / "out"), "--fsrnet", str(faces), NO_TRACKING],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "out", json.loads((work / "out" / "release" / "results.json").read_text())


def _build(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """`python -m pipeline.release build ARGS` in this process: (status, stdout, stderr)."""
    capsys.readouterr()
    status = release_main(["build", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_release_holds_the_ema_generators_it_scored(release, small_root):
    out, results = release
    counts = {"val": 12, "test": 8, "fsrnet": FACES}  # conftest's small_root: 40/12/8
    assert set(results["models"]) == {"x4", "x8"}
    for name, model in results["models"].items():
        path = out / "release" / model["file"]
        assert model["sha256"] == sha256(path) and model["bytes"] == path.stat().st_size
        assert model["train"]["steps"] == 6 and model["train"]["images_seen"] == 24
        assert {k: s["images"] for k, s in model["scores"].items()} == counts
        # the file is the run's weight average in half precision, not its raw weights
        _, state = find_checkpoint(out / "runs" / name)
        ema = state["model"]["generator_ema"]["weights"]
        raw = state["model"]["generator"]
        shipped = read_generator_file(path)[0].state_dict()
        for key, tensor in ema.items():
            want = tensor.half().float() if tensor.is_floating_point() else tensor
            assert torch.equal(shipped[key], want), key
        assert any(not torch.equal(shipped[k], raw[k].half().float())
                   for k in raw if raw[k].is_floating_point())  # fmt: skip


def test_the_card_names_every_file_its_data_and_terms(release):
    out, results = release
    card = (out / "release" / "README.md").read_text()
    for model in results["models"].values():
        assert model["sha256"] in card and model["train"]["command"] in card
    assert results["commit"].split("+")[0] in card and "non-commercial" in card
    assert "40 train, 12 val, 8 test" in card
    x8 = results["models"]["x8"]["scores"]["fsrnet"]["sr"]["psnr_y"]
    assert f"FSRNet (Chen et al. 2018) 26.66 dB: {x8 - 26.66:+.2f} dB" in card


def test_check_finds_a_changed_file_and_table_updates_a_document(release, tmp_path, capsys):
    out, results = release
    check = ["check", str(out / "release")]
    assert release_main(check) == 0
    weights = out / "release" / results["models"]["x4"]["file"]
    good = weights.read_bytes()
    data = bytearray(good)
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    try:
        assert release_main(check) == 1
    finally:
        weights.write_bytes(good)
    assert "sha256 differs" in capsys.readouterr().err

    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"# Results\n\n{BEGIN}\nold rows\n{END}\n\nafter\n")
    assert release_main(["table", str(out / "release"), "--update", str(doc)]) == 0
    text = doc.read_text()
    assert "old rows" not in text and text.endswith("\n\nafter\n")
    assert f"{BEGIN}\n{results_block(results)}\n{END}" in text
    sr = results["models"]["x4"]["scores"]["test"]["sr"]
    assert f"{sr['psnr_y']:.2f} / {sr['ssim_y']:.4f}" in text


def test_the_released_file_upscales(release, tmp_path):
    out, results = release
    lr = np.random.default_rng(0).integers(0, 256, (20, 24, 3), np.uint8)
    Image.fromarray(lr).save(tmp_path / "lr.png")
    weights = out / "release" / results["models"]["x8"]["file"]
    argv = ["--checkpoint", str(weights), "--input", str(tmp_path / "lr.png"),
            "--output", str(tmp_path / "sr.png"), "--device", "cpu"]  # fmt: skip
    assert upscale.main(argv) == 0
    assert Image.open(tmp_path / "sr.png").size == (24 * 8, 20 * 8)


def test_a_rerun_trains_nothing_again_and_writes_one_whole_release(
    release, small_root, tmp_path, capsys
):
    """Finished runs are kept (their first training time reported), and the release folder
    holds this release only: a stale weights file of a scale not released is removed."""
    out, first = release
    again = tmp_path / "again"
    again.mkdir()
    (again / "srgan-celeba-x8.safetensors").write_bytes(b"an earlier release's")
    status, stdout, stderr = _build(capsys, small_root, "--size", "smoke", "--out", out,
                                    "--release", again, "--scales", "4", NO_TRACKING,
                                    "--train-arg=--log-every=5")  # fmt: skip
    assert status == 0, stdout[-3000:] + stderr[-3000:]
    assert "train x4: finished before" in stdout
    assert "torch.distributed.run" not in stdout  # no training started
    results = json.loads((again / "results.json").read_text())
    assert set(results["models"]) == {"x4"}
    assert sorted(p.name for p in again.iterdir()) == [
        "README.md", "results.json", "srgan-celeba-x4.safetensors"]  # fmt: skip
    stages = json.loads((out / "stages.json").read_text())  # x8's stages of the first too
    assert results["minutes"] == round(sum(stages[k] for k in ("shard", "train x4", "score x4"))
                                       / 60, 1) and "train x8" in stages  # fmt: skip
    x4, was = results["models"]["x4"], first["models"]["x4"]
    assert x4["train"]["seconds"] == was["train"]["seconds"] > 0
    assert x4["sha256"] == was["sha256"]  # the same weights, byte for byte
    for key in ("images", "sr", "bicubic"):
        assert x4["scores"]["test"][key] == was["scores"]["test"][key]


def test_a_run_of_another_network_in_out_is_one_line(release, small_root, tmp_path, capsys):
    out, _ = release
    status, _, stderr = _build(capsys, small_root, "--size", "cpu", "--out", out, "--release",
                               tmp_path / "r")  # fmt: skip
    assert status == 1
    assert stderr.strip() == (
        f"pipeline.release: error: {out / 'runs' / 'x4'}: a run of a B1C8 network, not the "
        "--size cpu one; use another --out"
    )


def test_a_run_of_other_flags_in_out_is_not_reused(release, small_root, tmp_path, capsys):
    # reused, its scores and card would describe a job that never trained it
    out, _ = release
    status, _, stderr = _build(capsys, small_root, "--size", "smoke", "--out", out, "--release",
                               tmp_path / "r", NO_TRACKING, "--train-arg=--lr=5e-4")  # fmt: skip
    assert status == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"pipeline.release: error: {out / 'runs' / 'x4'}: a run of other "
                           "data or flags (train_args [")  # fmt: skip
    assert "'--lr=5e-4'] now); use another --out, or delete that run folder" in line
    assert not (tmp_path / "r").exists()
