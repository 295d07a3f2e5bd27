#!/usr/bin/env bash
# The whole recipe on a SLURM cluster: 4x and 8x, each SRResNet pretrain then SRGAN. A GAN job
# starts only after its pretrain job ended with exit 0 (afterok) and is cancelled if that job
# failed (--kill-on-invalid-dep), so nothing waits forever on a dead dependency.
#
#   bash slurm/submit_all.sh                       # 4 jobs of one node each
#   bash slurm/submit_all.sh -N 4 --time=48:00:00  # sbatch options go to every job
#   SCALES=8 bash slurm/submit_all.sh              # only 8x
#
# Environment: whatever slurm/train.sbatch reads (DATA, RUNS, MLFLOW_TRACKING_URI,
# NPROC_PER_NODE, ...), and SCALES ("4 8"), TRAIN_ARGS (trainer arguments for every job),
# PRETRAIN_ARGS and GAN_ARGS (for one phase); these three are split on spaces.
# Prints one line per job: its name, its id and what it waits for.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."   # the project root: train.sbatch's paths start there
mkdir -p logs

submit() {  # submit NAME [sbatch options...] -- [trainer arguments...]
    local name="$1" id
    shift
    local options=()
    while [[ "$1" != -- ]]; do options+=("$1"); shift; done
    shift
    id="$(sbatch --parsable --job-name="$name" "${options[@]}" slurm/train.sbatch "$@")"
    echo "${id%%;*}"   # --parsable prints "id" or "id;cluster"
}

# shellcheck disable=SC2086  # the *_ARGS strings are meant to split into arguments
for scale in ${SCALES:-4 8}; do
    pre="$(SCALE="$scale" PHASE=pretrain submit "srgan-x$scale-pretrain" "$@" -- \
        ${TRAIN_ARGS:-} ${PRETRAIN_ARGS:-})"
    echo "srgan-x$scale-pretrain $pre"
    gan="$(SCALE="$scale" PHASE=gan submit "srgan-x$scale-gan" "$@" \
        --dependency="afterok:$pre" --kill-on-invalid-dep=yes -- ${TRAIN_ARGS:-} ${GAN_ARGS:-})"
    echo "srgan-x$scale-gan $gan afterok:$pre"
done
