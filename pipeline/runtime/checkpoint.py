"""Checkpoints: written atomically, the newest K kept, torn files skipped on resume.

A checkpoint holds everything a resumed run needs to continue as if it had never stopped:
G, D, optimizers, AMP scaler, step, RNG states, loader position, config and MLflow run id.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.archs import SRResNet
from pipeline.runtime.distributed import ProcessPlace, first_problem, gather_objects
from pipeline.runtime.messages import first_line
from preprocess.atomic import atomic_open, write_json

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^step-(\d{8})\.pt$")
LAGGING_LISTING_S = 30.0  # how long a rank waits to see the checkpoint rank 0 chose
FINISHED_NAME = "finished.json"  # in --out: the step a run finished at (evaluated, logged)


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` for `step` (temp file + fsync + rename), then prune to the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if PATTERN.match(p.name))


def set_aside_newer(directory: Path, step: int) -> list[Path]:
    """Move the checkpoints of steps after `step` (a run resumed from an older one, or past a
    torn newest file) into directory/set-aside/resumed-at-STEP/: pruning keeps the highest
    steps, and --resume auto takes the highest, so left in place they would outlive this run's
    saves."""
    newer = [p for p in list_checkpoints(directory) if int(PATTERN.match(p.name)[1]) > step]
    if not newer:
        return []
    aside = directory / "set-aside" / f"resumed-at-{step:08d}"
    moved = []
    try:
        aside.mkdir(parents=True, exist_ok=True)
        for path in newer:
            path.replace(aside / path.name)
            moved.append(aside / path.name)
    except OSError as exc:  # rank 0 only: never a reason to stop the run
        log.warning("could not set aside %s: %s", directory, exc)
    return moved


def load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only: a checkpoint is data, never code to run.
    return torch.load(path, map_location="cpu", weights_only=True)


def newest_valid_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads; torn or corrupt ones are skipped with a warning."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped the same way
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
    return None


def agreed_newest_checkpoint(
    directory: Path, place: ProcessPlace
) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint in `directory` as rank 0 sees it, loaded by every rank
    (None: none). One rank picks: on a shared file system another node may list the folder
    before rank 0's newest file shows up there, and ranks resumed from different steps would go
    on as one run with different weights."""
    return agreed_choice(lambda: newest_valid_checkpoint(directory), place)


def agreed_choice(
    pick: Callable[[], tuple[Path, dict[str, Any]] | None], place: ProcessPlace
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint rank 0's `pick` chose (its path and state, or None), loaded by every rank.

    A CheckpointError of the pick, a rank that cannot read the chosen file, or one that does
    not see it within LAGGING_LISTING_S (its node's view of the folder may lag) stops every
    rank with that one line, rank 0 too: no rank goes on alone into a collective.
    """
    found, problem = None, None
    if place.is_main:
        try:
            found = pick()
        except CheckpointError as exc:
            problem = str(exc)
        except OSError as exc:  # a folder that cannot be listed, say
            problem = first_line(exc)
    if (problem := first_problem(problem)) is not None:
        raise CheckpointError(problem)
    chosen = gather_objects(None if found is None else str(found[0]))[0]
    if chosen is None:
        return None
    path, waited = Path(chosen), 0.0
    while found is None:
        try:
            found = path, load_checkpoint(path)
        except FileNotFoundError:
            if waited < LAGGING_LISTING_S:
                time.sleep(1.0)
                waited += 1.0
                continue
            problem = f"{path}: rank {place.rank} does not see the checkpoint rank 0 chose"
            break
        except Exception as exc:  # noqa: BLE001 - any unreadable file
            problem = f"{path}: rank {place.rank} cannot read the checkpoint rank 0 chose ({exc})"
            break
    if (problem := first_problem(problem)) is not None:  # every rank, rank 0 too
        raise CheckpointError(problem)
    return found


def note_finished(out: Path, step: int, run_id: str | None, val: dict[str, float]) -> None:
    """OUT/finished.json: the run did its last step, final evaluation and model."""
    write_json(out / FINISHED_NAME, {"step": step, "mlflow_run_id": run_id, "val": val})


def finished_before(out: Path, step: int, steps: int, place: ProcessPlace) -> bool:
    """Whether a run at `step` (resumed, or 0) had done its last step, final evaluation and
    model before (a requeued job, launch/train_all.sh run again): doing them again would
    register a second version of the same weights. Rank 0 reads the note; every rank follows
    it. A run with steps to train drops the note (a fresh or older start in the same --out)."""
    note, done = out / FINISHED_NAME, None
    if step < steps:
        if place.is_main:  # steps to train: an earlier finish's note no longer holds
            note.unlink(missing_ok=True)
        return False
    if place.is_main and note.is_file():
        try:
            done = json.loads(note.read_text()).get("step")
        except (OSError, ValueError):
            done = None
    if gather_objects(done)[0] != step:
        return False
    log.info("the run finished at step %d before (%s): nothing to do (more steps: a larger "
             "--steps)", step, note)  # fmt: skip
    return True


class CheckpointError(Exception):
    """A checkpoint that cannot be used; one line naming the file and the problem."""


def find_checkpoint(path: Path, what: str = "checkpoint") -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or a run folder's newest readable one (in its checkpoints/ or in it),
    so a job can name a run before that run has written anything."""
    if path.is_dir():
        found = newest_valid_checkpoint(path / "checkpoints") or newest_valid_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path}: {what} folder holds no readable checkpoint")
        return found
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return path, load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None


def generator_weights(model_state: dict[str, Any], which: str = "ema") -> tuple[dict, str]:
    """G's weight average when asked for and kept (pipeline/training/ema.py), else its raw weights;
    and which of the two it is."""
    if which == "ema" and "generator_ema" in model_state:
        return model_state["generator_ema"]["weights"], "ema"
    return model_state["generator"], "raw"


def generator_from(state: dict[str, Any], path: Path, which: str = "ema") -> SRResNet:
    """The trained generator of a pipeline.train checkpoint, on the CPU, in eval mode: its
    weight average if it has one and `which` is "ema", else its raw weights."""
    try:
        config = state["config"]
        weights, _ = generator_weights(state["model"], which)
        model = SRResNet(config["scale"], config["model"]["blocks"], config["model"]["channels"],
                         config["model"].get("output", "linear"))  # fmt: skip
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: not a pipeline.train checkpoint (no generator)") from None
    model.load_state_dict(weights)
    return model.eval()
