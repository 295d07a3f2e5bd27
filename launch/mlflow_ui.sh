#!/usr/bin/env bash
# Open the MLflow UI on a run store: bash launch/mlflow_ui.sh [STORE] [PORT]
# STORE: an SQLite file written by the trainer (default mlflow.db) or any MLflow store URI.
# Listens on 127.0.0.1 only; from another machine use an SSH tunnel (ssh -L 5000:127.0.0.1:5000).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
store="${1:-mlflow.db}"
port="${2:-5000}"
[[ "$store" == *://* ]] || store="sqlite:///$(realpath "$store")"
exec "$root/.venv/bin/mlflow" server --backend-store-uri "$store" --host 127.0.0.1 \
    --port "$port" --workers 1
