#!/usr/bin/env bash
# One command makes a release: shard CelebA, train the 4x and 8x generators, score the shipped
# files on the test split (lossless) and on FSRNet's faces when given, and write the release
# folder (weights, results.json, model card). Re-running goes on where it stopped.
#
#   bash launch/release.sh CELEBA_ROOT                       # --size gpu: paper-size, one GPU
#   bash launch/release.sh CELEBA_ROOT --size cpu            # the small network, about 1 h on 2 cores
#   bash launch/release.sh ../shared/data/celeba --fsrnet ../shared/data/celeba-fsrnet-test \
#        --release models                                    # what ships in models/
#
# Every flag: `.venv/bin/python -m pipeline.release build --help`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${SRGAN_SKIP_SETUP:-0}" != 1 ]]; then
    bash "$root/launch/setup.sh"
fi
# no cd: CELEBA_ROOT and the other paths are the caller's, relative to where it stands
python="$root/.venv/bin/python"
[[ -x "$python" ]] || python=python3
exec "$python" -m pipeline.release build "$@"
