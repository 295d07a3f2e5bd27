"""The built-in demo faces: deterministic, CelebA-shaped, labelled synthetic, worth upscaling."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from helpers import run_preprocess
from PIL import Image

from preprocess.celeba import read_partition
from preprocess.demo_faces import draw_face


def test_same_index_same_pixels_other_index_other_face():
    a, b = np.asarray(draw_face(7)), np.asarray(draw_face(7))
    assert np.array_equal(a, b)
    assert a.shape == (218, 178, 3)
    assert np.abs(a.astype(int) - np.asarray(draw_face(8)).astype(int)).mean() > 10


def test_faces_have_detail_that_bicubic_loses():
    # A flat drawing would come back almost unchanged from a 4x down-up round trip; these
    # must lose real detail (hair strands, lashes, grain), like photographs do.
    for index in range(5):
        face = draw_face(index).crop((17, 37, 161, 181))
        small = face.resize((36, 36), Image.Resampling.BICUBIC)
        back = np.asarray(small.resize((144, 144), Image.Resampling.BICUBIC), dtype=float)
        mse = ((np.asarray(face, dtype=float) - back) ** 2).mean()
        psnr = 10 * np.log10(255**2 / mse)
        assert 20 < psnr < 32, psnr


def test_demo_root_is_a_celeba_layout_and_its_shards_say_synthetic(tmp_path: Path):
    root = tmp_path / "demo"
    run_preprocess("demo-data", root, "--count", "50")
    splits = read_partition(root / "list_eval_partition.txt")
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "val": 5, "test": 5}
    names = sorted(p.name for p in (root / "img_align_celeba").iterdir())
    assert names == [f"{i:06d}.jpg" for i in range(1, 51)]
    first = Image.open(io.BytesIO((root / "img_align_celeba" / "000001.jpg").read_bytes()))
    assert (first.format, first.size, first.mode) == ("JPEG", (178, 218), "RGB")

    out = tmp_path / "out"
    run_preprocess("shard", "--celeba-root", root, "--out", out, "--no-progress")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["synthetic"] is True
    assert manifest["splits"]["train"]["samples"] == 40 and manifest["missing"] == 0
