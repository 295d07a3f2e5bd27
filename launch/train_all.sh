#!/usr/bin/env bash
# The whole recipe on this machine: 4x and 8x, each SRResNet pretrain then SRGAN, every phase
# one `torchrun --standalone` over N local processes (the one-node twin of
# slurm/submit_all.sh). Phases resume from their checkpoints, so re-running it after a crash
# or Ctrl-C goes on where it stopped; a finished phase is not trained again.
#
#   bash launch/train_all.sh                          # configs/x4.toml + x8.toml as they are
#   NPROC=2 bash launch/train_all.sh --steps 1000     # arguments go to every phase
#
# Environment (default): DATA (data/shards-faces128), RUNS (runs), NPROC (the GPUs, else 1),
# MLFLOW_TRACKING_URI (sqlite:///$RUNS/mlflow.db), SCALES ("4 8"), MAX_RESTARTS (3: torchrun's
# restarts of a phase after a worker crash), PRETRAIN_ARGS and GAN_ARGS (arguments for one
# phase only, split on spaces).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
data="${DATA:-data/shards-faces128}"
runs="${RUNS:-runs}"
mkdir -p "$runs"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$(realpath "$runs")/mlflow.db}"
nproc="${NPROC:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
# A crashed worker (OOM kill, a bad node) restarts the group, which resumes from the newest
# checkpoint in the same MLflow run.
launcher=(torchrun --standalone --nproc_per_node="$nproc" --max-restarts="${MAX_RESTARTS:-3}"
          -m pipeline.train)

# shellcheck disable=SC2086  # the *_ARGS strings are meant to split into arguments
for scale in ${SCALES:-4 8}; do
    common=(--config "configs/x$scale.toml" --scale "$scale" --data "$data" --resume auto)
    echo "train_all: x$scale pretrain, $nproc process(es), tracking $MLFLOW_TRACKING_URI"
    "${launcher[@]}" "${common[@]}" --phase pretrain --out "$runs/x$scale-pretrain" \
        "$@" ${PRETRAIN_ARGS:-}
    echo "train_all: x$scale gan, from $runs/x$scale-pretrain"
    "${launcher[@]}" "${common[@]}" --phase gan --out "$runs/x$scale-gan" \
        --init "$runs/x$scale-pretrain" "$@" ${GAN_ARGS:-}
done
echo "train_all: done; look at the runs with: bash launch/mlflow_ui.sh ${MLFLOW_TRACKING_URI}"
