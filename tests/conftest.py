"""Shared fixtures: small CelebA roots built from the session's CelebA sample.

The sample is the real one in ../shared/data/celeba (or CELEBA_SAMPLE=DIR) when it is there,
else the built-in demo faces, so the suite runs on any machine; the header of every run says
which. CI sets CELEBA_SAMPLE_REQUIRED=1 so that it can never pass on demo faces by accident.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import xdist_scheduling

from preprocess import demo_faces
from preprocess.celeba import IMAGES_DIR, PARTITION_FILE, SYNTHETIC_MARKER, read_partition

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_CELEBA = PROJECT_ROOT.parent / "shared" / "data" / "celeba"
SAMPLE_ENV = "CELEBA_SAMPLE"  # DIR: that CelebA root; "demo": the demo faces even if real is there
REQUIRED_ENV = "CELEBA_SAMPLE_REQUIRED"  # "1": fail the session unless the sample is real
# Enough that the subsets below can be drawn (up to 160/20/20 per split) and that the tests
# sharding the whole sample handle hundreds of files, yet drawn in about 12 s on one core.
DEMO_COUNT = 600
REAL_ONLY = "needs the real CelebA sample"


@dataclass(frozen=True)
class SampleChoice:
    """Where this session's faces come from, settled once before any test runs."""

    root: Path | None  # a CelebA root on disk; None: the demo faces, drawn on first use
    origin: str  # for the header: the setting or absence that led here ("" for the default)

    @property
    def real(self) -> bool:
        return self.root is not None and not (self.root / SYNTHETIC_MARKER).is_file()


def choose_sample(environ: Mapping[str, str], default: Path = SHARED_CELEBA) -> SampleChoice:
    """The sample the environment asks for; a UsageError (one line, before any test) if it
    names something that is not there or is not real while a real one is required.

    A CELEBA_SAMPLE folder that is absent fails rather than falls back: a typo would otherwise
    quietly turn a run meant for real faces into one on drawn faces.
    """
    asked = environ.get(SAMPLE_ENV, "")
    if asked == "demo":
        choice = SampleChoice(None, f"forced by {SAMPLE_ENV}=demo")
    elif asked:
        root = Path(asked).expanduser().resolve()
        if not (root / IMAGES_DIR).is_dir():
            raise pytest.UsageError(
                f"{SAMPLE_ENV}={asked}: no CelebA sample there ({root / IMAGES_DIR} not found)"
            )
        choice = SampleChoice(root, f"from {SAMPLE_ENV}")
    elif (default / IMAGES_DIR).is_dir():
        choice = SampleChoice(default, "")
    else:
        choice = SampleChoice(None, f"{_relative(default)} not found")
    if environ.get(REQUIRED_ENV) == "1" and not choice.real:
        where = choice.root or f"demo faces, {choice.origin}"
        raise pytest.UsageError(
            f"{REQUIRED_ENV}=1 but the CelebA sample is not real ({where}): "
            f"put the real sample at {default} or point {SAMPLE_ENV} at one"
        )
    return choice


def _relative(path: Path) -> str:
    """../shared/... as the project's docs write it, rather than this machine's absolute path."""
    return os.path.relpath(path, PROJECT_ROOT)


@functools.cache
def sample_choice() -> SampleChoice:
    return choose_sample(os.environ)


def sample_header(choice: SampleChoice) -> str:
    if choice.root is None:
        return f"celeba sample: demo faces ({DEMO_COUNT} synthetic), {choice.origin}"
    count = sum(1 for _ in os.scandir(choice.root / IMAGES_DIR))
    kind = "real" if choice.real else "synthetic"
    origin = f", {choice.origin}" if choice.origin else ""
    return f"celeba sample: {kind}, {choice.root} ({count} images{origin})"


def pytest_configure(config: pytest.Config) -> None:
    sample_choice()  # a bad CELEBA_SAMPLE fails the session here, before collection


def pytest_sessionstart(session: pytest.Session) -> None:
    """The sample on the run's first line, also under `-q` (which hides pytest's header)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(sample_header(sample_choice()))


FAST_TIER = "not integration and not system"  # pyproject.toml's addopts: plain `pytest`


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if terminalreporter.config.option.markexpr == FAST_TIER:
        terminalreporter.write_line(
            "fast tier only: the integration and system tests were deselected; "
            "`bash launch/test.sh` (pytest -m '') runs every tier"
        )
    terminalreporter.write_line(sample_header(sample_choice()))  # just above the closing line


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own choice
def pytest_xdist_make_scheduler(config: pytest.Config, log: xdist_scheduling.Producer):
    """Whatever `--dist` says, the SLURM tests stay on one worker (tests/xdist_scheduling.py)."""
    return xdist_scheduling.make_scheduler(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a SLURM test that xdist would not keep with the others; skip, with a reason that
    -ra prints, the tests of facts only the real CelebA has."""
    xdist_scheduling.check_slurm_tests_are_listed(items)
    choice = sample_choice()
    if choice.real:
        return
    skip = pytest.mark.skip(reason=f"{REAL_ONLY} (this run: {sample_header(choice)})")
    for item in items:
        if item.get_closest_marker("real_celeba"):
            item.add_marker(skip)


def demo_root(count: int = DEMO_COUNT) -> Path:
    """The demo faces, drawn once per machine and kept in the temp dir across runs.

    The folder is named by count and a hash of the drawing code, so a change to the faces
    draws them again instead of reusing stale ones; it appears whole (drawn into a scratch
    folder, then renamed), so a run killed mid-way or a concurrent run never sees half a root.
    """
    code = hashlib.sha256(Path(demo_faces.__file__).read_bytes()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"srgan-celeba-demo-{count}-{code}"
    if (root / SYNTHETIC_MARKER).is_file():
        return root
    scratch = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=root.parent))
    demo_faces.write_demo_celeba(scratch, count)
    try:
        scratch.rename(root)
    except OSError:  # another run finished first: keep its (identical) faces
        shutil.rmtree(scratch)
    return root


