"""MLflow tracking that never stalls a step: the run's journal on disk, the tracker that sends
it in the background, and `python -m pipeline.tracking sync` for what is left after a run."""

from pipeline.tracking.mlflow_calls import DEFAULT_TRACKING_URI, resolve_tracking_uri
from pipeline.tracking.sync import sync
from pipeline.tracking.tracker import Tracker

__all__ = ["DEFAULT_TRACKING_URI", "Tracker", "resolve_tracking_uri", "sync"]
