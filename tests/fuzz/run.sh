#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser: the cargo-fuzz targets in fuzz/ (docs/reliability.md).
# Usage: tests/fuzz/run.sh [--long] [TARGET...]
#   default: each target for 30 s, from the committed corpus (what CI runs);
#   --long:  each target for 10 million executions or 2 hours, whichever comes first.
# Prints executions, coverage edges and time per target. Exits non-zero on any crash, timeout
# or out-of-memory, printing the reproducer's path (replay it with
# `cargo +nightly fuzz run -s none TARGET PATH` in fuzz/).
# Runs under `nice -n 19` (FUZZ_NICE overrides): the machines it runs on are shared.
# New corpus entries go to fuzz/corpus-run/TARGET (not committed); fuzz/corpus/TARGET holds the
# seeds (tests/fuzz/seeds.py) and is only read.
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"

long=0
if [ "${1:-}" = --long ]; then
    long=1
    shift
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install --locked cargo-fuzz
fi

nice=(nice -n "${FUZZ_NICE:-19}")
# Release optimisations with debug assertions and overflow checks (cargo-fuzz's default), and
# no sanitizer: the code is safe Rust, and ASan would halve the executions per second.
build=(cargo +nightly fuzz build -s none)
run=(cargo +nightly fuzz run -s none)

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
if [ "$long" = 1 ]; then
    limits=(-runs=10000000 -max_total_time=7200)
else
    limits=(-max_total_time=30)
fi

# The fuzz crate is its own workspace, which the root's `cargo fmt --check` does not see.
cargo fmt --check
"${nice[@]}" "${build[@]}"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
printf '%-18s %12s %8s %8s  %s\n' target execs edges seconds result
for t in "${targets[@]}"; do
    mkdir -p "corpus-run/$t" "artifacts/$t" "corpus/$t"
    log="$logs/$t.log"
    start=$(date +%s)
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GB is an out-of-memory.
    if "${nice[@]}" "${run[@]}" "$t" "corpus-run/$t" "corpus/$t" -- \
        "${limits[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed=1
    fi
    seconds=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    edges=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    printf '%-18s %12s %8s %8s  %s\n' "$t" "${execs:-?}" "${edges:-?}" "$seconds" "$result"
    if [ "$result" = FAILED ]; then
        grep -E 'ERROR: libFuzzer|panicked at|deadly signal|timeout|out-of-memory' "$log" | head -5 >&2 || true
        for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "  reproducer: fuzz/$a" >&2
        done
        tail -30 "$log" >&2
    fi
done
exit "$failed"
