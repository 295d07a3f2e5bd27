#!/usr/bin/env bash
# DALI for the GPU check, sent in parts: its wheel and the ones it needs (about 255 MiB for
# Python 3.12, of which nvidia-dali-cuda130 is 190) are over one device run's 64 MiB, so they
# travel as numbered parts, one per run, while the machine stays warm (30 s between calls).
#
#   bash bench/gpu_dali_parts.sh prepare   # here: .gpu-dali/part-NN (<= 56 MiB each), SHA256, PARTS
#   bash bench/gpu_dali_parts.sh receive   # there, once per part, carry [".gpu-dali/part-NN",
#                                          #   ".gpu-dali/SHA256", ".gpu-dali/PARTS"]
# `receive` keeps the parts in /tmp/dali-parts on the device machine; when all are there and
# their checksum matches, it installs the wheels into /tmp/site-dali, which bench/gpu_check.sh
# puts on PYTHONPATH. A machine given back loses them: start over.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.gpu-dali"
parts_dir="${DALI_PARTS_DIR:-/tmp/dali-parts}"
site="${DALI_SITE:-/tmp/site-dali}"

case "${1:-}" in
prepare)
    rm -rf "$dir" && mkdir -p "$dir/wheels"
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
        -d "$dir/wheels" nvidia-dali-cuda130==2.4.0 2> >(grep -v "is ignored" >&2)
    # already in the device image (see the device tool's KINDS.md)
    rm -f "$dir"/wheels/{numpy,PyYAML,pyyaml,packaging,six,typing_extensions,wheel}-*.whl
    tar -cf "$dir/all.tar" -C "$dir" wheels
    sha256sum <"$dir/all.tar" | cut -d' ' -f1 >"$dir/SHA256"
    split -b 56m -d -a 2 "$dir/all.tar" "$dir/part-"
    ls "$dir"/part-* | wc -l | tr -d ' ' >"$dir/PARTS"
    rm -rf "$dir/wheels" "$dir/all.tar"
    echo "gpu_dali_parts: $(cat "$dir/PARTS") parts in $dir: send one per run with SHA256 and PARTS"
    ;;
receive)
    mkdir -p "$parts_dir"
    for part in "$dir"/part-*; do
        [[ -f "$part" ]] && cp "$part" "$parts_dir/"
    done
    have=$(find "$parts_dir" -name 'part-*' | wc -l)
    want=$(cat "$dir/PARTS")
    echo "gpu_dali_parts: $have of $want parts here"
    if ((have == want)); then
        got=$(cat "$parts_dir"/part-* | sha256sum | cut -d' ' -f1)
        if [[ "$got" != "$(cat "$dir/SHA256")" ]]; then
            echo "gpu_dali_parts: checksum mismatch: parts are damaged or mixed; start over" >&2
            exit 1
        fi
        rm -rf "$parts_dir/wheels" && cat "$parts_dir"/part-* | tar -xf - -C "$parts_dir"
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" \
            "$parts_dir"/wheels/*.whl
        echo "gpu_dali_parts: DALI installed in $site"
    fi
    ;;
*)
    echo "usage: bash bench/gpu_dali_parts.sh prepare|receive" >&2
    exit 2
    ;;
esac
