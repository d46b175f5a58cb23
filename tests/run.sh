#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against a real ovsdb-server, ovs-vsctl,
# ovs-appctl, charon, pluto and kernel XFRM started by the tests themselves in temporary
# directories and network namespaces (asserting what this host's kernel can do: ESP SAs and
# tunnels up, or the kernel's refusal where it has no ESP; tests/common/kernel.rs), then, in a
# QEMU guest whose kernel has ESP (docs/e2e.md), the CI subset of the end-to-end scenarios
# (tests/e2e/ci.sh) and the integration tests that touch the kernel (run.sh --cargo-tier).
# Usage: sudo tests/run.sh [extra cargo test arguments]
#   With arguments, only `cargo test ARGS` runs (to pick tests); the QEMU tiers run without.
# Without arguments, the fault-injection soak runs for 3 minutes (tests/chaos/run.sh) and
# every fuzz target for 30 s (tests/fuzz/run.sh) before the guest runs (docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --locked --all-targets "$@"
if [ $# -eq 0 ]; then
    rc=0
    tests/chaos/run.sh --duration 3m || rc=$?
    tests/fuzz/run.sh || rc=$?
    # Both guest runs, whatever the ones before found.
    tests/e2e/ci.sh || rc=$?
    # The cargo tier's CI subset (docs/e2e.md): the static-key tests whose expectation
    # depends on ESP, one per strongSwan mode, Libreswan 4 and 5 with PSK, and a Libreswan
    # tunnel removed (its SAs with it) and added back.
    tests/e2e/run.sh --cargo-tier xfrm_kernel xfrm_families xfrm_idle:a_refused_sa xfrm_netlink \
        strongswan_vici:psk strongswan_stroke_netns:psk libreswan_pluto:psk,v4_peer_certificate_removed ||
        rc=$?
    exit "$rc"
fi
