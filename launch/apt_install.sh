#!/usr/bin/env bash
# Install those of the named Debian packages that are missing (root; nothing to do if none).
#   bash launch/apt_install.sh PACKAGE...
set -euo pipefail
missing=()
for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "apt_install: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
