import pytest

from preprocess.protocol import PRESETS, Protocol, parse_scales


def test_presets_are_the_documented_protocols():
    seed, faces = PRESETS["seed"], PRESETS["faces128"]
    assert (seed.crop, seed.hr_size, seed.lr_size(4), seed.lr_size(8)) == (144, 256, 64, 32)
    assert (faces.crop, faces.hr_size, faces.lr_size(4), faces.lr_size(8)) == (178, 128, 32, 16)


def test_override_keeps_unset_fields():
    changed = PRESETS["seed"].with_overrides(hr_size=128, crop=None, scales=(4,))
    assert (changed.crop, changed.hr_size, changed.scales) == (144, 128, (4,))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hr_size": 100, "scales": (8,)}, "divide"),
        ({"scales": (4, 4)}, "repeat"),
        ({"scales": ()}, "at least one"),
        ({"crop": 0}, "positive"),
    ],
)
def test_invalid_protocols_are_refused(fields, message):
    base = {"name": "x", "crop": 144, "hr_size": 256, "scales": (4, 8)}
    with pytest.raises(ValueError, match=message):
        Protocol(**{**base, **fields})


def test_parse_scales():
    assert parse_scales("4,8") == (4, 8)
    assert parse_scales(" 2 ") == (2,)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_scales("4;8")
