#!/usr/bin/env bash
# Fault-injection soak with real daemons (tests/chaos.rs, docs/reliability.md "Soak").
# Usage: sudo tests/chaos/run.sh [--duration 30m] [--seed N] [--mode vici|stroke|libreswan|all]
#                                [--tunnels N] [--recovery N]
#   --duration  how long (s, m or h suffix; default 30m); split evenly between the modes
#   --seed      replay a run: the seed is printed first, and again with a failure
#   --mode      one mode, or all (the default)
#   --tunnels   tunnel slots the random mix uses (default 8)
#   --recovery  N tunnels at once, then only ovsdb-server, IKE daemon and monitor kills:
#               the recovery figures at that scale
# Prints steps, violations, the worst convergence time per step kind and the recovery
# figures; exits non-zero on any violation. Runs under `nice -n 10` (CHAOS_NICE overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

secs() {
    case "$1" in
        *h) echo $(( ${1%h} * 3600 )) ;;
        *m) echo $(( ${1%m} * 60 )) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}

export CHAOS_SECS=1800 CHAOS_MODE=all
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) CHAOS_SECS=$(secs "$2"); shift 2 ;;
        --seed) export CHAOS_SEED="$2"; shift 2 ;;
        --mode) CHAOS_MODE="$2"; shift 2 ;;
        --tunnels) export CHAOS_TUNNELS="$2"; shift 2 ;;
        --recovery) export CHAOS_RECOVERY="$2"; shift 2 ;;
        *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
exec nice -n "${CHAOS_NICE:-10}" cargo test --locked --test chaos
