"""Released weights files: what is saved is what loads, and a bad file is one line."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline.archs import SRResNet
from pipeline.serving.generator_file import (
    GeneratorFileError,
    read_generator_file,
    save_generator,
    sha256,
)


def _trained_looking(scale: int) -> SRResNet:
    """Weights and BatchNorm statistics away from their initial values."""
    torch.manual_seed(scale)
    model = SRResNet(scale, blocks=2, channels=8)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.1)
    return model.eval()


@pytest.mark.parametrize("scale", [4, 8])
def test_a_saved_generator_loads_as_its_half_precision_weights(tmp_path, scale):
    model = _trained_looking(scale)
    path = tmp_path / "g.safetensors"
    digest = save_generator(model, path, "fp16", {"step": "123"})
    assert digest == sha256(path)
    loaded, meta = read_generator_file(path)
    assert (meta["scale"], meta["blocks"], meta["channels"], meta["step"]) == (
        str(scale),
        "2",
        "8",
        "123",
    )
    for name, tensor in model.state_dict().items():
        want = tensor.half().float() if tensor.is_floating_point() else tensor
        assert torch.equal(loaded.state_dict()[name], want), name
    lr = torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        full, half = model(lr), loaded(lr)
    assert half.shape == (2, 3, 12 * scale, 10 * scale)
    # half-precision weights: close to the original, yet not bit-equal (they were rounded)
    assert 0 < (full - half).abs().max() < 2e-2
    assert path.stat().st_size < sum(t.numel() * 2 + 64 for t in model.state_dict().values()) + 4096


def test_bad_files_are_one_line_naming_the_file(tmp_path):
    path = tmp_path / "g.safetensors"
    save_generator(_trained_looking(4), path)
    data = path.read_bytes()
    (tmp_path / "torn.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a weights file at all")
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors", metadata={"format": "x"})
    cases = [("torn", "not a readable"), ("junk", "not a readable"),
             ("other", "not a srgan-celeba generator"), ("absent", "not found")]  # fmt: skip
    for name, words in cases:
        with pytest.raises(GeneratorFileError) as info:
            read_generator_file(tmp_path / f"{name}.safetensors")
        message = str(info.value)
        assert message.startswith(str(tmp_path / f"{name}.safetensors")) and words in message
        assert "\n" not in message


def test_a_header_without_a_network_and_a_request_for_raw_weights_are_one_line(tmp_path):
    path = tmp_path / "g.safetensors"
    save_generator(_trained_looking(4), path)
    with safe_open(str(path), framework="pt") as handle:
        state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        meta = handle.metadata()
    save_file(state, tmp_path / "bad.safetensors", metadata={**meta, "blocks": "many"})
    with pytest.raises(GeneratorFileError, match="header without a usable network"):
        read_generator_file(tmp_path / "bad.safetensors")
    with pytest.raises(GeneratorFileError, match=r"holds ema weights only \(--weights raw"):
        read_generator_file(path, "raw")
    assert read_generator_file(path, "ema")[0].scale == 4  # what a file without the key holds
