#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against a real ovsdb-server, ovs-vsctl,
# ovs-appctl, charon, pluto and kernel XFRM started by the tests themselves in temporary
# directories and network namespaces, then the CI subset of the end-to-end tier (a QEMU guest
# whose kernel has ESP: tests/e2e/ci.sh, docs/e2e.md).
# Without arguments, every fuzz target also runs for 30 s (tests/fuzz/run.sh,
# docs/reliability.md) between the two.
# Usage: sudo tests/run.sh [extra cargo test arguments]
#   With arguments, only `cargo test ARGS` runs (to pick tests); fuzzing and the QEMU tier
#   run without.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --locked --all-targets "$@"
if [ $# -eq 0 ]; then
    tests/fuzz/run.sh
    tests/e2e/ci.sh
fi
