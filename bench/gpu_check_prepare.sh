#!/usr/bin/env bash
# Gather what bench/gpu_check.sh needs on a bare GPU machine into .gpu-check/ (git-ignored,
# sent with the run via the device tool's `carry`; 64 MiB at most with the project; another
# folder with GPU_CHECK_BUNDLE):
#   wheels/  webdataset, braceexpand and safetensors (the weights files: pipeline.train,
#            evaluate and upscale import it) for Python 3.12 (the device image has torch,
#            torchvision, pillow, click, numpy, pyyaml, tqdm, psutil, nvidia-ml-py)
#   celeba/  train and val images of the shared CelebA sample (never the test split) and the
#            official partition file
# With RELEASE=1, for bench/gpu_release.sh: the test split too (the release scores on it after
# training, never tunes on it), FSRNet's test faces in fsrnet/ (FSRNET=DIR, default the shared
# copy).
# Not sent: MLflow (825 MB with its dependencies: tracking is off there, the trainer says so
# once and goes on) and DALI (199 MB wheel, over one run's limit: bench/gpu_dali_parts.sh
# sends it in parts over consecutive runs; without it DALI GPU decoding is reported as not
# measured).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
celeba="${1:-$root/../shared/data/celeba}"
train_images="${TRAIN_IMAGES:-2400}"
dest="${GPU_CHECK_BUNDLE:-$root/.gpu-check}"
rm -rf "$dest"
mkdir -p "$dest/wheels" "$dest/celeba/img_align_celeba"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d "$dest/wheels" \
    webdataset==1.0.2 braceexpand==0.1.7 safetensors==0.8.0 \
    2> >(grep -v "is ignored" >&2)
cp "$celeba/list_eval_partition.txt" "$dest/celeba/"
# demo faces stay labelled synthetic in the shards, MLflow and the numbers made from them
if [[ -f "$celeba/SYNTHETIC.txt" ]]; then cp "$celeba/SYNTHETIC.txt" "$dest/celeba/"; fi
# of the images present: the first TRAIN_IMAGES of train, all of val, none of test (2) unless
# RELEASE=1
ls "$celeba/img_align_celeba" >"$dest/present.txt"
awk -v n="$train_images" -v test="${RELEASE:+1}" 'NR == FNR {have[$1]; next}
    ($1 in have) && (($2 == 0 && c++ < n) || $2 == 1 || ($2 == 2 && test)) {print $1}' \
    "$dest/present.txt" "$celeba/list_eval_partition.txt" |
    sed "s|^|$celeba/img_align_celeba/|" | xargs cp -t "$dest/celeba/img_align_celeba/"
rm "$dest/present.txt"
if [[ -n "${RELEASE:-}" ]]; then
    # the tree travels without .git: the release's card names this commit
    git -C "$root" rev-parse HEAD >"$dest/commit" 2>/dev/null || true
    fsrnet="${FSRNET:-$root/../shared/data/celeba-fsrnet-test}"
    mkdir -p "$dest/fsrnet"
    if [[ -d "$fsrnet" ]]; then cp "$fsrnet"/* "$dest/fsrnet/"; fi
fi
echo "gpu_check_prepare: $(ls "$dest/celeba/img_align_celeba" | wc -l) images, $(du -sh "$dest" | cut -f1) in $dest"
