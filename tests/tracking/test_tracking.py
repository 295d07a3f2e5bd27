"""MLflow tracking off the training thread: a stalled, dying or absent server never holds a
step and loses nothing; records go to MLflow once their step is checkpointed, once each."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch

from pipeline import tracking
from pipeline.archs import SRResNet
from pipeline.runtime.checkpoint import save_checkpoint
from pipeline.tracking import Tracker
from pipeline.tracking.__main__ import main as tracking_main
from pipeline.training.config import ModelConfig, TrainConfig


@pytest.fixture(autouse=True)
def no_run_left_active():
    yield
    mlflow.end_run()  # a test that stops early leaves no active run for the next one


@pytest.fixture
def stalled_server(monkeypatch):
    """MLflow's log_batch blocks until `release` is set; `entered` says it was reached."""
    entered, release = threading.Event(), threading.Event()
    real = mlflow.MlflowClient.log_batch

    def log_batch(self, *args, **kwargs):
        entered.set()
        assert release.wait(timeout=60), "the test never released the stalled server"
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", log_batch)
    yield entered, release
    release.set()


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _tracker(tmp_path: Path, resume_step: int | None = None, run_id: str | None = None,
             uri: str | None = None, **kwargs) -> Tracker:  # fmt: skip
    tracker = Tracker(True, uri or _uri(tmp_path), tmp_path / "run" / "tracking", **kwargs)
    tracker.start("tracking-test", "run", run_id, {}, resume_step=resume_step)
    return tracker


def _history(uri: str, run_id: str, name: str = "loss") -> list[tuple[int, float]]:
    client = mlflow.MlflowClient(tracking_uri=uri)
    return [(m.step, m.value) for m in client.get_metric_history(run_id, name)]


def _status(uri: str, run_id: str) -> str:
    return mlflow.MlflowClient(tracking_uri=uri).get_run(run_id).info.status


def test_records_wait_for_their_checkpoint_then_arrive_in_order(tmp_path):
    tracker = _tracker(tmp_path)
    for step in range(1, 6):
        tracker.log_metrics({"loss": float(step)}, step)
    tracker.commit(3)
    assert tracker.flush(timeout=30)
    assert _history(tracker.uri, tracker.run_id) == [(1, 1.0), (2, 2.0), (3, 3.0)]
    tracker.end("FINISHED")  # the end of the run releases the rest
    assert _history(tracker.uri, tracker.run_id) == [(s, float(s)) for s in range(1, 6)]
    assert _status(tracker.uri, tracker.run_id) == "FINISHED"


def test_logging_returns_while_the_server_is_stalled(tmp_path, stalled_server):
    entered, release = stalled_server
    tracker = _tracker(tmp_path)
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.commit(1)
    assert entered.wait(timeout=30)  # the sender is now stuck inside MLflow
    for step in range(2, 6):
        tracker.log_metrics({"loss": float(step)}, step)  # returns: the caller never waits
        tracker.commit(step)
    assert not release.is_set()
    release.set()
    tracker.end("FINISHED")
    assert _history(tracker.uri, tracker.run_id) == [(s, float(s)) for s in range(1, 6)]


def test_an_outage_mid_run_loses_nothing(tmp_path, monkeypatch, caplog):
    tracker = _tracker(tmp_path, retry_max=0.05)
    real, down = mlflow.MlflowClient.log_batch, threading.Event()

    def log_batch(self, *args, **kwargs):
        if down.is_set():
            raise ConnectionError("server went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", log_batch)
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        tracker.log_metrics({"loss": 1.0}, 1)
        tracker.commit(1)
        assert tracker.flush(timeout=30)
        down.set()
        for step in range(2, 6):
            tracker.log_metrics({"loss": float(step)}, step)
            tracker.commit(step)
        assert not tracker.flush(timeout=0.5)  # kept while the server is away
        down.clear()
        tracker.end("FINISHED")
    assert _history(tracker.uri, tracker.run_id) == [(s, float(s)) for s in range(1, 6)]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable (server went away)" in m for m in messages) == 1  # said once
    assert any("is back after" in m for m in messages)


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def outage(monkeypatch):
    """MLflow's log_batch raises while `down` is set; `failures` holds the time of each try."""
    real, down, failures = mlflow.MlflowClient.log_batch, threading.Event(), []

    def log_batch(self, *args, **kwargs):
        if down.is_set():
            failures.append(time.monotonic())
            raise ConnectionError("server went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", log_batch)
    return down, failures


