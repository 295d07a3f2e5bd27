"""Tell pillow-simd from plain pillow, because resizing is 7-9x slower on plain pillow."""

from __future__ import annotations

import functools
import importlib.metadata
import logging

import PIL

log = logging.getLogger(__name__)


def pillow_flavour() -> str:
    """Return 'pillow-simd X' or 'pillow X' for the PIL that is actually imported.

    Both distributions can be installed at once (setup.sh installs pillow-simd over the pillow
    torchvision pulls in), so the metadata alone does not say which files are in place; the
    version that PIL reports does.
    """
    try:
        simd_version = importlib.metadata.version("pillow-simd")
    except importlib.metadata.PackageNotFoundError:
        simd_version = None
    if simd_version is not None and PIL.__version__ == simd_version:
        return f"pillow-simd {PIL.__version__}"
    return f"pillow {PIL.__version__}"


@functools.cache
def warn_if_plain_pillow() -> bool:
    """Log one warning per process when PIL is plain pillow; return True if it is."""
    flavour = pillow_flavour()
    plain = not flavour.startswith("pillow-simd")
    if plain:
        log.warning(
            "PIL is %s, not pillow-simd: resizing will be several times slower "
            "(run launch/setup.sh to install pillow-simd)",
            flavour,
        )
    return plain
