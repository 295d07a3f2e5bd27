#!/usr/bin/env bash
# The main job on a fresh machine: set up, make shards, train 4x and 8x (SRResNet pretrain,
# then SRGAN), all tracked in MLflow. Sized to finish in minutes on a 2-core CPU; on GPUs the
# same commands run with bigger settings (see README).
#
#   bash launch/quickstart.sh                # built-in synthetic demo faces (no download)
#   bash launch/quickstart.sh /data/celeba   # a real CelebA root (img_align_celeba/ or its
#                                            # zip, and list_eval_partition.txt)
#
# Environment (defaults): OUT (runs/quickstart), PRESET (faces128), DEMO_COUNT (1000),
# PRETRAIN_STEPS (150), GAN_STEPS (10), BATCH_SIZE (16), GAN_BATCH_SIZE (8), BLOCKS (4),
# CHANNELS (32), D_CHANNELS (16), SCALES ("4 8"),
# VGG_WEIGHTS (the torch hub cache), NPROC (1: processes per phase; launch/train_all.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup.sh"
cd "$root"
source .venv/bin/activate

out="${OUT:-runs/quickstart}"
preset="${PRESET:-faces128}"
celeba="${1:-}"
mkdir -p "$out"
if [[ -z "$celeba" ]]; then
    celeba="$out/demo-celeba"
    echo "quickstart: no CelebA root given: drawing ${DEMO_COUNT:-1000} synthetic demo faces"
    srgan-preprocess demo-data "$celeba" --count "${DEMO_COUNT:-1000}"
fi
shards="$out/shards-$preset"
srgan-preprocess shard --celeba-root "$celeba" --out "$shards" --preset "$preset"
srgan-preprocess verify "$shards"

db="$out/mlflow.db"
# What pretrained weights this machine has (`python -m pipeline.weights fetch` gets them).
python -m pipeline.weights check | sed 's/^/quickstart: weights: /' || true
vgg_args=""
if [[ -n "${VGG_WEIGHTS:-}" ]]; then
    vgg_args="--vgg-weights $VGG_WEIGHTS"
    echo "quickstart: the GAN phase uses the VGG19 weights in $VGG_WEIGHTS"
elif python -c "from pipeline.archs.pretrained import WEIGHTS as w; assert w['vgg19'].cached_path().is_file()" 2>/dev/null; then
    echo "quickstart: the GAN phase uses the real VGG19 ImageNet weights of the torch hub cache"
else
    echo "quickstart: NOTE: no VGG19 ImageNet weights on this machine, so the GAN phase runs"
    echo "quickstart: with RANDOM VGG weights (tagged vgg_weights=random in MLflow): it shows"
    echo "quickstart: the pipeline working, not SRGAN quality. See README, 'Pretrained weights'."
    vgg_args="--vgg-weights random"
fi
DATA="$shards" RUNS="$out" MLFLOW_TRACKING_URI="sqlite:///$(realpath "$db")" NPROC="${NPROC:-1}" \
PRETRAIN_ARGS="--steps ${PRETRAIN_STEPS:-150} --lr 1e-3 --warmup-steps 15 --eval-every 75
               --checkpoint-every 75" \
GAN_ARGS="--steps ${GAN_STEPS:-10} --batch-size ${GAN_BATCH_SIZE:-8} --warmup-steps 1 --eval-every 1000
          --checkpoint-every 1000 --log-every 5 $vgg_args" \
    bash launch/train_all.sh --batch-size "${BATCH_SIZE:-16}" --blocks "${BLOCKS:-4}" \
        --channels "${CHANNELS:-32}" --d-channels "${D_CHANNELS:-16}" --channels-last
# The shipped generators (models/, trained on real CelebA: models/README.md) next to the short
# runs above, on the same val faces: grids of LR | bicubic | SR | HR with each face's scores.
echo
echo "quickstart: the shipped generators and the ones trained here, on the val faces of $shards:"
for scale in ${SCALES:-4 8}; do
    for which in shipped trained; do
        checkpoint="models/srgan-celeba-x$scale.safetensors"
        [[ "$which" == trained ]] && checkpoint="$out/x$scale-pretrain"
        if [[ ! -e "$checkpoint" ]]; then
            echo "quickstart: x$scale $which: $checkpoint not found, left out"
            continue
        fi
        echo "quickstart: x$scale $which ($checkpoint):"
        python -m pipeline.evaluate --checkpoint "$checkpoint" --data "$shards" --split val \
            --scale "$scale" --no-lpips --no-fid --grid "$out/compare-x$scale-$which.png" \
            2> >(grep -v " INFO " >&2) | sed 's/^/    /'
    done
done
echo "quickstart: the runs trained here (${PRETRAIN_STEPS:-150} steps of a 4-block network) show"
echo "quickstart: the pipeline working, not quality: below bicubic is expected. For real use,"
echo "quickstart: the shipped models: .venv/bin/srgan-upscale --input FACE --output OUT [--model x8]"
echo "quickstart: grids of both: $out/compare-x*-shipped.png, $out/compare-x*-trained.png"
echo
echo "quickstart: done. Runs, metrics and sample grids are in $db; look at them with:"
echo "    bash launch/mlflow_ui.sh $db      # then open the link it prints"
echo "quickstart: the generators are registered as srgan-celeba-x4 and -x8; upscale with:"
echo "    MLFLOW_TRACKING_URI=sqlite:///$(realpath "$db") .venv/bin/srgan-upscale \\"
echo "        --checkpoint models:/srgan-celeba-x4/latest --input FACE_OR_FOLDER --output OUT"