def test_records_logged_during_an_outage_do_not_cut_the_backoff_short(tmp_path, outage):
    down, failures = outage
    tracker = _tracker(tmp_path, retry_max=30)
    down.set()
    for step in range(1, 61):  # a run logging 60 records over 1.2 s while the server is down
        tracker.log_metrics({"loss": float(step)}, step)
        tracker.commit(step)
        time.sleep(0.02)
    # tries 1 s, then 2 s apart (a loaded machine only makes the gaps longer), not one per record
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(failures)]
    assert failures and all(gap >= 0.99 for gap in gaps), gaps
    down.clear()
    tracker.end("FINISHED")
    assert _history(tracker.uri, tracker.run_id) == [(s, float(s)) for s in range(1, 61)]


def test_end_retries_often_however_long_the_outage_made_the_backoff(tmp_path, outage):
    down, failures = outage
    tracker = _tracker(tmp_path, retry_max=4, end_retry=0.1)
    down.set()
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.commit(1)
    _until(lambda: len(failures) >= 3, "no 3 failed sends")  # at 0, 1 and 3 s: now 4 s apart
    ending = threading.Thread(target=tracker.end, args=("FINISHED",))
    ending.start()
    _until(lambda: len(failures) >= 6, "no retries while end() waited")  # 0.1 s apart, not 4
    down.clear()
    ending.join(timeout=30)
    assert not ending.is_alive()
    # below the 4 s backoff the outage built up
    assert failures[5] - failures[3] < 3.5, [round(t - failures[0], 2) for t in failures]
    assert _history(tracker.uri, tracker.run_id) == [(1, 1.0)]
    assert _status(tracker.uri, tracker.run_id) == "FINISHED"


def test_a_resumed_run_logs_each_step_once(tmp_path):
    first = _tracker(tmp_path)
    for step in range(1, 11):
        first.log_metrics({"loss": float(step)}, step)
        if step in (3, 6):
            first.commit(step)  # checkpoints at 3 and 6; then the process dies at step 10
    assert first.flush(timeout=30)
    run_id, uri = first.run_id, first.uri
    mlflow.end_run()
    resumed = _tracker(tmp_path, resume_step=6, run_id=run_id)  # from the checkpoint of 6
    for step in range(7, 13):
        resumed.log_metrics({"loss": 100.0 + step}, step)
    resumed.end("FINISHED")
    expected = [(s, float(s)) for s in range(1, 7)] + [(s, 100.0 + s) for s in range(7, 13)]
    assert _history(uri, run_id) == expected


def test_end_waits_a_bounded_time_and_sync_sends_the_rest(tmp_path, stalled_server, caplog):
    entered, release = stalled_server
    tracker = _tracker(tmp_path, end_timeout=0.5)
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.log_metrics({"loss": 2.0}, 2)
    tracker.commit(2)  # a stop signal checkpoints before the run ends as KILLED
    assert entered.wait(timeout=30)
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        tracker.end("KILLED")  # returns although records are still stuck
    assert any("pipeline.tracking sync" in r.getMessage() for r in caplog.records)
    release.set()
    mlflow.end_run()
    tracking.sync(tmp_path / "run")  # whatever the stuck sender got through, the rest now
    assert _history(tracker.uri, tracker.run_id) == [(1, 1.0), (2, 2.0)]
    assert _status(tracker.uri, tracker.run_id) == "KILLED"


