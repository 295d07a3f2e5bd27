"""The generator as an MLflow model: any batch and image size, through the Model Registry, from
a fresh process, and as `srgan-upscale --checkpoint models:/...`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from helpers import free_port
from PIL import Image

from pipeline import upscale
from pipeline.archs import SRResNet
from pipeline.serving.mlflow_model import (
    images_from_response,
    log_generator,
    registry_name,
    request_body,
    version_tags,
)

pytestmark = pytest.mark.integration  # the MLflow registry and its scoring server


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A 4x generator logged in a run and registered as srgan-celeba-x4 version 1."""
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registry-test")  # not the experiment an earlier test left active
    torch.manual_seed(0)
    generator = SRResNet(4, blocks=1, channels=8).eval()
    val = {"val/sr_psnr_y": 27.123456, "val/sr_ssim_y": 0.81, "val/bicubic_psnr_y": 25.0}
    with mlflow.start_run() as run:
        info = log_generator(
            generator, "generator", registry_name(4), version_tags(run.info.run_id, 40, val, "gan")
        )
    mlflow.set_tracking_uri(None)
    return uri, run.info.run_id, info, generator, folder


def test_a_finished_generator_is_a_tagged_registry_version(registered):
    uri, run_id, info, _, _ = registered
    assert info.registered_model_version == 1
    version = mlflow.MlflowClient(tracking_uri=uri).get_model_version("srgan-celeba-x4", "1")
    assert version.run_id == run_id
    assert version.tags == {
        "run_id": run_id,
        "step": "40",
        "phase": "gan",
        "val_psnr_y": "27.1235",
        "val_ssim_y": "0.8100",
    }  # fmt: skip  (no LPIPS: not measured)


def test_a_fresh_process_loads_it_for_any_batch_and_size(registered):
    uri, _, _, generator, folder = registered
    inputs = {"pair": np.random.rand(2, 3, 48, 48), "odd": np.random.rand(1, 3, 37, 53)}
    np.savez(folder / "inputs.npz", **{k: v.astype(np.float32) for k, v in inputs.items()})
    script = textwrap.dedent(f"""
        import mlflow.pytorch, numpy as np, torch
        mlflow.set_tracking_uri({uri!r})
        model = mlflow.pytorch.load_model("models:/srgan-celeba-x4/latest")
        inputs = np.load({str(folder / "inputs.npz")!r})
        with torch.no_grad():
            out = {{k: model(torch.from_numpy(inputs[k])).numpy() for k in inputs.files}}
        np.savez({str(folder / "outputs.npz")!r}, **out)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(folder / "outputs.npz")
    assert outputs["pair"].shape == (2, 3, 192, 192) and outputs["odd"].shape == (1, 3, 148, 212)
    for name, lr in inputs.items():
        with torch.no_grad():
            expected = generator(torch.from_numpy(lr.astype(np.float32))).numpy()
        assert np.abs(outputs[name] - expected).max() < 1e-5


def test_upscale_takes_a_model_uri(registered, tmp_path, monkeypatch, capsys):
    uri, _, _, generator, _ = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (53, 37, 3), np.uint8)).save(
        tmp_path / "face.png"
    )
    argv = ["--checkpoint", "models:/srgan-celeba-x4/1", "--input", str(tmp_path / "face.png"),
            "--output", str(tmp_path / "face-x4.png"), "--device", "cpu"]  # fmt: skip
    assert upscale.main(argv) == 0
    assert "1 images upscaled x4" in capsys.readouterr().out
    sr = np.asarray(Image.open(tmp_path / "face-x4.png"), np.int16)
    lr = torch.from_numpy(np.asarray(Image.open(tmp_path / "face.png"), np.float32) / 255)
    with torch.no_grad():
        expected = generator(lr.permute(2, 0, 1)[None]).clamp(-1, 1).add(1).mul(127.5).round()
    assert sr.shape == (212, 148, 3)
    assert np.abs(sr - expected[0].permute(1, 2, 0).numpy()).max() <= 1

    argv[1] = "models:/srgan-celeba-x8/latest"  # never registered
    assert upscale.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [
        "pipeline.upscale: error: models:/srgan-celeba-x8/latest: "
        "Registered Model with name=srgan-celeba-x8 not found"
    ]


def test_the_registered_model_answers_http_like_upscale(registered, tmp_path, monkeypatch):
    """`mlflow models serve` (MLflow's real scoring server) on a free port: a face in the
    documented request format comes back as srgan-upscale's output, within 1 grey level."""
    uri, _, _, _, _ = registered
    face = np.random.default_rng(1).integers(0, 256, (30, 22, 3), np.uint8)
    Image.fromarray(face).save(tmp_path / "face.png")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    argv = ["--checkpoint", "models:/srgan-celeba-x4/1", "--input", str(tmp_path / "face.png"),
            "--output", str(tmp_path / "sr.png"), "--device", "cpu"]  # fmt: skip
    assert upscale.main(argv) == 0
    port = free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            ["mlflow", "models", "serve", "-m", "models:/srgan-celeba-x4/1", "--env-manager",
             "local", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(request_body(face)).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = images_from_response(json.loads(response.read()))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    expected = np.asarray(Image.open(tmp_path / "sr.png"), np.int16)
    assert served.shape == (1, 120, 88, 3)
    assert np.abs(served[0].astype(np.int16) - expected).max() <= 1
