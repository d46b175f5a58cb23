#!/usr/bin/env bash
# Installs the system packages the tests and the sandbox need (Debian 12), and makes sure a
# Rust toolchain is on PATH. Idempotent; prints nothing when everything is there.
set -euo pipefail

PACKAGES=(openvswitch-switch openvswitch-common openssl iproute2 procps util-linux iputils-ping systemd)
# Each backend lists what its real-daemon tests need in tests/deps/<backend>.packages (one
# Debian package a line) and may add tests/deps/<backend>.sh for anything apt cannot do.
here=$(cd "$(dirname "$0")" && pwd)
for f in "$here"/deps/*.packages; do
    [ -e "$f" ] || continue
    while read -r p _; do
        case "$p" in ''|'#'*) ;; *) PACKAGES+=("$p") ;; esac
    done < "$f"
done

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0: missing packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    # Keep the packages' postinst from starting system daemons: the tests run their own.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

for f in "$here"/deps/*.sh; do
    [ -e "$f" ] || continue
    bash "$f"
done

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    # Debian 12's own rustc (1.63) is too old for this project: use rustup.
    echo "$0: no Rust toolchain found; installing rustup (needs network access)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl ca-certificates gcc libc6-dev
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
