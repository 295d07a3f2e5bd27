"""The generators in models/: on a fresh clone, with no training, srgan-upscale and srgan-export
use them; they match their card's sha256, docs/RESULTS.md shows their results file, and on
real faces they beat bicubic."""

from __future__ import annotations

import json

import mlflow.pytorch
import numpy as np
import pytest
import torch
from conftest import present_by_split, synthetic_sample
from helpers import PROJECT_ROOT
from PIL import Image

from pipeline import evaluate, export, upscale
from pipeline.evaluation.metrics import psnr
from pipeline.release import check_release, results_block
from pipeline.release.__main__ import main as release_main
from pipeline.release.card import BEGIN, END
from pipeline.serving.generator_file import read_generator_file
from pipeline.serving.shipped import SHIPPED, shipped_model
from preprocess.images import center_crop, resize_bicubic

MODELS = PROJECT_ROOT / "models"


def test_the_shipped_files_are_the_ones_their_results_describe():
    results = json.loads((MODELS / "results.json").read_text())
    assert {m["file"] for m in results["models"].values()} == set(SHIPPED.values())
    assert check_release(MODELS) == []
    card = (MODELS / "README.md").read_text()
    assert all(m["sha256"] in card for m in results["models"].values())
    doc = (PROJECT_ROOT / "docs" / "RESULTS.md").read_text()
    assert f"{BEGIN}\n{results_block(results)}\n{END}" in doc


def _faces(root, split_names, scale, folder):
    """HR 128 faces as srgan-preprocess makes them (centre crop 178, HR 128) and their LR."""
    folder.mkdir(exist_ok=True)
    hrs = []
    for name in split_names:
        hr = resize_bicubic(center_crop(Image.open(root / "img_align_celeba" / name), 178), 128)
        resize_bicubic(hr, 128 // scale).save(folder / f"{name[:-4]}.png")
        hrs.append(np.asarray(hr))
    return hrs


def _y_psnr(images, hrs):
    def tensor(batch):
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255

    return psnr(tensor(images), tensor(hrs), border=4).mean().item()


@pytest.mark.parametrize("model, scale", [(None, 4), ("x8", 8)])
def test_upscale_without_a_checkpoint_uses_the_shipped_model(
    model, scale, small_root, tmp_path, capsys
):
    # val faces: the release trained on train and scored test, so neither tells generalisation
    names = [small_root / "img_align_celeba" / n for n in present_by_split(small_root)["val"][:6]]
    hrs = _faces(small_root, [p.name for p in names], scale, tmp_path / "lr")
    argv = ["--input", str(tmp_path / "lr"), "--output", str(tmp_path / "sr"), "--device", "cpu"]
    argv += ["--model", model] if model else []
    assert upscale.main(argv) == 0
    out = capsys.readouterr().out
    assert f"6 images upscaled x{scale}" in out
    sr = [np.asarray(Image.open(tmp_path / "sr" / f"{p.stem}.png")) for p in names]
    assert all(image.shape == (128, 128, 3) for image in sr)
    bicubic = [np.asarray(Image.open(tmp_path / "lr" / f"{p.stem}.png").resize(
        (128, 128), Image.Resampling.BICUBIC)) for p in names]  # fmt: skip
    gain = _y_psnr(sr, hrs) - _y_psnr(bicubic, hrs)
    print(f"shipped x{scale} on {len(names)} sample faces: {gain:+.2f} dB over bicubic")
    if not synthetic_sample():  # real faces, what the weights were made for (CI's sample)
        assert gain > 0.3


@pytest.mark.integration
def test_export_of_a_shipped_model(tmp_path, capsys):
    assert export.main(["--model", "x8", "--onnx", str(tmp_path / "x8.onnx")]) == 0
    assert f"x8 generator from {shipped_model('x8')}" in capsys.readouterr().out
    assert (tmp_path / "x8.onnx").stat().st_size > 10_000


def test_a_missing_shipped_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("pipeline.serving.shipped.MODELS_DIR", tmp_path)
    face = tmp_path / "face.png"
    Image.new("RGB", (8, 8)).save(face)
    assert upscale.main(["--input", str(face), "--output", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pipeline.upscale: error: ") and "shipped model not found" in err
    assert "\n" not in err
    argv = ["--model", "x4", "--checkpoint", "x.pt", "--input", str(face), "--output", "o.png"]
    assert upscale.main(argv) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.integration
def test_register_puts_the_shipped_weights_in_the_model_registry(
    tmp_path, capsys, monkeypatch, shards_faces128
):
    """What `mlflow models serve -m models:/srgan-celeba-x4/1` then serves (README, "Serving"),
    and what `pipeline.evaluate` scores from the registry as from the file."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert release_main(["register", str(MODELS), "--tracking-uri", uri]) == 0
    assert "models:/srgan-celeba-x8/1" in capsys.readouterr().out
    results = json.loads((MODELS / "results.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=uri)
    tags = client.get_model_version("srgan-celeba-x4", "1").tags
    assert tags["sha256"] == results["models"]["x4"]["sha256"]
    assert tags["test_psnr_y"] == f"{results['models']['x4']['scores']['test']['sr']['psnr_y']:.4f}"
    mlflow.set_tracking_uri(uri)
    try:
        served = mlflow.pytorch.load_model("models:/srgan-celeba-x4/1")
    finally:
        mlflow.set_tracking_uri(None)
    shipped = read_generator_file(shipped_model("x4"))[0]
    lr = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        assert (served(lr) - shipped(lr)).abs().max() < 1e-5
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    scores = {}
    for name, source in (("uri", "models:/srgan-celeba-x4/1"), ("file", shipped_model("x4"))):
        out = tmp_path / f"{name}.json"
        assert evaluate.main(["--checkpoint", str(source), "--data", str(shards_faces128),
                              "--scale", "4", "--json", str(out), "--loader-threads", "1",
                              "--no-lpips", "--no-fid"]) == 0  # fmt: skip
        scores[name] = json.loads(out.read_text())
    assert scores["uri"]["sr"]["psnr_y"] == pytest.approx(scores["file"]["sr"]["psnr_y"], abs=1e-3)
    assert scores["uri"]["images"] == scores["file"]["images"] > 0
    assert (scores["uri"]["step"], scores["uri"]["weights"]) == (None, "logged")
    assert evaluate.main(["--checkpoint", "models:/srgan-celeba-x4/9", "--data",
                          str(shards_faces128), "--scale", "4"]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert error.startswith("pipeline.evaluate: error: models:/srgan-celeba-x4/9: "), error
    assert "\n" not in error
