from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_celeba
from PIL import Image

from pipeline import upscale
from pipeline.archs import SRResNet
from pipeline.runtime.checkpoint import save_checkpoint
from pipeline.serving.generators import Generator, super_resolve
from pipeline.training.config import ModelConfig, TrainConfig


def _checkpoint(folder: Path, scale: int = 8, blocks: int = 1, channels: int = 8) -> tuple:
    torch.manual_seed(0)
    cfg = TrainConfig(scale=scale, model=ModelConfig(blocks=blocks, channels=channels))
    generator = SRResNet(scale, blocks=blocks, channels=channels).eval()
    path = save_checkpoint(
        folder, 5, {"config": cfg.to_dict(), "model": {"generator": generator.state_dict()}}, 1
    )
    return path, generator


def _expected(generator: SRResNet, image: Path) -> np.ndarray:
    lr = torch.from_numpy(np.asarray(Image.open(image), dtype=np.float32) / 255)
    with torch.no_grad():
        sr = generator(lr.permute(2, 0, 1)[None]).clamp(-1, 1).add(1).mul(127.5).round()
    return sr.byte()[0].permute(1, 2, 0).numpy()


def _run(*args: object) -> int:
    """On the CPU in fp32, where the expected values are computed (a GPU would pick bf16)."""
    return upscale.main([str(a) for a in args] + ["--device", "cpu"])


def test_upscale_a_folder_with_the_checkpoints_scale(tmp_path, caplog, capsys):
    checkpoint, generator = _checkpoint(tmp_path / "ckpt")
    source = tmp_path / "in"
    source.mkdir()
    faces = sorted((shared_celeba() / "img_align_celeba").iterdir())[:3]
    for face, size in zip(faces, [(20, 24), (20, 24), (18, 14)], strict=True):
        Image.open(face).resize(size).save(source / f"{face.stem}.png")
    (source / "notes.txt").write_text("not an image, and not named as one: left alone")
    (source / "broken.png").write_bytes(b"named as an image, but not one")

    with caplog.at_level(logging.WARNING):
        code = _run("--checkpoint", checkpoint, "--input", source, "--output", tmp_path / "out",
                    "--batch-size", 2)  # fmt: skip
    assert code == upscale.PARTIAL  # one input skipped: the status says so
    assert "3 images upscaled x8 to " in capsys.readouterr().out
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == [f"{f.stem}.png" for f in faces]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "skipped" in warnings[0] and "broken.png" in warnings[0]
    for face in faces:  # two sizes, one batch of two and one of one: each as if alone
        image = Image.open(tmp_path / "out" / f"{face.stem}.png")
        lr_size = Image.open(source / f"{face.stem}.png").size
        assert image.size == (lr_size[0] * 8, lr_size[1] * 8) and image.mode == "RGB"
        difference = np.abs(
            np.asarray(image, np.int16) - _expected(generator, source / f"{face.stem}.png")
        )
        assert difference.max() <= 1


