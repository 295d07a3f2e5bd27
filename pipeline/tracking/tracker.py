"""MLflow tracking that never stops or slows training, and loses nothing when MLflow is down.

Only rank 0 tracks. The run is started (or resumed) before the first step. Every record after
that (params, metrics, sample grids) is appended to the run's journal (pipeline.tracking.journal)
and handed to one background thread, which sends records to MLflow in order once their step is
checkpointed. A step is never stalled by the server; while the server is unreachable the
sender says so once and retries with backoff, and what it could not send before the run ended
stays in the journal for

    python -m pipeline.tracking sync RUN_DIR [--tracking-uri URI]

Run status: FINISHED only when the last step was reached, KILLED after a stop signal, FAILED
when training raised; a resumed run is RUNNING again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.runtime.messages import first_line
from pipeline.serving.mlflow_model import log_generator
from pipeline.tracking.journal import Journal, Record
from pipeline.tracking.mlflow_calls import (
    flatten,
    mlflow_module,
    next_batch,
    send_or_skip,
    start_run,
)

log = logging.getLogger(__name__)

EVERYTHING = float("inf")  # commit(EVERYTHING): every record may be sent


class Tracker:
    """One MLflow run. `enabled=False` (ranks other than 0, `--tracking-uri none`) makes every
    call a no-op; `folder` is where the journal lives (RUN_DIR/tracking)."""

    def __init__(
        self,
        enabled: bool,
        uri: str,
        folder: Path | None = None,
        end_timeout: float = 60.0,
        retry_max: float = 30.0,
        end_retry: float = 2.0,
    ) -> None:
        """`retry_max`: the longest wait between tries while MLflow is unreachable (the waits
        double from 1 s; new records do not cut them short, so a down server is not hit at the
        logging rate). `end_retry`: the longest wait once end() waits for the last records, so
        that a server back a moment after the run's end is not left to one or two tries."""
        self.enabled = enabled and folder is not None
        self.uri, self.folder = uri, folder
        self.end_timeout, self.retry_max, self.end_retry = end_timeout, retry_max, end_retry
        self.run_id: str | None = None
        self.journal: Journal | None = None
        self._committed = -1.0  # records up to this step may be sent
        self._wake = threading.Condition()
        self._stopping = False
        self._ending = False  # end() is waiting: retry every end_retry s at most
        self._sender: threading.Thread | None = None
        # the run is MLflow's active run in this thread (log_model needs one; a resumed run
        # whose start failed has an id but none)
        self._active = False
        if self.enabled:
            # Fail fast instead of MLflow's default minutes of retries: the sender retries.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    # -- the run

    def start(
        self,
        experiment: str,
        run_name: str,
        run_id: str | None,
        tags: dict[str, str],
        resume_step: int | None = None,
    ) -> str | None:
        """Start (or, with run_id, resume) the run; returns its id, or None when MLflow is off
        or unreachable (the journal still keeps everything, for `sync`)."""
        if not self.enabled or self.folder is None:
            return None
        self.journal = Journal.open(self.folder, resume_step)
        try:
            self.run_id = start_run(self.uri, experiment, run_name, run_id, tags)
            self._active = True
        except Exception as exc:  # noqa: BLE001 - tracking must never end a training run
            self.run_id = run_id
            log.warning(
                "MLflow at %s failed at the start (%s); training goes on, the records are "
                "kept in %s for `python -m pipeline.tracking sync`",
                self.uri, first_line(exc), self.journal.path,
            )  # fmt: skip
        self.journal.write_run({"uri": self.uri, "run_id": self.run_id, "experiment": experiment,
                                "run_name": run_name, "tags": tags})  # fmt: skip
        self._committed = -1.0 if resume_step is None else float(resume_step)
        if self.run_id is not None:
            self._sender = threading.Thread(target=self._send_forever, name="mlflow-sender",
                                            daemon=True)  # fmt: skip
            self._sender.start()
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        self._record(
            {"kind": "params", "data": {k: str(v)[:6000] for k, v in flatten(params).items()}}
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        data = {k: float(v) for k, v in metrics.items()}
        self._record(
            {"kind": "metrics", "step": step, "time": int(time.time() * 1000), "data": data}
        )

    def log_artifact(self, path: Path, artifact_path: str | None, step: int) -> None:
        """`path` must stay as it is until sent: the sender reads it later."""
        self._record(
            {"kind": "artifact", "step": step, "path": str(path), "artifact_path": artifact_path}
        )

    def commit(self, step: int) -> None:
        """A checkpoint of `step` is on disk: records up to it may go to MLflow."""
        with self._wake:
            self._committed = max(self._committed, float(step))
            self._wake.notify()

    def log_model(
        self, model: Any, name: str, registered_name: str, version_tags: dict[str, Any]
    ) -> None:
        """Log the generator as an MLflow model that takes any batch and image size, and
        register it as a new version of `registered_name` (pipeline/serving/mlflow_model.py). If
        MLflow cannot take it now (down, or swamped just after coming back), the sender logs the
        newest checkpoint's generator (the run saved it just before) once MLflow answers, or
        `sync` does later."""
        if not self.enabled or self.journal is None:
            return
        if self._active:
            try:
                log_generator(model, name, registered_name, version_tags)
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("MLflow: the model was not logged (%s); it is logged from the last "
                            "checkpoint once MLflow answers", first_line(exc))  # fmt: skip
        self._record({"kind": "model", "name": name, "registered_name": registered_name,
                      "version_tags": version_tags})  # fmt: skip

    def end(self, status: str) -> None:
        """Record the run's status, send what is left (waiting at most `end_timeout` s), close.
        FINISHED sends every record; any other status only the checkpointed ones."""
        if not self.enabled or self.journal is None:
            return
        with self._wake:
            # a run that did not reach its end: steps past its last checkpoint will run again
            # if it is resumed, so they must not reach MLflow now
            aside = self.journal.set_aside(self._committed) if status != "FINISHED" else 0
        if aside:
            log.warning("MLflow: %d records of steps after the last checkpoint kept apart in "
                        "%s", aside, self.journal.folder / "uncheckpointed.jsonl")  # fmt: skip
        self._ending = True  # before the record, whose notify wakes a backing-off sender
        self._record({"kind": "end", "status": status})
        self.commit(EVERYTHING)  # type: ignore[arg-type]
        if self._sender is not None:
            if not self.flush(self.end_timeout):
                log.warning(
                    "MLflow at %s: %d records not sent after %.0f s; they are in %s: "
                    "`python -m pipeline.tracking sync %s` sends them",
                    self.uri, len(self.journal.records) - self.journal.sent, self.end_timeout,
                    self.journal.path, self.folder.parent if self.folder else "RUN_DIR",
                )  # fmt: skip
            with self._wake:
                self._stopping = True
                self._wake.notify()
            self._sender = None
        if self.run_id is not None:
            try:
                # pops the run from MLflow's stack even when the server is down, so its exit
                # hook cannot mark it FINISHED
                mlflow_module().end_run(status=status)
            except Exception as exc:  # noqa: BLE001
                log.warning("MLflow: could not close the run (%s)", first_line(exc))
        self.enabled = False

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every sendable record is sent; True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.journal is None or self.journal.sent >= self._sendable():
                return True
            time.sleep(0.02)
        return self.journal is None or self.journal.sent >= self._sendable()

    # -- the sender

    def _record(self, record: Record) -> None:
        if not self.enabled or self.journal is None:
            return
        with self._wake:
            self.journal.append(record)
            self._wake.notify()

    def _sendable(self) -> int:
        """How many records from the top may be sent now (they go in order)."""
        assert self.journal is not None
        count = self.journal.sent
        for record in self.journal.records[count:]:
            if record.get("step", -1) > self._committed:
                break
            count += 1
        return count

    def _send_forever(self) -> None:
        from mlflow import MlflowClient

        assert self.journal is not None and self.run_id is not None
        client, journal = MlflowClient(tracking_uri=self.uri), self.journal
        run_dir = self.folder.parent if self.folder else None  # `model` records
        failing_since: float | None = None
        delay = first_delay = min(1.0, self.retry_max)
        while True:
            with self._wake:
                while not self._stopping and journal.sent >= self._sendable():
                    self._wake.wait(timeout=1.0)
                if self._stopping:
                    return
                batch = next_batch(journal.records, journal.sent, self._sendable())
            try:
                send_or_skip(client, self.run_id, batch, run_dir)
            except Exception as exc:  # noqa: BLE001 - the server may come back
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "MLflow at %s unreachable (%s); training goes on, records are kept in "
                        "%s and sent when it is back", self.uri, first_line(exc), journal.path,
                    )  # fmt: skip
                self._back_off(time.monotonic(), delay)
                delay = min(delay * 2, self.retry_max)
                continue
            journal.mark_sent(journal.sent + len(batch))
            if failing_since is not None:
                log.warning("MLflow at %s is back after %.0f s; sending the kept records",
                            self.uri, time.monotonic() - failing_since)  # fmt: skip
                failing_since, delay = None, first_delay

    def _back_off(self, failed_at: float, delay: float) -> None:
        """Wait until `delay` s after the failed try (end_retry s once end() waits), or the
        tracker stops; the records that keep coming meanwhile do not end the wait."""
        with self._wake:
            while not self._stopping:
                wait = min(delay, self.end_retry) if self._ending else delay
                left = failed_at + wait - time.monotonic()
                if left <= 0:
                    return
                self._wake.wait(timeout=left)
