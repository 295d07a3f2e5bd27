"""`python -m pipeline.tracking sync RUN_DIR`: send what a run's journal holds that MLflow does
not (records kept while the server was down, or the model a crashed run could not log)."""

from __future__ import annotations

from pathlib import Path

from pipeline.tracking.journal import Journal, load, read_run
from pipeline.tracking.mlflow_calls import (
    DEFAULT_TRACKING_URI,
    EXPERIMENT_TAGS,
    artifact_location,
    mlflow_module,
    next_batch,
    send_or_skip,
)


def sync(run_dir: Path, uri: str | None = None) -> int:
    """Send what a run's journal holds that MLflow does not; returns how many records."""
    folder = run_dir / "tracking"
    if not (folder / "journal.jsonl").is_file():
        raise FileNotFoundError(f"{folder / 'journal.jsonl'}: no tracking journal in {run_dir}")
    info = read_run(folder)
    uri = uri or info.get("uri") or DEFAULT_TRACKING_URI
    records, sent = load(folder)
    mlflow = mlflow_module()
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
                artifact_location=artifact_location(uri, info["experiment"]),
                tags=EXPERIMENT_TAGS,
            )
        )
        run = client.create_run(experiment_id, run_name=info["run_name"], tags=info.get("tags"))
        run_id = run.info.run_id
        Journal(folder).write_run({**info, "uri": uri, "run_id": run_id})
    journal = Journal(folder)
    journal.records, journal.sent = records, sent
    while journal.sent < len(records):
        batch = next_batch(records, journal.sent, len(records))
        send_or_skip(client, run_id, batch, run_dir)
        journal.mark_sent(journal.sent + len(batch))
    return len(records) - sent
