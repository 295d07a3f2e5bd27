"""LPIPS and FID (pipeline.evaluation.perceptual) and the weights they load (pipeline.weights)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torchvision.models import alexnet

from pipeline import weights
from pipeline.archs.pretrained import WEIGHTS, WeightsMissing
from pipeline.evaluation.perceptual import (
    LPIPS,
    SetStatistics,
    frechet_distance,
    load_fid,
    load_lpips,
)


def test_lpips_runs_the_files_alexnet_layer_for_layer(metric_weights):
    metric = LPIPS(metric_weights["alexnet"])
    reference = alexnet(weights=None)
    reference.load_state_dict(torch.load(metric_weights["alexnet"], weights_only=True))
    image = torch.rand(2, 3, 64, 64)
    # lpips's slices end at relu1, relu2, ..., relu5 of torchvision's alexnet.features
    ends = (2, 5, 8, 10, 12)
    outputs = metric.model.net(image * 2 - 1)
    for output, end in zip(outputs, ends, strict=True):
        assert torch.allclose(output, reference.features[:end](image * 2 - 1), atol=1e-5)
    other = torch.rand(2, 3, 64, 64)
    assert torch.equal(metric(image, image), torch.zeros(2, dtype=torch.float64))
    distance = metric(image, other)
    assert distance.shape == (2,) and (distance > 0).all()
    assert torch.allclose(metric(other, image), distance)


def test_absent_weights_leave_a_metric_out_once_or_stop_when_asked_for(
    tmp_path, monkeypatch, caplog, metric_weights
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert load_lpips("auto", None) is None
        assert load_fid("auto", None) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and warnings[0].startswith("LPIPS left out of the evaluation: ")
    cached = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    with pytest.raises(WeightsMissing) as error:
        load_lpips("on", None)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{cached}: alexnet weights")
    assert "python -m pipeline.weights fetch alexnet" in message
    assert "--alexnet-weights PATH" in message
    with pytest.raises(WeightsMissing, match=r"absent\.pth: inception weights"):
        load_fid("auto", str(tmp_path / "absent.pth"))  # a named file must be there
    assert load_lpips("off", str(metric_weights["alexnet"])) is None
    # in the hub cache under its real name, it is found without being named
    cached.parent.mkdir(parents=True)
    cached.write_bytes(metric_weights["alexnet"].read_bytes())
    assert isinstance(load_lpips("auto", None), LPIPS)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsMissing, match=r"wrong\.pth: not the inception weights"):
        load_fid("on", str(wrong))


def test_set_statistics_summed_in_parts_give_torch_fidelitys_fid():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=generator, dtype=torch.float64)
    b = torch.randn(200, 16, generator=generator, dtype=torch.float64) * 1.3 + 0.2
    parts = []
    for chunk in (a[:120], a[120:]):  # two ranks' shares, then their all-reduce
        statistics = SetStatistics(16, torch.device("cpu"))
        statistics.add(chunk)
        parts.append(statistics.sums)
    total = SetStatistics(16, torch.device("cpu"))
    mean, covariance = total.mean_and_covariance(parts[0] + parts[1])
    assert np.allclose(mean, a.mean(0).numpy()) and np.allclose(covariance, np.cov(a.T.numpy()))
    other = SetStatistics(16, torch.device("cpu"))
    other.add(b)
    ours = frechet_distance((mean, covariance), other.mean_and_covariance(other.sums))
    theirs = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b),
                                      verbose=False)["frechet_inception_distance"]  # fmt: skip
    assert ours == pytest.approx(theirs, rel=1e-9) and ours > 0.1
    assert frechet_distance((mean, covariance), (mean, covariance)) == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        total.mean_and_covariance(torch.zeros_like(total.sums))


def test_weights_check_and_an_offline_fetch_say_what_and_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    present = WEIGHTS["vgg19"].cached_path()
    present.parent.mkdir(parents=True)
    present.write_bytes(b"x")
    assert weights.main(["check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["vgg19", "present", str(present)]
    assert lines[1].split()[:2] == ["alexnet", "ABSENT"] and len(lines) == 4

    def offline(url, dst, hash_prefix=None):
        raise OSError(f"<urlopen error [Errno -3] Temporary failure in name resolution> {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert weights.main(["fetch"]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"vgg19: present at {present}"
    errors = err.strip().splitlines()
    assert len(errors) == 2  # alexnet and inception, one line each, with URL and target
    for line, name in zip(errors, ("alexnet", "inception"), strict=True):
        file = WEIGHTS[name]
        assert line.startswith(f"pipeline.weights: error: {name}: cannot download {file.url} ")
        assert f"to {file.cached_path()}: " in line
    assert not WEIGHTS["alexnet"].cached_path().exists()

    def download(url, dst, hash_prefix=None):
        assert hash_prefix == "7be5be79"  # torch.hub checks the SHA-256 prefix in the name
        with open(dst, "wb") as f:
            f.write(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    assert weights.main(["fetch", "alexnet"]) == 0
    assert WEIGHTS["alexnet"].cached_path().read_bytes() == b"weights"
    assert weights.main(["fetch", "resnet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("pipeline.weights: error: ") and "'resnet' is not one of" in error
