"""MLflow tracking that can never stop, or slow down, training.

Only rank 0 tracks. The run is started (or resumed) before the first step; after that every
call only puts its record on a bounded queue that one background thread sends to MLflow, in
order, so a slow or dead server never stalls a step. The first failure (server down, network
cut, database locked) logs one warning and turns tracking off for the rest of the run; a full
queue drops records and says so once; the checkpoints still hold everything that matters.
`end` waits a bounded time for the queue to drain.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow's log_batch accepts at most 100 params per call.
PARAMS_PER_BATCH = 100


def resolve_tracking_uri(flag: str | None) -> str:
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class Tracker:
    """One MLflow run. `enabled=False` (ranks other than 0) makes every call a no-op."""

    def __init__(
        self, enabled: bool, uri: str, queue_size: int = 10_000, end_timeout: float = 60.0
    ) -> None:
        self.enabled = enabled
        self.uri = uri
        self.run_id: str | None = None
        self.end_timeout = end_timeout
        self._records: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=queue_size)
        self._dropped = 0
        self._sender: threading.Thread | None = None
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

    # -- the queue and its sender thread

    def _put(self, kind: str, payload: Any) -> None:
        if not self.enabled or self.run_id is None:
            return
        try:
            self._records.put_nowait((kind, payload))
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                log.warning(
                    "MLflow at %s is not keeping up: tracking records are being dropped "
                    "(training is not slowed; the checkpoints keep everything)",
                    self.uri,
                )

    def _send_forever(self, run_id: str) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        while True:
            kind, payload = self._records.get()
            try:
                if kind == "stop":
                    return
                self._guard(f"log {kind}", self._send, client, run_id, kind, payload)
            finally:
                self._records.task_done()

    @staticmethod
    def _send(client: Any, run_id: str, kind: str, payload: Any) -> None:
        from mlflow.entities import Metric, Param

        if kind == "metrics":
            metrics, step, stamp = payload
            client.log_batch(
                run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in metrics.items()]
            )
        elif kind == "params":
            items = list(payload.items())
            for first in range(0, len(items), PARAMS_PER_BATCH):
                chunk = items[first : first + PARAMS_PER_BATCH]
                client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
        elif kind == "artifact":
            path, artifact_path = payload
            client.log_artifact(run_id, str(path), artifact_path)

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the queue to drain; True if it did."""
        deadline = time.monotonic() + timeout
        while self._records.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._records.unfinished_tasks

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
        if self.run_id is not None and self._sender is None:
            self._sender = threading.Thread(
                target=self._send_forever, args=(self.run_id,), name="mlflow-sender", daemon=True
            )
            self._sender.start()
        return self.run_id

    def _artifacts(self, experiment: str) -> str | None:
        """Beside an SQLite store (not in whatever folder the run started from); else the
        server's default."""
        prefix = "sqlite:///"
        if not self.uri.startswith(prefix):
            return None
        database = Path(self.uri[len(prefix) :]).resolve()
        return (database.parent / "mlartifacts" / experiment).as_uri()

    # mlflow is imported inside each guarded call and in the sender: a machine without it (a
    # bare GPU box) trains on with one warning instead of failing at the first log call.

    def log_params(self, params: dict[str, Any]) -> None:
        self._put("params", {k: str(v)[:6000] for k, v in _flatten(params).items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._put("metrics", (dict(metrics), step, int(time.time() * 1000)))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """`path` must stay as it is until sent: the sender reads it later."""
        self._put("artifact", (path, artifact_path))

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
        """Send what is queued (waiting at most `end_timeout` s), then close the run."""
        if self._sender is not None:
            if not self.flush(self.end_timeout):
                log.warning(
                    "MLflow at %s: %d tracking records not sent after %.0f s; ending without them",
                    self.uri,
                    self._records.unfinished_tasks,
                    self.end_timeout,
                )
            else:
                self._records.put(("stop", None))
            self._sender = None
        if self._dropped:
            log.warning("MLflow: %d tracking records were dropped (queue full)", self._dropped)
        if self.run_id is None:
            return
        # Also after tracking was turned off mid-run: left open, the run would be closed as
        # FINISHED by MLflow's exit hook whatever happened.
        self.enabled = True
        self._guard("end run", lambda: _mlflow().end_run(status=status))
        self.enabled = False


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