def shared_celeba() -> Path:
    """The session's CelebA sample root: the real one, or the demo faces (drawn if need be)."""
    choice = sample_choice()
    return choice.root if choice.root is not None else demo_root()


def synthetic_sample() -> bool:
    """Whether data made from the sample is labelled synthetic (without drawing the demo)."""
    return not sample_choice().real


def present_by_split(root: Path) -> dict[str, list[str]]:
    """The images of a CelebA root that are on disk, by official split, in partition order.

    Tests derive their expectations from this rather than from the real sample's numbers, so
    they hold for the demo faces (whose partition lists only themselves) as well.
    """
    present = {entry.name for entry in os.scandir(root / IMAGES_DIR)}
    splits = read_partition(root / PARTITION_FILE)
    return {split: [n for n in names if n in present] for split, names in splits.items()}


def listed_count(root: Path) -> int:
    """How many images the partition file names, on disk or not."""
    return sum(len(names) for names in read_partition(root / PARTITION_FILE).values())


def make_subset_root(target: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """A CelebA root with a few images of the sample per split (symlinked) and its partition.

    The partition file is the sample's, so everything not linked counts as missing, exactly as
    with a partial download; a demo sample's synthetic marker comes along, so that what is
    made from the subset is labelled as it should be.
    """
    source = shared_celeba()
    by_split = present_by_split(source)
    images = target / IMAGES_DIR
    images.mkdir(parents=True)
    rng = random.Random(seed)
    for split, count in per_split.items():
        for name in rng.sample(sorted(by_split[split]), count):
            (images / name).symlink_to(source / IMAGES_DIR / name)
    (target / PARTITION_FILE).symlink_to(source / PARTITION_FILE)
    if (source / SYNTHETIC_MARKER).is_file():
        (target / SYNTHETIC_MARKER).symlink_to(source / SYNTHETIC_MARKER)
    return target


@pytest.fixture(scope="session")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 train, 12 val, 8 test faces of the sample."""
    return make_subset_root(
        tmp_path_factory.mktemp("celeba-small"), {"train": 40, "val": 12, "test": 8}
    )


def copy_of(source: Path, target: Path) -> Path:
    """A copy that a test may break without touching the session's fixture."""
    shutil.copytree(source, target)
    return target


def make_shards(
    root: Path,
    out: Path,
    preset: str = "faces128",
    codec: str = "jpeg",
    samples_per_shard: int = 16,
) -> Path:
    """Shards of `root` written in-process (faster than the CLI) with the job's defaults."""
    from preprocess.images import Encoding
    from preprocess.job import ShardJob, run_shard_job
    from preprocess.protocol import PRESETS

    job = ShardJob(
        celeba_root=root,
        out=out,
        protocol=PRESETS[preset],
        encoding=Encoding(codec=codec),
        samples_per_shard=samples_per_shard,
        workers=2,
    )
    run_shard_job(job, progress=False)
    return out


@pytest.fixture(scope="session")
def shards_faces128(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(small_root, tmp_path_factory.mktemp("shards-faces128"))


@pytest.fixture(scope="session")
def shards_seed(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(small_root, tmp_path_factory.mktemp("shards-seed"), preset="seed")


@pytest.fixture(scope="session")
def shards_png(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(small_root, tmp_path_factory.mktemp("shards-png"), codec="png")


# ---- a real one-node SLURM cluster and the recipe run on it (test_slurm, test_mlflow_ui) ----


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """munged + slurmctld + slurmd on this machine for the session, stopped by PID after it."""
    from slurm_cluster import LocalSlurm

    with LocalSlurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def slurm_nodes(tmp_path_factory: pytest.TempPathFactory):
    """Two SLURM nodes, each in a network namespace of its own, and a controller in a third."""
    from slurm_cluster import NamespacedSlurm

    with NamespacedSlurm(tmp_path_factory.mktemp("slurm-nodes")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def slurm_recipe(slurm, shards_faces128: Path, tmp_path_factory: pytest.TempPathFactory):
    """`slurm/submit_all.sh` run to the end: 4x and 8x, pretrain then GAN, 2 gloo processes."""
    from slurm_recipe import run_recipe

    return run_recipe(slurm, shards_faces128, tmp_path_factory.mktemp("slurm-recipe"))


# ---- metric backbones made by the tests (the real ones cannot be downloaded here) ----------


@pytest.fixture(scope="session")
def metric_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random AlexNet and FID-InceptionV3 state dicts in the files' real formats."""
    from unittest import mock

    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity
    from torchvision.models import alexnet

    folder = tmp_path_factory.mktemp("metric-weights")
    torch.manual_seed(0)
    paths = {"alexnet": folder / "alexnet.pth", "inception": folder / "inception.pth"}
    torch.save(alexnet(weights=None).state_dict(), paths["alexnet"])
    # torch-fidelity's extractor always loads a file; built once without one to get its keys
    with (
        mock.patch.object(fidelity, "load_state_dict_from_url", return_value=None),
        mock.patch.object(fidelity.FeatureExtractorInceptionV3, "load_state_dict"),
    ):
        inception = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in inception.modules():  # PyTorch's default init fades to ~1e-8 over 90 layers
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
    torch.save(inception.state_dict(), paths["inception"])
    return paths
