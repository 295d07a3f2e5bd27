"""Reading back what a run sent to an MLflow sqlite store, for the trainer and fault tests."""

from __future__ import annotations

from pathlib import Path

import mlflow


def client(db: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")


def runs_in(db: Path) -> list:
    """Every run of every experiment in the store."""
    store = client(db)
    return store.search_runs([e.experiment_id for e in store.search_experiments()])


def steps_logged(db: Path, run_id: str, name: str = "loss/pixel_mse") -> list[int]:
    """The steps of a metric's history, sorted: a step sent twice shows up twice."""
    return sorted(m.step for m in client(db).get_metric_history(run_id, name))