def _checkpointed_generator(tmp_path: Path, eval_weights: str = "ema") -> SRResNet:
    """A tiny generator, saved as the run's checkpoint of step 1 (what the trainer does just
    before it logs the model), with a weight average that differs from it; returned: the one
    the run evaluates."""
    cfg = TrainConfig(scale=4, model=ModelConfig(blocks=1, channels=4), eval_weights=eval_weights)
    generator, average = SRResNet(4, blocks=1, channels=4), SRResNet(4, blocks=1, channels=4)
    model = {"generator": generator.state_dict(),
             "generator_ema": {"weights": average.state_dict(), "updates": 1}}  # fmt: skip
    state = {"step": 1, "config": cfg.to_dict(), "model": model}
    save_checkpoint(tmp_path / "run" / "checkpoints", 1, state, keep=1)
    return average if eval_weights == "ema" else generator


@pytest.mark.parametrize("eval_weights", ["ema", "raw"])
def test_the_retried_model_has_the_weights_the_run_evaluated(tmp_path, monkeypatch, eval_weights):
    tracker = _tracker(tmp_path)
    evaluated = _checkpointed_generator(tmp_path, eval_weights)

    def swamped(*args, **kwargs):
        raise ConnectionError("read timed out")

    monkeypatch.setattr(tracking.tracker, "log_generator", swamped)
    tracker.log_model(evaluated, "generator", "srgan-celeba-x4", {"step": 1})
    tracker.end("FINISHED")
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    (model,) = client.search_logged_models(
        experiment_ids=[client.get_run(tracker.run_id).info.experiment_id]
    )
    logged = mlflow.pytorch.load_model(model.model_uri).state_dict()
    for name, value in evaluated.state_dict().items():
        assert torch.equal(logged[name], value), name


def test_a_model_the_run_could_not_log_is_logged_by_its_sender_once_mlflow_answers(
    tmp_path, monkeypatch, caplog, capsys
):
    tracker = _tracker(tmp_path)
    tracker.log_metrics({"loss": 1.0}, 1)
    generator = _checkpointed_generator(tmp_path)

    def swamped(*args, **kwargs):  # the server, just back, times the live call out
        raise ConnectionError("read timed out")

    monkeypatch.setattr(tracking.tracker, "log_generator", swamped)
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        tracker.log_model(generator, "generator", "srgan-celeba-x4",
                          {"step": 1, "val_psnr_y": "30.0000"})  # fmt: skip
        tracker.end("FINISHED")
    assert any("model was not logged" in r.getMessage() for r in caplog.records)
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    (model,) = client.search_logged_models(
        experiment_ids=[client.get_run(tracker.run_id).info.experiment_id]
    )
    assert model.name == "generator" and model.source_run_id == tracker.run_id
    version = client.get_model_version("srgan-celeba-x4", "1")
    assert version.tags == {"run_id": tracker.run_id, "step": "1", "val_psnr_y": "30.0000"}
    assert _status(tracker.uri, tracker.run_id) == "FINISHED"
    assert tracking_main(["sync", str(tmp_path / "run")]) == 0  # nothing left for sync
    assert "0 records sent" in capsys.readouterr().out
    assert len(client.search_model_versions("name='srgan-celeba-x4'")) == 1


def test_a_model_registered_by_a_call_whose_reply_was_lost_is_not_registered_twice(
    tmp_path, monkeypatch
):
    tracker = _tracker(tmp_path)
    generator = _checkpointed_generator(tmp_path)
    registered = tracking.tracker.log_generator

    def done_but_timed_out(model, name, registered_name, version_tags):
        # the server logged and registered the model, the client gave up before its reply
        registered(model, name, registered_name, {})
        raise ConnectionError("read timed out")

    monkeypatch.setattr(tracking.tracker, "log_generator", done_but_timed_out)
    tracker.log_model(generator, "generator", "srgan-celeba-x4",
                      {"step": 1, "val_psnr_y": "30.0000"})  # fmt: skip
    tracker.end("FINISHED")
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    (version,) = client.search_model_versions("name='srgan-celeba-x4'")
    assert version.run_id == tracker.run_id  # one version, and its tags set by the retry
    assert version.tags == {"run_id": tracker.run_id, "step": "1", "val_psnr_y": "30.0000"}
    assert _status(tracker.uri, tracker.run_id) == "FINISHED"


