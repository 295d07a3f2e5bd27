import importlib.metadata
import logging

import PIL
import pytest

from preprocess import pillow_check


@pytest.fixture(autouse=True)
def _fresh_cache():
    pillow_check.warn_if_plain_pillow.cache_clear()
    yield
    pillow_check.warn_if_plain_pillow.cache_clear()


def _installed(monkeypatch, simd_version, pil_version):
    def version(name):
        if name == "pillow-simd" and simd_version:
            return simd_version
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(pillow_check.importlib.metadata, "version", version)
    monkeypatch.setattr(PIL, "__version__", pil_version)


def test_simd_files_in_place(monkeypatch, caplog):
    _installed(monkeypatch, "12.1.1.post0", "12.1.1.post0")
    assert pillow_check.pillow_flavour() == "pillow-simd 12.1.1.post0"
    assert pillow_check.warn_if_plain_pillow() is False
    assert not caplog.records


def test_plain_pillow_put_back_over_simd_warns_once(monkeypatch, caplog):
    # pillow-simd's metadata is still there, but a later install put pillow's files back.
    _installed(monkeypatch, "12.1.1.post0", "13.0.0")
    with caplog.at_level(logging.WARNING):
        assert pillow_check.warn_if_plain_pillow() is True
        assert pillow_check.warn_if_plain_pillow() is True
    assert [r.getMessage() for r in caplog.records] == [
        "PIL is pillow 13.0.0, not pillow-simd: resizing will be several times slower "
        "(run launch/setup.sh to install pillow-simd)"
    ]


def test_the_installed_environment_has_pillow_simd():
    # launch/setup.sh installs pillow-simd last; this catches an install that lost it.
    assert pillow_check.pillow_flavour().startswith("pillow-simd"), pillow_check.pillow_flavour()
