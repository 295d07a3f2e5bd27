"""Distributed evaluation and `python -m pipeline.evaluate`, on shards of the CelebA sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import copy_of, make_shards, make_subset_root
from helpers import PROJECT_ROOT, help_records, run_script
from torchvision.utils import save_image

from pipeline.archs import SRResNet
from pipeline.data import LoaderConfig, build_loader, open_split
from pipeline.evaluate import command_line, main
from pipeline.evaluation.evaluator import evaluate, to_8bit
from pipeline.runtime.distributed import ProcessPlace
from pipeline.training.config import ModelConfig, TrainConfig

TINY = ModelConfig(blocks=2, channels=8, d_channels=4)


def _split_keys(data: Path, split: str) -> list[str]:
    loader = build_loader(
        LoaderConfig(data=data, split=split, batch_size=64, shuffle=False, flip=False,
                     drop_last=False, with_keys=True, backend="reference", threads=0),
        ProcessPlace(),
    )  # fmt: skip
    return sorted(key for batch in loader for key in batch.keys)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_ranks_score_every_sample_once_also_when_the_split_does_not_divide(
    shards_faces128, backend, batch
):
    everything = _split_keys(shards_faces128, "val")
    assert len(everything) == 12
    for world in (2, 5, 7):  # 12 faces: 6+6, 2+2+3+2+3, 1-2 each
        seen: list[str] = []
        for rank in range(world):
            cfg = LoaderConfig(data=shards_faces128, split="val", batch_size=batch, shuffle=False,
                               flip=False, drop_last=False, with_keys=True, backend=backend,
                               threads=1)  # fmt: skip
            loader = build_loader(cfg, ProcessPlace(rank, 0, world))
            batches = len(loader)  # this epoch's: the next epoch reads the next shard
            keys = [key for b in loader for key in b.keys]
            assert batches == -(-len(keys) // batch)  # the partial last batch is counted
            seen += keys
        assert sorted(seen) == everything, world  # none twice, none left out


def _checkpoint(folder: Path, scale: int = 4, step: int = 7) -> Path:
    torch.manual_seed(0)
    generator = SRResNet(scale, TINY.blocks, TINY.channels)
    cfg = TrainConfig(scale=scale, model=TINY)
    path = folder / "checkpoints" / f"step-{step:08d}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"step": step, "config": cfg.to_dict(),
                "model": {"generator": generator.state_dict()}}, path)  # fmt: skip
    return path


def _evaluate_cmd(*args: object, processes: int = 0) -> list[str]:
    launcher = [sys.executable, "-m", "pipeline.evaluate"]
    if processes:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={processes}", "-m", "pipeline.evaluate"]  # fmt: skip
    return [*launcher, *map(str, args)]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_two_processes_score_like_one_and_the_bicubic_baseline_is_cached(tmp_path, metric_weights):
    # 7 val faces: 3 for rank 0, 4 for rank 1. Batches of 1, so each face's SR is computed
    # alone in both runs (a conv's last bits can depend on what else is in its batch, and
    # rounding to 8 bits can turn that into a level); only the order of the sums differs.
    root = make_subset_root(tmp_path / "celeba", {"train": 4, "val": 7, "test": 1})
    data = make_shards(root, tmp_path / "data")
    run = tmp_path / "run"
    _checkpoint(run)
    results = {}
    for processes in (2, 1):  # 2 first: each rank computes its part of the baseline
        out = tmp_path / f"scores-{processes}.json"
        result = _run(_evaluate_cmd("--checkpoint", run, "--data", data, "--split", "val",
                                    "--scale", 4, "--batch-size", 1, "--json", out,
                                    "--loader-threads", 1, "--lpips", "--fid",
                                    "--alexnet-weights", metric_weights["alexnet"],
                                    "--inception-weights", metric_weights["inception"],
                                    processes=processes))  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        results[processes] = json.loads(out.read_text())
        cached = "7 computed, 0 from" if processes == 2 else "0 computed, 7 from the cache"
        assert cached in result.stderr
    one, two = results[1], results[2]
    assert one["images"] == two["images"] == 7
    assert one["images_per_rank"] == [7] and two["images_per_rank"] == [3, 4]
    for kind in ("sr", "bicubic"):
        assert {"lpips", "fid"} <= set(one[kind])  # FID from statistics summed over ranks
        for name, value in one[kind].items():
            # FID: float64 sums in another order, then the square roots of the eigenvalues of
            # a rank-6 2048x2048 product: rounding-level eigenvalues give about sqrt(1e-16)
            tolerance = 1e-4 if name == "fid" else 1e-6
            assert abs(value - two[kind][name]) <= tolerance, (kind, name, value, two[kind][name])
    assert one["sr"]["lpips"] > one["bicubic"]["lpips"] > 0  # an untrained G is far worse
    assert one["sr"]["fid"] > one["bicubic"]["fid"] > 0
    assert one["step"] == 7 and one["precision"] == "fp32" and one["split"] == "val"
    assert one["bicubic"]["psnr_y"] > one["sr"]["psnr_y"] + 3  # an untrained G is far worse
    cache = json.loads((data / "baselines" / "bicubic-val-x4.json").read_text())
    assert sorted(cache["images"]) == _split_keys(data, "val")


@pytest.mark.integration
def test_the_test_split_is_scored_by_the_command_with_a_table(shards_faces128, tmp_path):
    run = tmp_path / "run"
    checkpoint = _checkpoint(run, step=12)
    result = _run(_evaluate_cmd("--checkpoint", checkpoint, "--data", shards_faces128, "--split",
                                "test", "--scale", 4, "--loader-threads", 1))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("test split, 8 images, checkpoint ") and "(step 12)" in lines[0]
    assert lines[1].split() == ["PSNR-Y", "SSIM-Y", "PSNR-RGB", "SSIM-RGB"]
    assert lines[2].split()[0] == "SR" and lines[3].split()[0] == "bicubic"


@pytest.mark.integration
def test_an_image_folder_scores_like_lossless_shards_and_skips_bad_files(
    small_root, tmp_path, metric_weights
):
    """--images DIR: HR read losslessly, LR made by the preprocessing's bicubic, so the scores
    equal those of shards written with --codec png (HR and LR both lossless) of the same
    faces; an unreadable file and an odd size are skipped and counted."""
    data = make_shards(small_root, tmp_path / "data", codec="png")
    folder = tmp_path / "hr"
    folder.mkdir()
    loader = build_loader(
        LoaderConfig(data=data, split="test", batch_size=8, shuffle=False, flip=False,
                     drop_last=False, with_keys=True, backend="reference", threads=0),
        ProcessPlace(),
    )  # fmt: skip
    for batch in loader:
        for key, hr in zip(batch.keys, batch.hr, strict=True):
            save_image((hr + 1) / 2, folder / f"{key}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    save_image(torch.rand(3, 30, 30), folder / "odd.png")  # 30 is not a multiple of 4
    checkpoint = _checkpoint(tmp_path / "run")
    scores = {}
    for source in (("--data", data, "--split", "test"), ("--images", folder)):
        out = tmp_path / f"{source[0][2:]}.json"
        result = _run(_evaluate_cmd("--checkpoint", checkpoint, *source, "--scale", 4,
                                    "--json", out, "--loader-threads", 1, "--markdown",
                                    "--alexnet-weights", metric_weights["alexnet"],
                                    "--no-fid"))  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        scores[source[0]] = (json.loads(out.read_text()), result)
    (shards, _), (images, result) = scores["--data"], scores["--images"]
    assert images["images"] == shards["images"] == 8 and images["skipped"] == 2
    assert "broken.jpg: skipped, not a readable image" in result.stderr
    assert "odd.png: skipped, 30x30 is not a square whose side 4 divides" in result.stderr
    for kind in ("sr", "bicubic"):
        assert set(images[kind]) == set(shards[kind]) and "fid" not in images[kind]
        for name, value in shards[kind].items():
            assert images[kind][name] == pytest.approx(value, abs=1e-6), (kind, name)
    table = result.stdout.strip().splitlines()[-4:]
    assert table[0] == "| method | PSNR-Y | SSIM-Y | LPIPS |"
    assert table[2].startswith(f"| bicubic | {images['bicubic']['psnr_y']:.2f} | ")
    assert table[3].startswith("| SRResNet (this pipeline, step 7, raw weights) | ")


@pytest.mark.integration
def test_a_metric_asked_for_without_its_weights_is_a_one_line_error(
    shards_faces128, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoint = _checkpoint(tmp_path / "run")
    result = _run(_evaluate_cmd("--checkpoint", checkpoint, "--data", shards_faces128,
                                "--scale", 4, "--fid"))  # fmt: skip
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    cached = tmp_path / "torch/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth"
    assert error.startswith(f"pipeline.evaluate: error: {cached}: inception weights")
    assert "pipeline.weights fetch inception" in error


@pytest.mark.integration
def test_the_weight_average_is_scored_unless_the_raw_weights_are_asked_for(
    shards_faces128, tmp_path
):
    checkpoint = _checkpoint(tmp_path / "run")
    state = torch.load(checkpoint, weights_only=True)
    torch.manual_seed(1)  # another net as the "average": its scores must differ
    average = SRResNet(4, TINY.blocks, TINY.channels).state_dict()
    state["model"]["generator_ema"] = {"weights": average, "updates": 3, "decay": 0.999}
    torch.save(state, checkpoint)
    scores = {}
    for weights in ("ema", "raw"):
        out = tmp_path / f"{weights}.json"
        result = _run(_evaluate_cmd("--checkpoint", checkpoint, "--data", shards_faces128,
                                    "--scale", 4, "--weights", weights, "--json", out,
                                    "--loader-threads", 1))  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{weights} weights" in result.stdout
        scores[weights] = json.loads(out.read_text())
        assert scores[weights]["weights"] == weights
    assert scores["ema"]["sr"]["psnr_y"] != scores["raw"]["sr"]["psnr_y"]


@pytest.mark.integration
def test_wrong_scale_and_missing_checkpoint_are_one_line_errors(shards_faces128, tmp_path):
    run = tmp_path / "run"
    _checkpoint(run, scale=4)
    result = _run(_evaluate_cmd("--checkpoint", run, "--data", shards_faces128, "--scale", 8))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("made for scale 4, not 8")
    result = _run(_evaluate_cmd("--checkpoint", tmp_path / "nope.pt", "--data", shards_faces128,
                                "--scale", 4))  # fmt: skip
    assert result.returncode == 2 and "nope.pt: checkpoint not found" in result.stderr


@pytest.mark.integration
def test_a_baseline_made_for_other_shards_is_recomputed(shards_faces128, tmp_path):
    data = copy_of(shards_faces128, tmp_path / "data")
    shards = open_split(data, "val", 4)
    cfg = LoaderConfig(data=data, split="val", scale=4, batch_size=6, threads=1)
    torch.manual_seed(0)
    generator = SRResNet(4, TINY.blocks, TINY.channels)
    first = evaluate(generator, cfg, ProcessPlace(), shards=shards)
    path = data / "baselines" / "bicubic-val-x4.json"
    stored = json.loads(path.read_text())
    stored["key"]["manifest_sha256"] = "0" * 64
    stored["images"] = {k: [0.0, 0.0, 0.0, 0.0] for k in stored["images"]}
    path.write_text(json.dumps(stored))
    again = evaluate(generator, cfg, ProcessPlace(), shards=shards)
    assert again.bicubic == first.bicubic  # the zeros of the foreign file were not used
    assert json.loads(path.read_text())["key"]["manifest_sha256"] != "0" * 64


def test_a_loader_that_loses_samples_cannot_give_scores(shards_faces128, monkeypatch):
    from pipeline.evaluation import evaluator

    class Losing:  # a loader bug that drops the last batch
        def __init__(self, cfg, place, shards):
            self.real = build_loader(cfg, place, shards)
            self.decoder = self.real.decoder

        def __iter__(self):
            return iter(list(self.real)[:-1])

    losing = Losing

    monkeypatch.setattr(evaluator, "build_loader", losing)
    cfg = LoaderConfig(data=shards_faces128, split="val", scale=4, batch_size=5, threads=1)
    generator = SRResNet(4, TINY.blocks, TINY.channels)
    with pytest.raises(
        RuntimeError, match=r"val: 10 images scored \(\[10\] per rank\), the split holds 12"
    ):
        evaluate(generator, cfg, ProcessPlace(), shards=open_split(shards_faces128, "val", 4))


def test_sr_is_scored_as_a_saved_8_bit_image():
    levels = torch.arange(256, dtype=torch.float32) / 255
    nudged = (levels + 0.49 / 255).clamp(0, 1)
    assert torch.equal(to_8bit(nudged), levels)  # within half a level: the same saved pixel
    assert torch.equal(to_8bit(levels[1:] - 0.51 / 255), levels[:-1])


def test_help_shows_every_options_default(capsys):
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    records = help_records(command_line)
    assert len(records) == 18  # argparse's 20, --lpips/--no-lpips and --fid/--no-fid pairs
    for option, text in records.items():
        assert option in shown
        if option != "--markdown":  # a plain flag: off unless given
            assert "[default: " in text or "[required" in text, option
    assert records["--batch-size"].endswith("[default: 16]")
    assert records["--scale"] == "[required]"
    assert records["--images"].endswith("[required unless --data]")
    assert records["--fid"].endswith("[default: auto, used when its weights are present]")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--checkpoint", "c", "--scale", "4"], "exactly one of --data and --images is needed"),
        (["--checkpoint", "c", "--scale", "4", "--data", "d", "--images", "i"],
         "exactly one of --data and --images is needed"),
        (["--data", "d", "--scale", "4"], "Missing option '--checkpoint'."),
        (["--checkpoint", "c", "--data", "d"], "Missing option '--scale'. Choose from: 2, 4, 8"),
        (["--checkpoint", "c", "--data", "d", "--scale", "4", "--bogus"],
         "No such option '--bogus'."),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_and_exit_status_2(capsys, argv, error):
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"pipeline.evaluate: error: {error}"]


@pytest.mark.integration
def test_the_srgan_evaluate_script_exits_with_mains_status():
    result = run_script("srgan-evaluate", "--help")
    assert result.returncode == 0 and "--checkpoint PATH|URI" in result.stdout
    result = run_script("srgan-evaluate", "--scale", "4")
    assert result.returncode == 2
    assert result.stderr == "pipeline.evaluate: error: Missing option '--checkpoint'.\n"