def test_a_record_mlflow_refuses_is_skipped_not_retried_before_everything_else(tmp_path, caplog):
    # a run resumed after the server was down at its first start logs its params again, with
    # another value (config.resume): refused, and retried forever it held back every metric
    tracker = _tracker(tmp_path, end_timeout=20)
    tracker.log_params({"resume": "None"})
    tracker.log_params({"resume": "auto"})
    tracker.log_metrics({"loss": 1.0}, 1)
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        tracker.end("FINISHED")
    assert any("MLflow refused 1 params record(s), skipped (Changing param values" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert _history(tracker.uri, tracker.run_id) == [(1, 1.0)]
    assert _status(tracker.uri, tracker.run_id) == "FINISHED"


class _Unrunnable(torch.nn.Module):
    """A generator as a broken export or a bad checkpoint may give: it does not run."""

    def forward(self, lr):
        raise TypeError("cannot run this module")


def test_a_model_that_cannot_be_made_does_not_hold_the_runs_end(tmp_path, monkeypatch, caplog):
    # a generator that fails here fails the same way at every retry: it used to hold the end
    # record back for the whole end timeout, reported as "MLflow unreachable"
    tracker = _tracker(tmp_path, end_timeout=120)  # far above the end's few seconds, loaded
    generator = _checkpointed_generator(tmp_path)

    def down(*args, **kwargs):
        raise ConnectionError("read timed out")  # the live call: MLflow did not answer

    monkeypatch.setattr(tracking.tracker, "log_generator", down)
    monkeypatch.setattr(tracking.mlflow_calls, "generator_from", lambda *a: _Unrunnable())
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.log_model(generator, "generator", "srgan-celeba-x4", {"step": 1})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        tracker.end("FINISHED")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("records not sent after" in m for m in messages), messages  # not held back
    assert time.monotonic() - started < 60
    assert any("no loggable generator (TypeError: cannot run this module)" in m
               for m in messages), messages  # fmt: skip
    assert not any("unreachable" in m for m in messages), messages
    assert _status(tracker.uri, tracker.run_id) == "FINISHED"
    assert _history(tracker.uri, tracker.run_id) == [(1, 1.0)]


def test_a_model_failing_at_mlflow_is_retried_not_skipped(tmp_path, monkeypatch):
    # anything MLflow or its artifact store raises (an S3 client's own errors are neither
    # MlflowException nor OSError) is retried: only the local check can skip a model
    from pipeline.tracking.mlflow_calls import send_or_skip

    _checkpointed_generator(tmp_path)

    class StoreError(Exception):
        pass

    def store_down(*args, **kwargs):
        raise StoreError("upload failed")

    monkeypatch.setattr(tracking.mlflow_calls, "log_generator", store_down)
    monkeypatch.setattr(tracking.mlflow_calls, "_registered_already", lambda *a: False)
    monkeypatch.setattr(tracking.mlflow_calls, "mlflow_module", lambda: _NoRun())
    record = {"kind": "model", "name": "generator", "registered_name": None, "version_tags": {}}
    with pytest.raises(StoreError):
        send_or_skip(None, "run", [record], tmp_path / "run")


class _NoRun:
    """mlflow with start_run as a no-op context."""

    def start_run(self, **kwargs):
        import contextlib

        return contextlib.nullcontext()


def test_only_a_value_mlflow_will_never_take_is_skipped():
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    from pipeline.tracking.mlflow_calls import refused

    assert refused(MlflowException("changed", error_code=codes.INVALID_PARAMETER_VALUE))
    # an expired token, a reset server: retried
    others = ("PERMISSION_DENIED", "UNAUTHENTICATED", "RESOURCE_DOES_NOT_EXIST")
    for code in others:
        error = MlflowException("no", error_code=getattr(codes, code))
        assert 400 <= error.get_http_status_code() < 500 and not refused(error), code
    assert not refused(ConnectionError("refused"))


def test_a_resumed_run_whose_start_failed_logs_its_model_in_its_run(tmp_path, monkeypatch):
    first = _tracker(tmp_path)
    first.end("KILLED")
    run_id = first.run_id

    def down(*args, **kwargs):
        raise ConnectionError("connection refused")

    real = tracking.tracker.start_run
    monkeypatch.setattr(tracking.tracker, "start_run", down)  # down at the resumed start only
    resumed = _tracker(tmp_path, resume_step=1, run_id=run_id)
    monkeypatch.setattr(tracking.tracker, "start_run", real)
    generator = _checkpointed_generator(tmp_path)
    resumed.log_model(generator, "generator", "srgan-celeba-x4", {"step": 1})
    resumed.end("FINISHED")
    client = mlflow.MlflowClient(tracking_uri=resumed.uri)
    experiment = client.get_run(run_id).info.experiment_id
    (model,) = client.search_logged_models(experiment_ids=[experiment])
    assert model.source_run_id == run_id  # not a model of no run, in the Default experiment
    (version,) = client.search_model_versions("name='srgan-celeba-x4'")
    assert version.run_id == run_id


def test_a_run_started_while_the_server_was_down_is_made_by_sync(tmp_path, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        tracker = _tracker(tmp_path, uri="http://127.0.0.1:9")  # nothing listens there
    assert tracker.run_id is None
    assert any("failed at the start" in r.getMessage() for r in caplog.records)
    tracker.log_params({"lr": 1e-3})
    tracker.log_metrics({"loss": 1.0}, 1)
    generator = _checkpointed_generator(tmp_path)
    tracker.log_model(generator, "generator", "srgan-celeba-x4",
                      {"step": 1, "val_psnr_y": "30.0000"})  # fmt: skip
    tracker.end("FINISHED")
    uri = _uri(tmp_path)
    assert tracking_main(["sync", str(tmp_path / "run"), "--tracking-uri", uri]) == 0
    assert "4 records sent" in capsys.readouterr().out  # params, metrics, model, end
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tracking-test").experiment_id])
    assert run.data.params == {"lr": "0.001"} and run.info.status == "FINISHED"
    assert _history(uri, run.info.run_id) == [(1, 1.0)]
    # logged and registered by sync, in the run's experiment
    (model,) = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert model.name == "generator" and model.source_run_id == run.info.run_id
    version = client.get_model_version("srgan-celeba-x4", "1")
    assert version.tags == {"run_id": run.info.run_id, "step": "1", "val_psnr_y": "30.0000"}
    assert tracking_main(["sync", str(tmp_path / "run")]) == 0  # again: nothing twice
    assert _history(uri, run.info.run_id) == [(1, 1.0)]


def test_a_failed_run_sends_only_checkpointed_steps_and_keeps_the_rest_apart(tmp_path):
    tracker = _tracker(tmp_path)
    for step in range(1, 11):
        tracker.log_metrics({"loss": float(step)}, step)
    tracker.commit(6)
    tracker.end("FAILED")  # a resume would run 7-10 again: sending them now would double them
    assert _history(tracker.uri, tracker.run_id) == [(s, float(s)) for s in range(1, 7)]
    assert _status(tracker.uri, tracker.run_id) == "FAILED"
    aside = (tmp_path / "run" / "tracking" / "uncheckpointed.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in aside] == [7, 8, 9, 10]
