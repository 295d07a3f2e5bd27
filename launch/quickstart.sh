#!/usr/bin/env bash
# The main job on a fresh machine: set up, then turn CelebA into training shards and check them.
#
#   bash launch/quickstart.sh                # built-in synthetic demo faces (no download needed)
#   bash launch/quickstart.sh /data/celeba   # a real CelebA root (img_align_celeba/ or its zip,
#                                            # and list_eval_partition.txt)
#
# Environment: OUT (default runs/quickstart), PRESET (faces128), DEMO_COUNT (1000).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup.sh"
cd "$root"
source .venv/bin/activate

out="${OUT:-runs/quickstart}"
preset="${PRESET:-faces128}"
celeba="${1:-}"
if [[ -z "$celeba" ]]; then
    celeba="$out/demo-celeba"
    echo "quickstart: no CelebA root given: drawing ${DEMO_COUNT:-1000} synthetic demo faces"
    srgan-preprocess demo-data "$celeba" --count "${DEMO_COUNT:-1000}"
fi
srgan-preprocess shard --celeba-root "$celeba" --out "$out/shards-$preset" --preset "$preset"
srgan-preprocess verify "$out/shards-$preset"
echo "quickstart: shards ready in $out/shards-$preset (manifest.json describes them)"
