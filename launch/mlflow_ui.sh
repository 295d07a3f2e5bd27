#!/usr/bin/env bash
# Open the MLflow UI on a run store: bash launch/mlflow_ui.sh [STORE] [PORT]
# STORE: an SQLite file written by the trainer (default mlflow.db) or any MLflow store URI
# (postgresql://... for a cluster's shared server, see slurm/README.md).
# Environment: MLFLOW_HOST (127.0.0.1: this machine only; from another machine use an SSH
# tunnel, ssh -L 5000:127.0.0.1:5000), ARTIFACTS (where the server keeps artifacts that jobs
# upload through it over http; runs logged straight to SQLite keep theirs beside the file).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
store="${1:-mlflow.db}"
port="${2:-5000}"
[[ "$store" == *://* ]] || store="sqlite:///$(realpath "$store")"
artifacts=()
[[ -n "${ARTIFACTS:-}" ]] && artifacts=(--artifacts-destination "$ARTIFACTS")
# MLflow 3 opens on its GenAI home page and has no server setting for another start page; the
# links below open each training experiment's runs in its "Model training" mode.
"$root/.venv/bin/python" - "$store" "${MLFLOW_HOST:-127.0.0.1}" "$port" <<'PY' || true
import sys
from mlflow import MlflowClient

store, host, port = sys.argv[1:]
for experiment in MlflowClient(tracking_uri=store).search_experiments():
    if experiment.name != "Default":
        print(f"mlflow_ui: {experiment.name}: http://{host}:{port}/#/experiments/"
              f"{experiment.experiment_id}/runs?workflowType=machine_learning")
PY
exec "$root/.venv/bin/mlflow" server --backend-store-uri "$store" --host "${MLFLOW_HOST:-127.0.0.1}" \
    --port "$port" --workers 1 "${artifacts[@]}"
