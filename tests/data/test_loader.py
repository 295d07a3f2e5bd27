"""The DALI loader (CPU-only mode here) and the reference loader, on shards of the CelebA sample."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import copy_of

from pipeline.data import LoaderConfig, ShardError, build_loader, open_split
from pipeline.data.dali import DaliLoader
from pipeline.data.reference import ReferenceLoader
from pipeline.runtime.distributed import ProcessPlace
from preprocess.shards import ShardWriter

SINGLE = ProcessPlace(0, 0, 1)


def loader(data: Path, place: ProcessPlace = SINGLE, **overrides):
    fields = {
        "split": "train",
        "scale": 4,
        "batch_size": 4,
        "backend": "dali",
        "with_keys": True,
        **overrides,
    }
    return build_loader(LoaderConfig(data=data, **fields), place)


def epoch(ld) -> list:
    return list(ld)


def keys_of(batches) -> list[str]:
    return [k for b in batches for k in b.keys]


@pytest.mark.parametrize("preset", ["seed", "faces128"])
@pytest.mark.parametrize("scale", [4, 8])
def test_batch_shapes_and_ranges(request, preset, scale):
    data = request.getfixturevalue(f"shards_{preset}")
    hr_size = {"seed": 256, "faces128": 128}[preset]
    ld = loader(data, scale=scale, batch_size=5)
    assert isinstance(ld, DaliLoader) and ld.device == torch.device("cpu")
    batches = epoch(ld)
    assert len(batches) == len(ld) == 40 // 5
    for b in batches:
        assert b.lr.shape == (5, 3, hr_size // scale, hr_size // scale)
        assert b.hr.shape == (5, 3, hr_size, hr_size)
        assert b.lr.dtype == b.hr.dtype == torch.float32
        assert b.lr.min() >= 0.0 and b.lr.max() <= 1.0
        assert b.hr.min() >= -1.0 and b.hr.max() <= 1.0
    assert torch.cat([b.hr for b in batches]).min() < -0.9  # the whole range is used
    assert len(set(keys_of(batches))) == 40


def _compare(dali_batches, ref_batches, tolerance: float):
    assert keys_of(dali_batches) == keys_of(ref_batches)
    for d, r in zip(dali_batches, ref_batches, strict=True):
        assert (d.lr - r.lr).abs().max() <= tolerance
        assert (d.hr - r.hr).abs().max() <= 2 * tolerance  # HR spans [-1, 1]: twice the step


@pytest.mark.parametrize("fixture, tolerance", [("shards_png", 1e-6), ("shards_faces128", 1 / 255)])
def test_dali_and_reference_agree_sample_for_sample(request, fixture, tolerance):
    data = request.getfixturevalue(fixture)
    for place in (ProcessPlace(0, 0, 2), ProcessPlace(1, 0, 2)):
        dali = loader(data, place, shuffle=False, flip=False)
        ref = loader(data, place, shuffle=False, flip=False, backend="reference")
        assert isinstance(ref, ReferenceLoader) and len(dali) == len(ref) == 20 // 4
        for _ in range(2):  # the second epoch moves each rank to the next sample range
            _compare(epoch(dali), epoch(ref), tolerance)


# 40 samples over 3 ranks: ranges of 13, 13, 14 -> 4 full batches of 3, or 1 of 13, per rank.
# At 13 DALI pads the shards of 13 to 14 and its DROP policy once left that padding batch
# unread: the next epoch began with one face repeated 13 times, the shard order shifted.
@pytest.mark.parametrize(("batch_size", "per_epoch"), [(3, 12), (13, 13)])
def test_ranks_split_like_dali_and_the_range_moves_each_epoch(
    shards_faces128, batch_size, per_epoch
):
    places = [ProcessPlace(r, 0, 3) for r in range(3)]
    orders = {}
    for backend in ("dali", "reference"):
        loaders = [
            loader(
                shards_faces128, p, shuffle=False, flip=False, batch_size=batch_size,
                backend=backend,
            )
            for p in places
        ]  # fmt: skip
        epochs = [[keys_of(epoch(ld)) for ld in loaders] for _ in range(4)]
        first = epochs[0]
        assert [len(k) for k in first] == [per_epoch] * 3
        assert not set(first[0]) & set(first[1]) and not set(first[1]) & set(first[2])
        for number, ranks in enumerate(epochs):  # rank r reads range r + epoch
            assert ranks == [first[(r + number) % 3] for r in range(3)], (backend, number)
        orders[backend] = epochs
    assert orders["dali"] == orders["reference"]


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_moved_to_a_later_epoch_without_a_saved_reader_it_reads_that_epochs_range(
    shards_faces128, backend
):
    # a run resumed on other ranks (or at another batch) has no reader state to restore: the
    # trainer moves the new loader to the next epoch's start, and it must read that epoch's
    # range, as an uninterrupted run on these ranks would (DALI used to replay epoch 0's)
    places = [ProcessPlace(r, 0, 3) for r in range(3)]
    fixed = {"shuffle": False, "flip": False, "batch_size": 3, "backend": backend}
    first = [keys_of(epoch(loader(shards_faces128, p, **fixed))) for p in places]
    moved = loader(shards_faces128, places[0], **fixed)
    moved.move_to(2, 0)
    assert keys_of(epoch(moved)) == first[2] and moved.epoch == 3
    shuffled = loader(shards_faces128, places[0], backend=backend, batch_size=3)
    shuffled.move_to(2, 0)
    # shuffled, the full batches hold some of the range's faces: none of the other ranges'
    assert not set(keys_of(epoch(shuffled))) & (set(first[0]) | set(first[1]))
    # and resumed again later from its own checkpoint, still where an uninterrupted run is
    # (DALI's checkpoint counts epochs from the moved reader's start)
    state = moved.state_dict()
    again = loader(shards_faces128, places[0], **fixed)
    again.load_state_dict(state)
    assert keys_of(epoch(again)) == keys_of(epoch(moved)) == first[0]  # epoch 3: range 0


def test_flip_mirrors_lr_and_hr_together(shards_faces128):
    plain = epoch(loader(shards_faces128, shuffle=False, flip=False))
    flipped = epoch(loader(shards_faces128, shuffle=False, flip=True))
    assert keys_of(plain) == keys_of(flipped)
    mirrored = 0
    for p, f in zip(plain, flipped, strict=True):
        for i in range(len(p.keys)):
            if torch.equal(f.hr[i], p.hr[i]):
                assert torch.equal(f.lr[i], p.lr[i])
            else:
                assert torch.equal(f.hr[i], p.hr[i].flip(-1))
                assert torch.equal(f.lr[i], p.lr[i].flip(-1))
                mirrored += 1
    assert 5 < mirrored < 35  # about half of 40


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_each_epoch_is_reshuffled_and_the_seed_reproduces(shards_faces128, backend):
    def orders(seed: int) -> list[list[str]]:
        ld = loader(shards_faces128, backend=backend, seed=seed, initial_fill=64)
        return [keys_of(epoch(ld)) for _ in range(2)]

    a, again, other = orders(1), orders(1), orders(2)
    assert a == again
    assert a[0] != a[1] and sorted(a[0]) == sorted(a[1])  # same samples, new order
    assert a[0] != other[0]


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_resume_mid_epoch_gives_the_batches_that_would_have_come(shards_faces128, backend):
    ld = loader(shards_faces128, backend=backend, seed=3)
    it = iter(ld)
    for _ in range(3):
        next(it)
    buffer = io.BytesIO()  # the state goes through a checkpoint file
    torch.save(ld.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert (state["epoch"], state["batch"]) == (0, 3)
    expected = list(it) + epoch(ld)

    resumed = loader(shards_faces128, backend=backend, seed=3)
    resumed.load_state_dict(state)
    got = list(resumed) + epoch(resumed)
    assert len(got) == len(ld) - 3 + len(ld)
    assert keys_of(got) == keys_of(expected)
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g.lr, e.lr) and torch.equal(g.hr, e.hr)


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_resume_at_an_epoch_end_starts_the_next_epoch(shards_faces128, backend):
    # The state saved after an epoch's last batch, before the loop saw the epoch end: a
    # time-limit signal at that step once made every rank of a resumed run fail ("DALI gave
    # 4 batches, expected 2").
    ld = loader(shards_faces128, backend=backend, seed=3)
    it = iter(ld)
    for _ in range(len(ld)):
        next(it)
    state = ld.state_dict()
    assert list(it) == []
    expected = epoch(ld) + epoch(ld)

    resumed = loader(shards_faces128, backend=backend, seed=3)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.batch_in_epoch) == (1, 0)
    got = epoch(resumed) + epoch(resumed)
    assert keys_of(got) == keys_of(expected) and len(got) == 2 * len(ld)
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g.lr, e.lr) and torch.equal(g.hr, e.hr)


# ---- bad shards: a one-line error naming the shard, before any batch --------------------


@pytest.fixture
def broken(shards_faces128: Path, tmp_path: Path) -> Path:
    return copy_of(shards_faces128, tmp_path / "broken")


def test_truncated_tar(broken: Path):
    tar = broken / "train" / "train-000001.tar"
    tar.write_bytes(tar.read_bytes()[:20000])
    with pytest.raises(ShardError, match=r"train-000001\.tar: 20000 bytes but the manifest says"):
        loader(broken)


def test_missing_index(broken: Path):
    (broken / "train" / "train-000002.idx").unlink()
    with pytest.raises(
        ShardError, match=r"train-000002\.tar: index file train-000002\.idx missing"
    ):
        loader(broken)


def test_index_that_does_not_match_its_tar(broken: Path):
    # Swap in the index of another shard: same format, wrong offsets for this tar.
    shutil.copy(broken / "train" / "train-000000.idx", broken / "train" / "train-000001.idx")
    with pytest.raises(ShardError, match=r"train-000001\.idx: does not match train-000001\.tar"):
        loader(broken)


def test_sample_missing_a_component(broken: Path):
    manifest = json.loads((broken / "manifest.json").read_text())
    entry = manifest["splits"]["val"]["shards"][0]
    with ShardWriter(broken / entry["tar"]) as writer:
        writer.add("000001", {"hr.jpg": b"x", "x4.png": b"y", "x8.png": b"z"})
        writer.add("000002", {"hr.jpg": b"x", "x8.png": b"z"})
        writer.close()
    entry.update(samples=2, bytes=(broken / entry["tar"]).stat().st_size)
    manifest["splits"]["val"]["samples"] = 2
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"val-000000\.tar: sample 1 \(000002\) has no x4\.png"):
        loader(broken, split="val")
    assert open_split(broken, "val", 8).samples == 2  # the 8x run has what it needs


def test_scale_not_in_the_shards(tmp_path: Path, small_root: Path):
    data = tmp_path / "x4-only"
    from preprocess.images import Encoding
    from preprocess.job import ShardJob, run_shard_job
    from preprocess.protocol import PRESETS

    run_shard_job(
        ShardJob(small_root, data, PRESETS["faces128"].with_overrides(scales=(4,)), Encoding()),
        progress=False,
    )
    with pytest.raises(ShardError, match=r"no LR images for scale 8 in these shards \(have 4\)"):
        open_split(data, "train", 8)


def test_too_few_samples_for_one_batch(shards_faces128):
    with pytest.raises(ValueError, match=r"give no full batch \(batch 32\)"):
        loader(shards_faces128, split="test", batch_size=32)


def test_gpu_decoding_asked_for_without_cuda_is_an_error(shards_faces128):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path cannot happen")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        loader(shards_faces128, decode_device="gpu")


def test_a_split_checked_once_is_not_checked_again(shards_faces128, monkeypatch):
    import pipeline.data.factory as factory

    shards = open_split(shards_faces128, "train", 4)
    calls = []
    monkeypatch.setattr(factory, "open_split", lambda *a, **k: calls.append(a))
    cfg = LoaderConfig(data=shards_faces128, split="train", scale=4, batch_size=4)
    first = next(iter(build_loader(cfg, SINGLE, shards)))
    assert calls == [] and first.hr.shape[0] == 4
    with pytest.raises(ValueError, match="given for a loader of"):
        build_loader(cfg, SINGLE, open_split(shards_faces128, "val", 4))


def test_the_ranks_of_a_job_check_each_shard_once(shards_faces128, monkeypatch):
    import pipeline.data.shardset as shardset

    checked: list[str] = []
    real = shardset._check_shard
    monkeypatch.setattr(
        shardset, "_check_shard", lambda tar, *a: (checked.append(tar.name), real(tar, *a))
    )
    every = [tar.name for tar in open_split(shards_faces128, "train", 4).tars]
    assert len(every) == 3
    for world in (2, 3, 4):
        checked.clear()
        for rank in range(world):
            shards = open_split(shards_faces128, "train", 4, part=(rank, world))
            assert [t.name for t in shards.tars] == every  # every rank still gets all shards
        assert sorted(checked) == sorted(every), world  # each checked by exactly one rank
