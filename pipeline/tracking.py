"""MLflow tracking that can never stop training.

Only rank 0 tracks. Every call is guarded: the first failure (server down, network cut,
database locked) logs one warning and turns tracking off for the rest of the run; the
checkpoints still hold everything, so nothing is lost.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(flag: str | None) -> str:
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class Tracker:
    """One MLflow run. `enabled=False` (ranks other than 0) makes every call a no-op."""

    def __init__(self, enabled: bool, uri: str) -> None:
        self.enabled = enabled
        self.uri = uri
        self.run_id: str | None = None
        if enabled:
            # Fail fast instead of MLflow's default minutes of retries against a dead server.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never end a training run
            self.enabled = False
            log.warning(
                "MLflow tracking at %s failed (%s: %s); training goes on without "
                "tracking, the checkpoints keep everything",
                self.uri,
                what,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return None

    def start(
        self, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]
    ) -> str | None:
        """Start (or, with run_id, resume) the run; returns its id, or None when tracking is off."""

        def start() -> str:
            import mlflow

            mlflow.set_tracking_uri(self.uri)
            if run_id is None:
                if mlflow.get_experiment_by_name(experiment) is None:
                    mlflow.create_experiment(
                        experiment, artifact_location=self._artifacts(experiment)
                    )
                mlflow.set_experiment(experiment)
            run = mlflow.start_run(
                run_id=run_id,
                run_name=None if run_id else run_name,
                tags=None if run_id else tags,
                log_system_metrics=True,
            )
            return run.info.run_id

        self.run_id = self._guard("start run", start)
        return self.run_id

    def _artifacts(self, experiment: str) -> str | None:
        """Beside an SQLite store (not in whatever folder the run started from); else the
        server's default."""
        prefix = "sqlite:///"
        if not self.uri.startswith(prefix):
            return None
        database = Path(self.uri[len(prefix) :]).resolve()
        return (database.parent / "mlartifacts" / experiment).as_uri()

    # mlflow is imported inside each guarded call: a machine without it (a bare GPU box) trains
    # on with one warning instead of failing at the first log call.

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: str(v)[:6000] for k, v in _flatten(params).items()}
        self._guard("log params", lambda: _mlflow().log_params(flat))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._guard("log metrics", lambda: _mlflow().log_metrics(metrics, step=step))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._guard("log artifact", lambda: _mlflow().log_artifact(str(path), artifact_path))

    def log_model(self, model: Any, name: str, input_example: Any) -> None:
        """Log a PyTorch model; MLflow 3 exports it as a traced graph from `input_example`."""

        def log_model() -> None:
            import mlflow.pytorch
            import torch

            mlflow.pytorch.log_model(
                model,
                name=name,
                input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )

        self._guard("log model", log_model)

    def end(self, status: str = "FINISHED") -> None:
        self._guard("end run", lambda: _mlflow().end_run(status=status))


def _mlflow() -> Any:
    import mlflow

    return mlflow


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
