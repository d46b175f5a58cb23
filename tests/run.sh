#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against a real ovsdb-server, ovs-vsctl
# and ovs-appctl started by the tests themselves in temporary directories.
# Usage: sudo tests/run.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --locked --all-targets "$@"
