"""Reading back what a run sent to an MLflow sqlite store, for the trainer and fault tests."""

from __future__ import annotations

from pathlib import Path

import mlflow

from pipeline.tracking.journal import load


def client(db: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")


def runs_in(db: Path) -> list:
    """Every run of every experiment in the store."""
    store = client(db)
    return store.search_runs([e.experiment_id for e in store.search_experiments()])


def steps_logged(db: Path, run_id: str, name: str = "loss/pixel_mse") -> list[int]:
    """The steps of a metric's history, sorted: a step sent twice shows up twice."""
    return sorted(m.step for m in client(db).get_metric_history(run_id, name))


def last_logged_step(run: Path) -> int:
    """The newest step in a run folder's tracking journal (0 before the first record); a line
    torn by a write in progress is left out."""
    if not (run / "tracking" / "journal.jsonl").is_file():
        return 0
    records, _ = load(run / "tracking")
    return max((record.get("step", 0) for record in records), default=0)
