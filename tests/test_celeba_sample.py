"""Which CelebA sample a session uses (tests/conftest.py): real when there, else demo faces."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REQUIRED_ENV, SAMPLE_ENV, choose_sample, demo_root, sample_header
from helpers import PROJECT_ROOT

from preprocess.celeba import SYNTHETIC_MARKER


def _celeba(root: Path, synthetic: bool = False) -> Path:
    (root / "img_align_celeba").mkdir(parents=True)
    if synthetic:
        (root / SYNTHETIC_MARKER).write_text("drawn\n")
    return root


def test_the_real_sample_is_used_when_there_and_demo_faces_otherwise(tmp_path):
    real = _celeba(tmp_path / "real")
    assert choose_sample({}, default=real).real
    assert choose_sample({REQUIRED_ENV: "1"}, default=real).root == real
    fallback = choose_sample({}, default=tmp_path / "absent")
    assert fallback.root is None and not fallback.real
    assert sample_header(fallback).startswith("celeba sample: demo faces (")
    assert sample_header(fallback).endswith("absent not found")
    forced = choose_sample({SAMPLE_ENV: "demo"}, default=real)
    assert forced.root is None and forced.origin == f"forced by {SAMPLE_ENV}=demo"


def test_celeba_sample_names_a_root_and_an_absent_one_fails_the_session(tmp_path):
    other = _celeba(tmp_path / "other")
    assert choose_sample({SAMPLE_ENV: str(other)}, default=tmp_path / "absent").root == other
    with pytest.raises(pytest.UsageError, match=r"CELEBA_SAMPLE=.*typo: no CelebA sample there"):
        choose_sample({SAMPLE_ENV: str(tmp_path / "typo")}, default=other)
    drawn = _celeba(tmp_path / "drawn", synthetic=True)
    assert not choose_sample({SAMPLE_ENV: str(drawn)}).real  # labelled synthetic: not real


@pytest.mark.parametrize("asked", ["demo", "drawn", None])
def test_a_required_real_sample_refuses_anything_else(tmp_path, asked):
    _celeba(tmp_path / "drawn", synthetic=True)
    environ = {REQUIRED_ENV: "1"}
    if asked:
        environ[SAMPLE_ENV] = asked if asked == "demo" else str(tmp_path / asked)
    with pytest.raises(pytest.UsageError, match=f"^{REQUIRED_ENV}=1 but the CelebA sample is not"):
        choose_sample(environ, default=tmp_path / "absent")


def test_demo_faces_are_drawn_once_and_appear_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = demo_root(count=3)
    assert (root / SYNTHETIC_MARKER).is_file() and root.parent == tmp_path
    drawn = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert demo_root(count=3) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == drawn  # reused, not redrawn
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no scratch folder left


def test_the_run_says_which_sample_first_even_when_quiet():
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_celeba_sample.py::test_the_real_sample_is_used_when_there_and_demo_faces_otherwise"],
        cwd=PROJECT_ROOT, env={**os.environ, SAMPLE_ENV: "demo", REQUIRED_ENV: ""},
        capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("celeba sample: demo faces (") and "forced by" in lines[0], lines
    assert lines[-2] == lines[0]  # and again above the closing line
