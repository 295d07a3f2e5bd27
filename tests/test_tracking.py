"""MLflow tracking off the training thread: a stalled or dying server never holds a step."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import mlflow
import pytest

from pipeline.tracking import Tracker


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


def _tracker(tmp_path: Path, **kwargs) -> Tracker:
    tracker = Tracker(True, f"sqlite:///{tmp_path / 'mlflow.db'}", **kwargs)
    assert tracker.start("tracking-test", "run", None, {}) is not None
    return tracker


def _history(tracker: Tracker, name: str) -> list[tuple[int, float]]:
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    return [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, name)]


def test_logging_returns_while_the_server_is_stalled_and_everything_arrives(
    tmp_path, stalled_server
):
    entered, release = stalled_server
    tracker = _tracker(tmp_path)
    tracker.log_metrics({"loss": 1.0}, 1)
    assert entered.wait(timeout=30)  # the sender is now stuck inside MLflow
    for step in range(2, 6):
        tracker.log_metrics({"loss": float(step)}, step)  # returns: the caller never waits
    assert not release.is_set()
    release.set()
    tracker.end("FINISHED")
    assert _history(tracker, "loss") == [(s, float(s)) for s in range(1, 6)]  # in order


def test_a_full_queue_drops_records_with_one_warning(tmp_path, stalled_server, caplog):
    entered, release = stalled_server
    tracker = _tracker(tmp_path, queue_size=2)
    tracker.log_metrics({"loss": 1.0}, 1)
    assert entered.wait(timeout=30)  # step 1 is with the sender, the queue is empty
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        for step in range(2, 7):
            tracker.log_metrics({"loss": float(step)}, step)
    release.set()
    tracker.end("FINISHED")
    assert _history(tracker, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    dropped = [r for r in caplog.records if "records are being dropped" in r.message]
    assert len(dropped) == 1


def test_a_server_that_dies_mid_run_turns_tracking_off_once(tmp_path, monkeypatch, caplog):
    tracker = _tracker(tmp_path)
    tracker.log_metrics({"loss": 1.0}, 1)
    assert tracker.flush(timeout=30)

    def dead(self, *args, **kwargs):
        raise ConnectionError("server went away")

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", dead)
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        for step in range(2, 5):
            tracker.log_metrics({"loss": float(step)}, step)
        assert tracker.flush(timeout=30)
    assert not tracker.enabled
    failures = [r for r in caplog.records if "training goes on without tracking" in r.message]
    assert len(failures) == 1 and "server went away" in failures[0].message
    monkeypatch.undo()
    tracker.log_metrics({"loss": 9.0}, 9)  # off for the rest of the run
    assert _history(tracker, "loss") == [(1, 1.0)]


def test_end_waits_a_bounded_time_for_a_stalled_server(tmp_path, stalled_server, caplog):
    entered, _ = stalled_server
    tracker = _tracker(tmp_path, end_timeout=0.5)
    tracker.log_metrics({"loss": 1.0}, 1)
    assert entered.wait(timeout=30)
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        tracker.end("KILLED")  # returns although the record is still stuck
    assert any("1 tracking records not sent after 0 s" in r.message for r in caplog.records)
