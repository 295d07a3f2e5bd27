"""Which checkpoint a resumed run's ranks load (the collectives faked: no process group)."""

from __future__ import annotations

import threading

import pytest

from pipeline.runtime import checkpoint
from pipeline.runtime.checkpoint import (
    CheckpointError,
    agreed_choice,
    agreed_newest_checkpoint,
    finished_before,
    list_checkpoints,
    note_finished,
    save_checkpoint,
    set_aside_newer,
)
from pipeline.runtime.distributed import ProcessPlace

RANK1 = ProcessPlace(1, 1, 2)


@pytest.fixture
def folder(tmp_path):
    for step in (2, 4):
        save_checkpoint(tmp_path, step, {"step": step}, keep=3)
    return tmp_path


def _as_rank1(monkeypatch, rank0_value, problems=()):
    """gather_objects as rank 1 sees it when rank 0 gave `rank0_value`."""
    monkeypatch.setattr(checkpoint, "gather_objects", lambda value: [rank0_value, value])
    monkeypatch.setattr(
        checkpoint, "first_problem", lambda p: next((x for x in (*problems, p) if x), None)
    )


def test_every_rank_loads_the_file_rank_0_chose_not_its_own_newest(folder, monkeypatch):
    # rank 1's listing has step 4 too, but rank 0 (its listing late on a shared file system)
    # chose step 2: rank 1 must load step 2
    _as_rank1(monkeypatch, str(folder / "step-00000002.pt"))
    path, state = agreed_newest_checkpoint(folder, RANK1)
    assert path.name == "step-00000002.pt" and state["step"] == 2


def test_rank_0_found_none_so_every_rank_starts_fresh(folder, monkeypatch):
    _as_rank1(monkeypatch, None)
    assert agreed_newest_checkpoint(folder, RANK1) is None


def test_a_chosen_file_one_rank_cannot_read_stops_every_rank(folder, monkeypatch):
    (folder / "step-00000004.pt").write_bytes(b"torn")
    _as_rank1(monkeypatch, str(folder / "step-00000004.pt"))
    with pytest.raises(
        CheckpointError, match=r"step-00000004\.pt: rank 1 cannot read the checkpoint rank 0 chose"
    ):
        agreed_newest_checkpoint(folder, RANK1)


def test_a_rank_whose_view_of_the_folder_lags_waits_for_the_chosen_file(folder, monkeypatch):
    late = folder / "step-00000006.pt"
    _as_rank1(monkeypatch, str(late))
    threading.Timer(1.5, save_checkpoint, (folder, 6, {"step": 6}, 3)).start()
    path, state = agreed_newest_checkpoint(folder, RANK1)
    assert path == late and state["step"] == 6


def test_a_chosen_file_that_never_shows_up_stops_every_rank(folder, monkeypatch):
    monkeypatch.setattr(checkpoint, "LAGGING_LISTING_S", 1.0)
    _as_rank1(monkeypatch, str(folder / "step-00000008.pt"))
    with pytest.raises(CheckpointError, match="rank 1 does not see the checkpoint rank 0 chose"):
        agreed_newest_checkpoint(folder, RANK1)


def test_alone_it_is_the_newest_readable(folder):
    (folder / "step-00000004.pt").write_bytes(b"torn")
    path, state = agreed_newest_checkpoint(folder, ProcessPlace(0, 0, 1))
    assert path.name == "step-00000002.pt" and state["step"] == 2


def test_a_run_resumed_from_an_older_checkpoint_keeps_its_own_saves(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)  # keeps 4 and 6
    # resumed from step 4 (say 6 diverged): 6 is set aside, not left to prune 5 away
    assert [p.name for p in set_aside_newer(tmp_path, 4)] == ["step-00000006.pt"]
    save_checkpoint(tmp_path, 5, {"step": 5}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004.pt", "step-00000005.pt"]
    assert (tmp_path / "set-aside" / "resumed-at-00000004" / "step-00000006.pt").is_file()
    assert set_aside_newer(tmp_path, 5) == []


def test_a_finish_note_is_dropped_once_there_are_steps_to_train_again(tmp_path):
    # finished at 10, resumed from an older checkpoint: killed during its final evaluation,
    # a requeue at step 10 must evaluate and log that run's weights, not trust the old note
    alone = ProcessPlace(0, 0, 1)
    note_finished(tmp_path, 10, "run", {})
    assert finished_before(tmp_path, 10, 10, alone)
    assert not finished_before(tmp_path, 5, 10, alone)
    assert not (tmp_path / "finished.json").exists()
    assert not finished_before(tmp_path, 10, 10, alone)
    note_finished(tmp_path, 10, "run", {})
    assert not finished_before(tmp_path, 0, 10, alone)  # a fresh start in the same folder
    assert not (tmp_path / "finished.json").exists()


def test_rank_0s_failed_pick_stops_every_rank_with_its_line(folder, monkeypatch):
    # upscale/evaluate on several ranks naming a folder rank 0 finds empty: rank 1 never picks
    # itself, it gets rank 0's line and stops too (no rank left waiting in a collective)
    _as_rank1(monkeypatch, None, problems=("run/: checkpoint folder holds no readable checkpoint",))
    picked = []
    with pytest.raises(CheckpointError, match="holds no readable checkpoint"):
        agreed_choice(lambda: picked.append(1), RANK1)
    assert picked == []


FAILED_PICKS = [
    CheckpointError("run/: holds no readable checkpoint"),
    PermissionError(13, "Permission denied", "run/checkpoints"),  # a folder it cannot list
]


@pytest.mark.parametrize("error", FAILED_PICKS)
def test_rank_0s_pick_that_fails_is_sent_to_every_rank_not_raised_alone(monkeypatch, error):
    # rank 0 must hand its problem to the collective the other ranks wait in, then stop with it
    sent = []

    def first_problem(problem):
        sent.append(problem)
        return problem

    monkeypatch.setattr(checkpoint, "first_problem", first_problem)

    def pick():
        raise error

    with pytest.raises(CheckpointError) as raised:
        agreed_choice(pick, ProcessPlace(0, 0, 2))
    assert sent == [str(raised.value)] and (
        "no readable" in sent[0] or "run/checkpoints" in sent[0]
    )
