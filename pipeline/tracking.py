"""MLflow tracking that never stops or slows training, and loses nothing when MLflow is down.

Only rank 0 tracks. The run is started (or resumed) before the first step. Every record after
that (params, metrics, sample grids) is appended to the run's journal (pipeline.journal) and
handed to one background thread, which sends records to MLflow in order once their step is
checkpointed. A step is never stalled by the server; while the server is unreachable the
sender says so once and retries with backoff, and what it could not send before the run ended
stays in the journal for

    python -m pipeline.tracking sync RUN_DIR [--tracking-uri URI]

Run status: FINISHED only when the last step was reached, KILLED after a stop signal, FAILED
when training raised; a resumed run is RUNNING again.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.cli import first_line
from pipeline.journal import Journal, Record, load, read_run
from pipeline.mlflow_model import log_generator

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow's log_batch takes at most 1000 metrics and 100 params per call.
METRICS_PER_BATCH, PARAMS_PER_BATCH = 1000, 100
# MLflow 3's UI shows an experiment of this kind as model training (runs, metrics, charts)
# rather than as a GenAI app (traces, evaluations)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
EVERYTHING = float("inf")


def resolve_tracking_uri(flag: str | None) -> str:
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


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
    ) -> None:
        self.enabled = enabled and folder is not None
        self.uri, self.folder = uri, folder
        self.end_timeout, self.retry_max = end_timeout, retry_max
        self.run_id: str | None = None
        self.journal: Journal | None = None
        self._committed = -1.0  # records up to this step may be sent
        self._wake = threading.Condition()
        self._stopping = False
        self._sender: threading.Thread | None = None
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
            self.run_id = _start_run(self.uri, experiment, run_name, run_id, tags)
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
            {"kind": "params", "data": {k: str(v)[:6000] for k, v in _flatten(params).items()}}
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
        register it as a new version of `registered_name` (pipeline/mlflow_model.py); if MLflow
        cannot take it now, `sync` logs the newest checkpoint's generator later."""
        if not self.enabled or self.journal is None:
            return
        if self.run_id is not None:
            try:
                log_generator(model, name, registered_name, version_tags)
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("MLflow: the model was not logged (%s); `sync` will log it",
                            first_line(exc))  # fmt: skip
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
                _mlflow().end_run(status=status)
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
            if record.get("step", -1) > self._committed or record["kind"] == "model":
                break  # the model waits for `sync`: the live run could not log it
            count += 1
        return count

    def _send_forever(self) -> None:
        from mlflow import MlflowClient

        assert self.journal is not None and self.run_id is not None
        client, journal = MlflowClient(tracking_uri=self.uri), self.journal
        failing_since: float | None = None
        delay = first_delay = min(1.0, self.retry_max)
        while True:
            with self._wake:
                while not self._stopping and journal.sent >= self._sendable():
                    self._wake.wait(timeout=1.0)
                if self._stopping:
                    return
                batch = _next_batch(journal.records, journal.sent, self._sendable())
            try:
                send(client, self.run_id, batch)
            except Exception as exc:  # noqa: BLE001 - the server may come back
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "MLflow at %s unreachable (%s); training goes on, records are kept in "
                        "%s and sent when it is back", self.uri, first_line(exc), journal.path,
                    )  # fmt: skip
                with self._wake:
                    self._wake.wait(timeout=delay)
                delay = min(delay * 2, self.retry_max)
                continue
            journal.mark_sent(journal.sent + len(batch))
            if failing_since is not None:
                log.warning("MLflow at %s is back after %.0f s; sending the kept records",
                            self.uri, time.monotonic() - failing_since)  # fmt: skip
                failing_since, delay = None, first_delay


def _next_batch(records: list[Record], start: int, stop: int) -> list[Record]:
    """Consecutive metric records (up to MLflow's batch limit), or one other record."""
    if records[start]["kind"] != "metrics":
        return [records[start]]
    batch, values = [], 0
    for record in records[start:stop]:
        if record["kind"] != "metrics" or values + len(record["data"]) > METRICS_PER_BATCH:
            break
        batch.append(record)
        values += len(record["data"])
    return batch


