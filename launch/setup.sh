#!/usr/bin/env bash
# One-time set-up of a fresh x86_64 machine: system packages, a virtual environment in .venv,
# the pinned Python packages, then pillow-simd over pillow.
#
# Order matters: pillow-simd and pillow both install the `PIL` package, and any later pip
# install that needs pillow quietly puts plain pillow back. So pillow-simd goes in LAST,
# with --force-reinstall --no-deps, compiled with AVX2 where the CPU has it.
#
# Re-running is cheap: a stamp records the hash of this script and pyproject.toml, and the
# work is skipped when neither changed. Set SRGAN_FORCE_SETUP=1 to redo it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SRGAN_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.setup-stamp"
want="$(cat "$root/launch/setup.sh" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"

if [[ "${SRGAN_FORCE_SETUP:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup: $venv is up to date"
    exit 0
fi

log() { echo "setup: $*"; }

# Headers that pillow-simd compiles against.
bash "$root/launch/apt_install.sh" libjpeg-dev zlib1g-dev

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    "$python" -m venv "$venv"
fi
# pip's configuration on these machines names local wheel folders that lack most packages;
# its "Location ... is ignored" lines are noise, the rest of stderr is kept.
pip_install() {
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

log "installing torch and torchvision"
pip_install torch==2.14.1 torchvision==0.29.1
log "installing the project and its pinned dependencies"
pip_install -e "${root}[dev]"

log "installing pillow-simd over pillow (last, see above)"
cflags=""
grep -qw avx2 /proc/cpuinfo && cflags="-mavx2"
CC="cc $cflags" pip_install --no-cache-dir --force-reinstall --no-deps pillow-simd==12.1.1.post0

"$venv/bin/python" -m pip check
"$venv/bin/python" - <<'PY'
from preprocess.pillow_check import pillow_flavour
print(f"setup: PIL is {pillow_flavour()}")
PY
echo "$want" >"$stamp"
log "done: activate with 'source $venv/bin/activate'"
