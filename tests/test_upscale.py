from __future__ import annotations

import logging

import numpy as np
import torch
from conftest import shared_celeba
from PIL import Image

from pipeline import upscale
from pipeline.archs import SRResNet
from pipeline.checkpoint import save_checkpoint
from pipeline.config import ModelConfig, TrainConfig


def test_upscale_a_folder_with_the_checkpoints_scale(tmp_path, caplog):
    torch.manual_seed(0)
    cfg = TrainConfig(scale=8, model=ModelConfig(blocks=1, channels=8))
    generator = SRResNet(8, blocks=1, channels=8).eval()
    checkpoint = save_checkpoint(
        tmp_path / "ckpt",
        5,
        {"config": cfg.to_dict(), "model": {"generator": generator.state_dict()}},
        keep=1,
    )
    source = tmp_path / "in"
    source.mkdir()
    faces = sorted((shared_celeba() / "img_align_celeba").iterdir())[:2]
    for face in faces:
        Image.open(face).resize((20, 24)).save(source / f"{face.stem}.jpg")
    (source / "notes.txt").write_text("not an image")

    with caplog.at_level(logging.WARNING):
        assert (
            upscale.main(
                [
                    "--checkpoint",
                    str(checkpoint),
                    "--input",
                    str(source),
                    "--output",
                    str(tmp_path / "out"),
                ]
            )
            == 0
        )
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == [f"{f.stem}.png" for f in faces]
    assert any(
        "skipped" in r.getMessage() and "notes.txt" in r.getMessage() for r in caplog.records
    )
    image = Image.open(tmp_path / "out" / outputs[0])
    assert image.size == (160, 192) and image.mode == "RGB"
    lr = torch.from_numpy(
        np.asarray(Image.open(source / f"{faces[0].stem}.jpg"), dtype=np.float32) / 255
    ).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = generator(lr).clamp(-1, 1).add(1).mul(127.5).round().byte()[0]
    assert np.array_equal(np.asarray(image), expected.permute(1, 2, 0).numpy())


def test_not_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    (tmp_path / "in").mkdir()
    code = upscale.main(
        [
            "--checkpoint",
            str(bad),
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "bad.pt: not a pipeline.train checkpoint" in capsys.readouterr().err
