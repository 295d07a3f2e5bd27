"""Shared fixtures: small CelebA roots built from the real sample in ../shared/data/celeba."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_CELEBA = PROJECT_ROOT.parent / "shared" / "data" / "celeba"


def shared_celeba() -> Path:
    """The real CelebA sample; a test that needs it fails (never skips) when it is absent."""
    if not (SHARED_CELEBA / "img_align_celeba").is_dir():
        pytest.fail(
            f"real CelebA sample not found at {SHARED_CELEBA}: these tests need ../shared beside "
            "the project (see ../shared/data/README.md)"
        )
    return SHARED_CELEBA


def make_subset_root(target: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """A CelebA root with a few real images per split (symlinked) and the official partition.

    The official partition file lists all 202,599 images, so everything not linked counts as
    missing, exactly as with a partial download.
    """
    source = shared_celeba()
    codes = {"train": "0", "val": "1", "test": "2"}
    by_split: dict[str, list[str]] = {s: [] for s in codes}
    present = {p.name for p in (source / "img_align_celeba").iterdir()}
    for line in (source / "list_eval_partition.txt").read_text().split("\n"):
        if line.strip():
            name, code = line.split()
            if name in present:
                split = next(s for s, c in codes.items() if c == code)
                by_split[split].append(name)
    images = target / "img_align_celeba"
    images.mkdir(parents=True)
    rng = random.Random(seed)
    for split, count in per_split.items():
        for name in rng.sample(sorted(by_split[split]), count):
            (images / name).symlink_to(source / "img_align_celeba" / name)
    (target / "list_eval_partition.txt").symlink_to(source / "list_eval_partition.txt")
    return target


@pytest.fixture(scope="session")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 train, 12 val, 8 test real faces."""
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
