"""One CLI style: every console script is a click command behind `main(argv) -> int`, with every
default in --help and usage errors as one line with exit status 2."""

from __future__ import annotations

import tomllib

import pytest
from helpers import PROJECT_ROOT, help_records, run_script

from pipeline import export, upscale

SCRIPTS = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_has_its_console_script():
    assert set(SCRIPTS) == {"srgan-preprocess", "srgan-train", "srgan-evaluate",
                            "srgan-upscale", "srgan-export"}  # fmt: skip
    for name, target in SCRIPTS.items():
        if name != "srgan-preprocess":  # a click group, run standalone
            assert target.endswith(":main"), name


@pytest.mark.parametrize("module", [upscale, export])
def test_help_shows_every_default_or_required(module):
    for option, text in help_records(module.cli).items():
        assert "[default: " in text or "[required]" in text, option


@pytest.mark.integration
@pytest.mark.parametrize(
    ("script", "prog"), [("srgan-upscale", "pipeline.upscale"), ("srgan-export", "pipeline.export")]
)
def test_the_scripts_exit_with_mains_status(script, prog):
    result = run_script(script, "--help")
    assert result.returncode == 0 and "--checkpoint" in result.stdout
    result = run_script(script, "--checkpoint", "x")  # the other required option missing
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{prog}: error: Missing option")
