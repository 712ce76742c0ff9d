#!/usr/bin/env bash
# Install the Debian packages mx2 needs to build and test, when missing.
# Sourced or run by tests/run, etc/demo/run and .ci/run. Needs root for apt-get.
set -euo pipefail

MX2_PACKAGES=(cmake make gcc pkg-config libuv1-dev libmbedtls-dev liblmdb-dev libconfig-dev
              libcmocka-dev python3 python3-pytest python3-aiosmtpd openssl)
if [ "${MX2_WANT_CLANG:-0}" = 1 ]; then
    MX2_PACKAGES+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${MX2_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "deps: need root to install packages: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
