#!/usr/bin/env bash
# The release on one GPU machine (issue 22): launch/release.sh's command at --size gpu on the
# carried sample, in one device run of at most 9 minutes. Prepare on the dev machine with
#   RELEASE=1 TRAIN_IMAGES=4000 bash bench/gpu_check_prepare.sh     # about 60 MiB in .gpu-check/
# then run there (device tool: carry [".gpu-check"]):
#   bash bench/gpu_release.sh
# Back in $OUT (default ./gpu-release-out): release/ (the x4 and x8 weights, results.json, the
# card), gpu_release.log (everything), release-logs.tar.gz (each stage's log and scores). Copy
# release/ over models/ and run `python -m pipeline.release table models --update
# docs/RESULTS.md`. The image has no DALI or MLflow: the reference loader reads the shards and
# tracking is off there (the trainer says so once and goes on); safetensors comes in the bundle.
# SIZE (gpu), LIMIT (540 s), EXTRA_RELEASE_ARGS: tests/bench/test_gpu_check.py runs this script on a
# CPU at SIZE=smoke, so every flag the device run passes is parsed in CI.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
out="${OUT:-$root/gpu-release-out}"
mkdir -p "$out"
exec > >(tee "$out/gpu_release.log") 2>&1
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
bundle="${GPU_CHECK_BUNDLE:-$root/.gpu-check}"
work="${GPU_RELEASE_WORK:-/tmp/gpu-release}"
rm -rf "$work" && mkdir -p "$work"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
"$python" -m pip install -q --no-index --no-deps --target "$work/site" "$bundle"/wheels/*.whl ||
    exit 1
export PYTHONPATH="$work/site:$root${GPU_CHECK_SHADOW:+:$GPU_CHECK_SHADOW}"
if [[ -s "$bundle/commit" ]]; then export SRGAN_COMMIT="${SRGAN_COMMIT:-$(cat "$bundle/commit")}"; fi
fsrnet=()
if compgen -G "$bundle/fsrnet/*" >/dev/null; then fsrnet=(--fsrnet "$bundle/fsrnet"); fi
# shellcheck disable=SC2086  # EXTRA_RELEASE_ARGS splits into arguments
timeout --kill-after=10 "${LIMIT:-540}" "$python" -m pipeline.release build "$bundle/celeba" \
    --size "${SIZE:-gpu}" --out "$work/out" --release "$out/release" "${fsrnet[@]}" \
    --train-arg=--loader=reference --train-arg=--loader-threads=14 ${EXTRA_RELEASE_ARGS:-} \
    2>&1 | sed -u 's/\r/\n/g' | grep --line-buffered -v -E 'step/s\]|s/step\]'
status=${PIPESTATUS[0]}
# with the weights kept so far: a release cut short by its limit (during x8, say) still brings
# back the x4 weights it had scored
tar -czf "$out/release-logs.tar.gz" -C "$work/out" logs scores weights stages.json 2>/dev/null
echo "=== gpu_release: exit $status $(date -Is)"
exit "$status"
