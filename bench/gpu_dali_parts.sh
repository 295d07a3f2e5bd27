#!/usr/bin/env bash
# DALI for the GPU check, sent in parts: nvidia-dali-cuda130 and the wheels it needs are about
# 270 MiB for Python 3.12, over one device run's 64 MiB. `prepare` unpacks them here, drops
# what the check never loads (binaries for other Pythons, nvcomp, which DALI dlopens only for
# compressed numpy/video inputs, and packages the device image already has), and packs the
# rest as one xz tar: 150 MiB in three parts of at most 60 MiB, so the last (30 MiB) can
# travel with .gpu-check/ (31 MiB) in the run that measures.
#
#   bash bench/gpu_dali_parts.sh prepare   # here: .gpu-dali/part-NN, SHA256, PARTS
#   bash bench/gpu_dali_parts.sh receive   # there, once per part, carry [".gpu-dali/part-NN",
#                                          #   ".gpu-dali/SHA256", ".gpu-dali/PARTS"]
# `receive` keeps the parts in /tmp/dali-parts on the device machine; when all are there and
# their checksum matches, it unpacks them into /tmp/site-dali, which bench/gpu_check.sh puts
# on PYTHONPATH, and checks that `nvidia.dali` imports beside torch. A machine given back
# loses them: start over.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.gpu-dali"
parts_dir="${DALI_PARTS_DIR:-/tmp/dali-parts}"
site="${DALI_SITE:-/tmp/site-dali}"
python="${PYTHON:-python3}"

case "${1:-}" in
prepare)
    rm -rf "$dir" && mkdir -p "$dir/wheels" "$dir/site"
    "$python" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
        -d "$dir/wheels" nvidia-dali-cuda130==2.4.0 2> >(grep -v "is ignored" >&2)
    # already in the device image (see the device tool's KINDS.md), or never loaded by the check
    rm -f "$dir"/wheels/{numpy,PyYAML,pyyaml,packaging,six,typing_extensions,wheel}-*.whl
    rm -f "$dir"/wheels/nvidia_libnvcomp*.whl
    for wheel in "$dir"/wheels/*.whl; do  # a wheel is a zip laid out as its installed files
        "$python" -m zipfile -e "$wheel" "$dir/site"
    done
    find "$dir/site" -name '*.cpython-3*.so' ! -name '*.cpython-312-*' -delete
    tar -cf - -C "$dir/site" . | xz -7 -T0 >"$dir/all.tar.xz"
    sha256sum <"$dir/all.tar.xz" | cut -d' ' -f1 >"$dir/SHA256"
    split -b 60m -d -a 2 "$dir/all.tar.xz" "$dir/part-"
    ls "$dir"/part-* | wc -l | tr -d ' ' >"$dir/PARTS"
    rm -rf "$dir/wheels" "$dir/site" "$dir/all.tar.xz"
    echo "gpu_dali_parts: $(cat "$dir/PARTS") parts in $dir ($(du -sh "$dir" | cut -f1)):" \
        "send one per run with SHA256 and PARTS"
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
        rm -rf "$site" && mkdir -p "$site"
        cat "$parts_dir"/part-* | "$python" -c "import sys, tarfile
tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall(sys.argv[1], filter='tar')" "$site"
        probe="import torch, nvidia.dali as d; print('DALI', d.__version__, 'with torch', torch.__version__)"
        # the image's own `nvidia` package may be a regular one: then ours must be a namespace
        # portion, or the other way round; keep whichever layout lets both import
        if ! PYTHONPATH="$site" "$python" -c "$probe"; then
            rm -f "$site/nvidia/__init__.py"
            PYTHONPATH="$site" "$python" -c "$probe"
        fi
        echo "gpu_dali_parts: DALI installed in $site"
    fi
    ;;
*)
    echo "usage: bash bench/gpu_dali_parts.sh prepare|receive" >&2
    exit 2
    ;;
esac
