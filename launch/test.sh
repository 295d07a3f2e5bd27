#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, every tier (plain `pytest` runs only the fast
# one, see pyproject.toml); extra arguments go to pytest.
#
# The tests also drive system programs from Debian, installed here when missing: a one-node
# SLURM (slurm-wlm, munge; tests/slurm_cluster.py starts and stops the daemons) and headless
# Chromium with its driver (chromium, chromium-driver) to look at the MLflow UI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup.sh"

bash "$root/launch/apt_install.sh" slurm-wlm munge chromium chromium-driver

cd "$root"
exec .venv/bin/python -m pytest -q -m "" "$@"
