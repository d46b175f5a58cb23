#!/usr/bin/env bash
# Runs every test of the project: unit tests, and integration tests against real
# ovsdb-server, ovs-vsctl and ovs-appctl. Installs what it needs on Debian 12 (as root).
# Usage: sudo tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(openvswitch-switch openvswitch-common openssl iproute2 procps)

need_install=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_install+=("$p")
done
if [ ${#need_install[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "tests/run.sh: missing packages ${need_install[*]}; run as root to install them" >&2
        exit 1
    fi
    # The postinst of openvswitch-switch would start the system daemons; we run our own.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_install[@]}"
    rm -f /usr/sbin/policy-rc.d
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "tests/run.sh: no Rust toolchain; installing rustup (needs network access to rustup.rs)" >&2
        apt-get install -y -q curl ca-certificates build-essential
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi

cargo test --locked --all-targets "$@"
