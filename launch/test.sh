#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, every tier (plain `pytest` runs only the fast
# one, see pyproject.toml), on two pytest-xdist workers: a serial run leaves about half of a
# 2-core machine idle, and tests/xdist_scheduling.py keeps the SLURM tests on one worker. Extra
# arguments go to pytest (`-n 0` runs it in one process).
#
# The tests also drive system programs from Debian, installed here when missing: a one-node
# SLURM (slurm-wlm, munge; tests/slurm_cluster.py starts and stops the daemons) and headless
# Chromium with its driver (chromium, chromium-driver) to look at the MLflow UI.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup.sh"

bash "$root/launch/apt_install.sh" slurm-wlm munge chromium chromium-driver

cd "$root"
# --max-worker-restart 0: a crashed worker ends the run (its SLURM daemons would outlive it)
exec .venv/bin/python -m pytest -q -m "" -n 2 --dist loadgroup --max-worker-restart 0 "$@"