def test_an_output_that_cannot_be_written_is_skipped_and_16_bit_grey_is_scaled(tmp_path):
    checkpoint, generator = _checkpoint(tmp_path / "ckpt", scale=4)
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    ramp = np.linspace(0, 65535, 16 * 12).reshape(12, 16).astype(np.uint16)
    Image.fromarray(ramp).save(source / "a.png")  # 16-bit grey, 0..65535
    Image.fromarray((ramp // 257).astype(np.uint8)).convert("RGB").save(source / "b.png")
    (out / "a.png").mkdir(parents=True)  # a folder where a.png should go
    assert _run("--checkpoint", checkpoint, "--input", source, "--output", out) == upscale.PARTIAL
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # no .tmp left behind
    b = np.asarray(Image.open(out / "b.png"), np.int16)
    assert np.abs(b - _expected(generator, source / "b.png")).max() <= 1
    (out / "a.png").rmdir()
    assert _run("--checkpoint", checkpoint, "--input", source / "a.png", "--output", out) == 0
    a = np.asarray(Image.open(out / "a.png"), np.int16)
    assert np.abs(a - b).max() <= 1  # scaled to 8 bits as b was, not clipped to white


def test_a_single_file_in_the_format_of_its_extension_and_exit_0(tmp_path, capsys):
    checkpoint, _ = _checkpoint(tmp_path / "ckpt", scale=4)
    face = sorted((shared_celeba() / "img_align_celeba").iterdir())[0]
    source = tmp_path / "face.png"
    Image.open(face).resize((16, 20)).save(source)
    assert _run("--checkpoint", tmp_path / "ckpt", "--input", source,
                "--output", tmp_path / "big.jpg") == 0  # fmt: skip
    with Image.open(tmp_path / "big.jpg") as out:
        assert out.format == "JPEG" and out.size == (64, 80)
    assert _run("--checkpoint", checkpoint, "--input", source, "--output", tmp_path / "sr",
                "--format", "nope") == 2  # fmt: skip
    assert "unknown image extension '.nope'" in capsys.readouterr().err


def test_photos_are_upright_and_no_output_is_written_twice_or_over_its_input(tmp_path, capsys):
    checkpoint, _ = _checkpoint(tmp_path / "ckpt", scale=4)
    source = tmp_path / "in"
    source.mkdir()
    upright = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # as a camera held upright writes it: stored turned, shown upright
    upright.transpose(Image.Transpose.ROTATE_90).save(source / "turned.png", exif=exif)
    upright.save(source / "flat.png")  # the same picture: one batch of two once turned
    assert _run("--checkpoint", checkpoint, "--input", source, "--output", tmp_path / "out") == 0
    out = tmp_path / "out"
    turned, flat = (np.asarray(Image.open(out / n)) for n in ("turned.png", "flat.png"))
    assert flat.shape == (48, 80, 3) and np.array_equal(turned, flat)

    upright.save(source / "flat.jpg")  # flat.jpg and flat.png: both would be out/flat.png
    assert _run("--checkpoint", checkpoint, "--input", source, "--output", tmp_path / "out") == 2
    assert "flat.jpg and " in capsys.readouterr().err
    lone = tmp_path / "lone.png"
    upright.save(lone)
    assert _run("--checkpoint", checkpoint, "--input", lone, "--output", lone) == 2
    assert "the output would overwrite its input" in capsys.readouterr().err
    assert Image.open(lone).size == (20, 12)


def test_tiles_match_the_whole_image_within_one_grey_level():
    torch.manual_seed(0)
    model = SRResNet(4, blocks=3, channels=8).eval()
    generator = Generator(model, 4, "test")
    lr = torch.rand(1, 3, 200, 300)
    lr = torch.nn.functional.avg_pool2d(lr, 3, 1, 1)  # some structure, not only noise
    whole = super_resolve(generator, lr).to(torch.int16)
    tiled = super_resolve(generator, lr, tile=64, overlap=16).to(torch.int16)
    assert (tiled - whole).abs().max() <= 1
    seams = super_resolve(generator, lr, tile=64, overlap=0).to(torch.int16)
    assert (seams - whole).abs().max() > 1  # without the overlap the tiles' borders show


def test_bf16_stays_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    generator = Generator(SRResNet(4, blocks=2, channels=16).eval(), 4, "test")
    lr = torch.rand(2, 3, 24, 24)
    fp32 = super_resolve(generator, lr).float()
    bf16 = super_resolve(generator, lr, dtype=torch.bfloat16).float()
    assert not torch.equal(fp32, bf16)  # the autocast did run in bf16
    assert (fp32 - bf16).abs().mean() < 2.0


@pytest.mark.parametrize(
    ("make", "error"),
    [
        ("bad", "bad.pt: not a pipeline.train checkpoint"),
        ("missing", "missing.pt: checkpoint not found"),
    ],
)
def test_a_bad_checkpoint_is_one_clear_line(tmp_path, capsys, make, error):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    (tmp_path / "in").mkdir()
    checkpoint = {"bad": bad, "missing": tmp_path / "missing.pt"}[make]
    code = _run("--checkpoint", checkpoint, "--input", tmp_path / "in", "--output", tmp_path / "o")
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("pipeline.upscale: error: "), errors
    assert error in errors[0]


def test_a_batch_out_of_memory_is_retried_image_by_image_and_an_image_too_big_is_skipped(
    tmp_path, monkeypatch, caplog, capsys
):
    """A fake allocator: any batch of more than one image runs out of memory, and so does the
    one wide image alone. The three others are written as if run alone, the wide one is
    skipped with a line suggesting --tile, and the exit status says something was skipped."""
    checkpoint, generator = _checkpoint(tmp_path / "ckpt", scale=4)
    source = tmp_path / "in"
    source.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8)
    for name in ("a", "b", "c"):
        Image.fromarray(np.roll(pixels, ord(name), axis=1)).save(source / f"{name}.png")
    Image.fromarray(np.tile(pixels, (1, 2, 1))).save(source / "wide.png")  # 32 x 12
    real, tried = upscale.run_generator, []

    def allocator(gen: Generator, lr: torch.Tensor, *args: object) -> torch.Tensor:
        tried.append(tuple(lr.shape))
        if lr.shape[0] > 1 or lr.shape[-1] == 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(gen, lr, *args)

    monkeypatch.setattr(upscale, "run_generator", allocator)
    with caplog.at_level(logging.WARNING):
        code = _run("--checkpoint", checkpoint, "--input", source, "--output", tmp_path / "out",
                    "--batch-size", 4)  # fmt: skip
    assert code == upscale.PARTIAL == 3
    assert re.search(r"3 images upscaled x4 to .*, 1 skipped;", capsys.readouterr().out)
    assert sorted(tried) == sorted([(3, 3, 12, 16)] + [(1, 3, 12, 16)] * 3 + [(1, 3, 12, 32)])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]
    for name in ("a", "b", "c"):
        written = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"), np.int16)
        assert np.abs(written - _expected(generator, source / f"{name}.png")).max() <= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "wide.png: out of memory at 32x12; pass --tile 256" in warnings[0], warnings
