"""The MLflow calls the tracker and `sync` make, and the settings they share.

mlflow itself is imported on first use (it takes seconds to import, and ranks other than 0 and
`--tracking-uri none` runs never need it).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.runtime.checkpoint import CheckpointError, find_checkpoint, generator_from
from pipeline.runtime.messages import first_line
from pipeline.serving.mlflow_model import log_generator
from pipeline.tracking.journal import Record

log = logging.getLogger(__name__)
REFUSALS = ("INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS")  # MLflow's error codes

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow's log_batch takes at most 1000 metrics and 100 params per call.
METRICS_PER_BATCH, PARAMS_PER_BATCH = 1000, 100
# MLflow 3's UI shows an experiment of this kind as model training (runs, metrics, charts)
# rather than as a GenAI app (traces, evaluations)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(flag: str | None) -> str:
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def next_batch(records: list[Record], start: int, stop: int) -> list[Record]:
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


def refused(exc: BaseException) -> bool:
    """Whether MLflow answered that this record can never be taken: a value it holds already
    and will not change (e.g. a param logged again with another value, by a run resumed after
    the server was down at its first start). Sending it again would fail the same way and hold
    back every later record. Other refusals (an expired token, a proxy's 4xx) are retried."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in REFUSALS


class UnmakeableModel(Exception):
    """The run's checkpoint gives no generator that runs and pickles here (checked before
    anything is sent): retrying cannot mend that, and retried it held back the run's end
    record until the end timeout, reported as MLflow unreachable."""


def send_or_skip(client: Any, run_id: str, batch: list[Record], run_dir: Path | None) -> None:
    """send(), a batch that MLflow refuses or a model that cannot be made here skipped with a
    warning (the journal file keeps it; it counts as sent, so `sync` does not retry it)."""
    try:
        send(client, run_id, batch, run_dir)
    except Exception as exc:
        kind = batch[0]["kind"]
        if refused(exc):
            log.warning("MLflow refused %d %s record(s), skipped (%s)", len(batch), kind,
                        first_line(exc))  # fmt: skip
        elif isinstance(exc, UnmakeableModel):
            log.warning("MLflow: the model is not logged: %s", exc)
        else:
            raise


def send(client: Any, run_id: str, batch: list[Record], run_dir: Path | None = None) -> None:
    """One MLflow call (or a few, for params) for a batch of records."""
    from mlflow.entities import Metric, Param  # mlflow: imported when first needed (slow)

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
        log_newest_generator(client, run_id, run_dir, batch[0])


# ---- MLflow calls --------------------------------------------------------------------------


def mlflow_module() -> Any:
    import mlflow

    return mlflow


def start_run(
    uri: str, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]
) -> str:
    mlflow = mlflow_module()
    mlflow.set_tracking_uri(uri)
    if run_id is None:
        if mlflow.get_experiment_by_name(experiment) is None:
            location = artifact_location(uri, experiment)
            mlflow.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
        mlflow.set_experiment(experiment)
    run = mlflow.start_run(
        run_id=run_id,
        run_name=None if run_id else run_name,
        tags=None if run_id else tags,
        log_system_metrics=True,
    )
    return run.info.run_id


def artifact_location(uri: str, experiment: str) -> str | None:
    """Beside an SQLite store (not in whatever folder the run started from); else the
    server's default."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    database = Path(uri[len(prefix) :]).resolve()
    return (database.parent / "mlartifacts" / experiment).as_uri()


def log_newest_generator(client: Any, run_id: str, run_dir: Path, record: Record) -> None:
    """The model the run could not log when it ended: the newest checkpoint's generator (sent
    by the run's own sender once MLflow is back, else by `sync`). Its version keeps the
    journalled scores only if that checkpoint is the step they were measured at (a run resumed
    for more steps before `sync` has newer weights). No checkpoint left: a warning, no model."""
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
    registered = record.get("registered_name")
    if registered and _registered_already(client, registered, run_id, tags):
        return
    # The run made active here, in this thread only (MLflow keeps one stack per thread), is
    # what puts the model in the run's experiment (MLflow takes it from the active run, else
    # from the default experiment). Leaving it marks the run FINISHED: a model record exists
    # only for a run that finished, and its "end" record follows.
    with mlflow_module().start_run(run_id=run_id):
        # the weights the run evaluated, as its live call would have logged them
        which = state.get("config", {}).get("eval_weights", "ema")
        log_generator(makeable_generator(state, path, which), record["name"],
                      record.get("registered_name"), tags)  # fmt: skip


def makeable_generator(state: dict[str, Any], path: Path, which: str) -> Any:
    """The checkpoint's generator, checked to do here what MLflow will do with it (run on an
    example, pickle), so that a failure of this process is told from one of MLflow's."""
    import cloudpickle  # MLflow's pickler, installed with it

    try:
        generator = generator_from(state, path, which)
        with torch.no_grad():
            generator(torch.zeros(1, 3, 8, 8))
        torch.save(generator, io.BytesIO(), pickle_module=cloudpickle)
    except Exception as exc:  # whatever breaks it here breaks it at every retry
        raise UnmakeableModel(f"{path}: no loggable generator ({type(exc).__name__}: "
                              f"{first_line(exc)})") from exc  # fmt: skip
    return generator


def _registered_already(client: Any, registered: str, run_id: str, tags: dict[str, Any]) -> bool:
    """Whether an earlier try registered this model although its reply never came (a live call
    timed out after the server had done it): a version of this run tagged with this step, or
    one with no step tag (its tags were never set; they are set now). Registering again would
    give the registry two versions of one model. (A try that failed between logging the model
    and registering it leaves a logged model that this retry logs once more.)"""
    for version in client.search_model_versions(f"name='{registered}' and run_id='{run_id}'"):
        if version.tags.get("step", str(tags["step"])) != str(tags["step"]):
            continue
        for key, value in tags.items():
            client.set_model_version_tag(registered, version.version, key, str(value))
        log.info("MLflow: %s version %s of this run is already registered; not logged again",
                 registered, version.version)  # fmt: skip
        return True
    return False


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
