"""The run's tracking records on disk, in order, and how many of them MLflow already has.

RUN_DIR/tracking/ holds `journal.jsonl` (one JSON record per line: params, metrics of a step,
an artifact, the model, the end of the run), `sent` (how many records from the top MLflow has),
`run.json` (tracking URI, run id, experiment) and, after a crash, `uncheckpointed.jsonl` (the
records of steps after the last checkpoint, never sent). Records survive a server outage and a
crash: the trainer sends them when the server is back, and `python -m pipeline.tracking sync
RUN_DIR` sends what is left after the run.

A resumed run rewinds the journal to its checkpoint's step: records of the steps it will run
again are dropped, so every step ends up in MLflow once. Records are sent only once their
step is checkpointed (`Tracker.commit`), so a crash never leaves MLflow holding steps that
will be re-run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from preprocess.atomic import write_bytes, write_json

log = logging.getLogger(__name__)

Record = dict[str, Any]


class Journal:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "journal.jsonl"
        self.records: list[Record] = []
        self.sent = 0
        self._write_failed = False

    def _safely(self, write: Any) -> None:
        """A full disk (the checkpoint's error says so) must not turn a record into a crash:
        the records stay in memory and still go to MLflow."""
        try:
            write()
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                log.warning("%s: not writable (%s): tracking records kept in memory only",
                            self.folder, exc.strerror or exc)  # fmt: skip

    @classmethod
    def open(cls, folder: Path, resume_step: int | None) -> Journal:
        """A fresh journal, or (resume_step given) the folder's, rewound to that step."""
        journal = cls(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if resume_step is None or not journal.path.is_file():
            write_bytes(journal.path, b"")
            journal._write_sent(0)
            return journal
        records, sent = load(folder)

        def keep(record: Record) -> bool:
            # the run goes on: its old ending (and a model it could not log then) no longer
            # holds, and the steps past the checkpoint will be run again
            return record.get("step", 0) <= resume_step and record["kind"] not in ("end", "model")

        sent_past = sum(1 for r in records[:sent] if r.get("step", 0) > resume_step)
        if sent_past:  # only when resuming from an older checkpoint than the newest one
            log.warning("%s: %d records past step %d were already in MLflow; those steps will "
                        "show twice", journal.path, sent_past, resume_step)  # fmt: skip
        journal.records = [r for r in records if keep(r)]
        journal.sent = sum(1 for r in records[:sent] if keep(r))
        kept = journal.records
        text = "".join(json.dumps(r) + "\n" for r in kept)
        write_bytes(journal.path, text.encode())
        journal._write_sent(journal.sent)
        return journal

    def append(self, record: Record) -> None:
        self.records.append(record)

        def write() -> None:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

        self._safely(write)

    def set_aside(self, after_step: float) -> int:
        """Move the records of steps past `after_step` (not checkpointed: a resume would run
        them again) to `uncheckpointed.jsonl`, kept for a look at what led to a crash; returns
        how many."""
        keep = [r for r in self.records if r.get("step", -1) <= after_step]
        moved = [r for r in self.records if r.get("step", -1) > after_step]
        if moved:

            def write_aside() -> None:
                with open(self.folder / "uncheckpointed.jsonl", "a") as handle:
                    handle.writelines(json.dumps(r) + "\n" for r in moved)

            self._safely(write_aside)
            self.records = keep
            text = "".join(json.dumps(r) + "\n" for r in keep).encode()
            self._safely(lambda: write_bytes(self.path, text))
        return len(moved)

    def mark_sent(self, count: int) -> None:
        self.sent = count
        self._write_sent(count)

    def _write_sent(self, count: int) -> None:
        self._safely(lambda: write_bytes(self.folder / "sent", f"{count}\n".encode()))

    def write_run(self, info: dict[str, Any]) -> None:
        self._safely(lambda: write_json(self.folder / "run.json", info))


def load(folder: Path) -> tuple[list[Record], int]:
    """The records and the sent count of a journal folder; a torn last line is left out."""
    records = []
    for number, line in enumerate((folder / "journal.jsonl").read_text().splitlines()):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: line %d unreadable (torn by a crash?), skipped",
                        folder / "journal.jsonl", number + 1)  # fmt: skip
    sent_file = folder / "sent"
    sent = int(sent_file.read_text()) if sent_file.is_file() else 0
    return records, sent


def read_run(folder: Path) -> dict[str, Any]:
    path = folder / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}