def send(client: Any, run_id: str, batch: list[Record], run_dir: Path | None = None) -> None:
    """One MLflow call (or a few, for params) for a batch of records."""
    from mlflow.entities import Metric, Param

    kind = batch[0]["kind"]
    if kind == "metrics":
        metrics = [Metric(k, v, r["time"], r["step"]) for r in batch for k, v in r["data"].items()]
        client.log_batch(run_id, metrics=metrics)
    elif kind == "params":
        items = list(batch[0]["data"].items())
        for first in range(0, len(items), PARAMS_PER_BATCH):
            chunk = items[first : first + PARAMS_PER_BATCH]
            client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
    elif kind == "artifact":
        client.log_artifact(run_id, batch[0]["path"], batch[0]["artifact_path"])
    elif kind == "end":
        client.set_terminated(run_id, batch[0]["status"])
    elif kind == "model":
        if run_dir is None:
            raise RuntimeError("the model is logged by `sync`, from the run folder")
        _log_newest_generator(client, run_id, run_dir, batch[0])


# ---- MLflow calls --------------------------------------------------------------------------


def _mlflow() -> Any:
    import mlflow

    return mlflow


def _start_run(
    uri: str, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]
) -> str:
    mlflow = _mlflow()
    mlflow.set_tracking_uri(uri)
    if run_id is None:
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=_artifacts(uri, experiment),
                                     tags=EXPERIMENT_TAGS)  # fmt: skip
        mlflow.set_experiment(experiment)
    run = mlflow.start_run(
        run_id=run_id,
        run_name=None if run_id else run_name,
        tags=None if run_id else tags,
        log_system_metrics=True,
    )
    return run.info.run_id


def _artifacts(uri: str, experiment: str) -> str | None:
    """Beside an SQLite store (not in whatever folder the run started from); else the
    server's default."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    database = Path(uri[len(prefix) :]).resolve()
    return (database.parent / "mlartifacts" / experiment).as_uri()


def _log_newest_generator(client: Any, run_id: str, run_dir: Path, record: Record) -> None:
    """The model the run could not log: the newest checkpoint's generator. Its version keeps the
    journalled scores only if that checkpoint is the step they were measured at (a run resumed
    for more steps before `sync` has newer weights). No checkpoint left: a warning, no model."""
    from pipeline.checkpoint import CheckpointError, find_checkpoint, generator_from

    try:
        path, state = find_checkpoint(run_dir)
    except CheckpointError as exc:
        log.warning("MLflow: the model is not logged: %s", exc)
        return
    tags = dict(record.get("version_tags", {}))
    if state.get("step") is not None and str(state["step"]) != str(tags.get("step")):
        tags = {k: v for k, v in tags.items() if not k.startswith("val_")}
        tags["step"] = state["step"]
    tags["run_id"] = run_id
    mlflow = _mlflow()
    with mlflow.start_run(run_id=run_id):
        log_generator(generator_from(state, path), record["name"],
                      record.get("registered_name"), tags)  # fmt: skip


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# ---- python -m pipeline.tracking sync RUN_DIR ----------------------------------------------


def sync(run_dir: Path, uri: str | None = None) -> int:
    """Send what a run's journal holds that MLflow does not; returns how many records."""
    folder = run_dir / "tracking"
    if not (folder / "journal.jsonl").is_file():
        raise FileNotFoundError(f"{folder / 'journal.jsonl'}: no tracking journal in {run_dir}")
    info = read_run(folder)
    uri = uri or info.get("uri") or DEFAULT_TRACKING_URI
    records, sent = load(folder)
    mlflow = _mlflow()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_id = info.get("run_id")
    if run_id is None:  # the server was down when the run started: make it now
        experiment = client.get_experiment_by_name(info["experiment"])
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(
                info["experiment"],
                artifact_location=_artifacts(uri, info["experiment"]),
                tags=EXPERIMENT_TAGS,
            )
        )
        run = client.create_run(experiment_id, run_name=info["run_name"], tags=info.get("tags"))
        run_id = run.info.run_id
        Journal(folder).write_run({**info, "uri": uri, "run_id": run_id})
    journal = Journal(folder)
    journal.records, journal.sent = records, sent
    while journal.sent < len(records):
        batch = _next_batch(records, journal.sent, len(records))
        send(client, run_id, batch, run_dir)
        journal.mark_sent(journal.sent + len(batch))
    return len(records) - sent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.tracking")
    commands = p.add_subparsers(dest="command", required=True)
    syncing = commands.add_parser("sync", help="send what a run's journal holds to MLflow")
    syncing.add_argument("run_dir", type=Path)
    syncing.add_argument("--tracking-uri", help="[the URI the run used]")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        count = sync(args.run_dir, args.tracking_uri)
    except Exception as exc:  # noqa: BLE001 - one line, whatever went wrong
        print(f"pipeline.tracking: error: {exc}", file=sys.stderr)
        return 2
    print(f"pipeline.tracking: {count} records sent from {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
