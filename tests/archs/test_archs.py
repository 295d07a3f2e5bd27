"""Architectures: shapes, ICNR, the discriminator's size, VGG weights loading offline."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import vgg19

from pipeline.archs import Discriminator, SRResNet, VGGFeatures, VGGWeightsMissing
from pipeline.archs.srresnet import UpsampleStage
from pipeline.archs.vgg import imagenet_weights_path, layer_names


@pytest.mark.parametrize("scale, stages", [(2, 1), (4, 2), (8, 3)])
def test_generator_upscales_with_one_stage_per_doubling(scale, stages):
    g = SRResNet(scale, blocks=2, channels=8)
    assert len(g.upsample) == stages
    convs = [stage.conv.weight for stage in g.upsample]
    assert len({w.data_ptr() for w in convs}) == stages  # each stage has its own weights
    out = g(torch.rand(2, 3, 16, 12))
    assert out.shape == (2, 3, 16 * scale, 12 * scale)


def test_paper_sized_generator():
    g = SRResNet(4)
    assert len(g.body) == 16 and g.head[0].out_channels == 64


def test_icnr_start_has_no_checkerboard():
    torch.manual_seed(0)
    stage = UpsampleStage(8)
    out = stage(torch.randn(1, 8, 10, 10))
    # Every 2x2 block of the output is one value: nearest-neighbour of a normal conv.
    blocks = [out[..., i::2, j::2] for i in range(2) for j in range(2)]
    for block in blocks[1:]:
        assert torch.allclose(block, blocks[0])
    assert out.std() > 0


def test_icnr_kernel_has_pytorchs_default_scale_not_kaimings():
    """A kaiming_normal base (std sqrt(2/fan_in) = 0.083 here) cost 0.37 dB in the calibration;
    PyTorch's default draws std 1/sqrt(3 fan_in) = 0.034."""
    torch.manual_seed(0)
    weight = UpsampleStage(32).conv.weight
    fan_in = 32 * 9
    assert weight.std().item() == pytest.approx((3 * fan_in) ** -0.5, rel=0.05)


def test_tanh_output_by_default_and_the_papers_linear_one_on_request():
    torch.manual_seed(0)
    lr = torch.rand(2, 3, 8, 8) * 50  # far outside [0, 1]: a linear head leaves [-1, 1]
    tanh = SRResNet(4, blocks=1, channels=8)
    linear = SRResNet(4, blocks=1, channels=8, output="linear")
    linear.load_state_dict(tanh.state_dict())  # the same weights: only the head differs
    assert tanh.output == "tanh" and tanh(lr).abs().max() <= 1
    assert linear(lr).abs().max() > 1
    assert torch.allclose(tanh(lr), torch.tanh(linear(lr)))
    with pytest.raises(ValueError, match="output must be one of tanh, linear"):
        SRResNet(4, output="sigmoid")


def test_generator_rejects_odd_scales():
    with pytest.raises(ValueError, match="power of two"):
        SRResNet(3)


@pytest.mark.parametrize("hr_size", [128, 256])
def test_discriminator_is_sized_from_the_hr_size(hr_size):
    d = Discriminator(hr_size, channels=8)
    assert d.classifier[1].in_features == 64 * (hr_size // 16) ** 2
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert d(torch.rand(3, 3, hr_size, hr_size)).shape == (3,)


def test_vgg54_is_relu5_4():
    assert layer_names()[35] == "relu5_4" and layer_names()[34] == "conv5_4"
    assert len(VGGFeatures("random").features) == 36


def test_vgg_weights_from_an_explicit_file(tmp_path):
    torch.manual_seed(1)
    state = vgg19(weights=None).state_dict()
    path = tmp_path / "my-vgg19.pth"
    torch.save(state, path)
    features = VGGFeatures(str(path), layer="relu2_2")
    assert torch.equal(features.features[0].weight, state["features.0.weight"])
    assert not any(p.requires_grad for p in features.parameters())


def test_vgg_weights_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = imagenet_weights_path()
    assert cached == tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cached.parent.mkdir(parents=True)
    state = vgg19(weights=None).state_dict()
    torch.save(state, cached)
    features = VGGFeatures(None)
    assert torch.equal(features.features[2].weight, state["features.2.weight"])


def test_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        VGGWeightsMissing,
        match=r"VGG19 ImageNet weights not found at .*"
        r"vgg19-dcbb9e9d\.pth: copy torchvision.s .*pipeline.weights fetch vgg19.* "
        r"or pass --vgg-weights PATH",
    ):
        VGGFeatures(None)
    with pytest.raises(VGGWeightsMissing, match="weights file not found"):
        VGGFeatures(str(tmp_path / "absent.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(VGGWeightsMissing, match="not a readable VGG19 state dict"):
        VGGFeatures(str(tmp_path / "junk.pth"))


def test_vgg_stays_in_eval_mode():
    features = VGGFeatures("random", layer="relu1_2")
    features.train()
    assert not features.features.training


def test_checkpoints_from_before_the_head_choice_load_with_the_linear_head(tmp_path):
    from pipeline.runtime.checkpoint import generator_from
    from pipeline.training.config import TrainConfig

    cfg = TrainConfig(scale=4)
    cfg.model.blocks, cfg.model.channels = 1, 8
    weights = SRResNet(4, blocks=1, channels=8).state_dict()
    old = cfg.to_dict()
    del old["model"]["output"]  # what a checkpoint of an earlier version holds
    loaded = generator_from({"config": old, "model": {"generator": weights}}, tmp_path / "a.pt")
    assert loaded.output == "linear"
    new = {"config": cfg.to_dict(), "model": {"generator": weights}}
    assert generator_from(new, tmp_path / "b.pt").output == "tanh"
