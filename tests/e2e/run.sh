#!/usr/bin/env bash
# usage: tests/e2e/run.sh [SCENARIO...]      (as root; default: every scenario, see scenarios.sh)
#        tests/e2e/run.sh --cargo-tier [TEST...]
#
# End-to-end tier: boots ONE QEMU guest (TCG; KVM does not work on the project's machines) with
# Debian's kernel, which has the ESP, OVS datapath and tunnel modules the host kernel lacks, and
# runs every requested scenario in it (guest.sh). The guest sees the host's / read-only, so it
# runs this worktree's monitor binary and the host's OVS, strongSwan and /opt/lsw Libreswan.
# Results come back through a read-write 9p share: target/e2e/results/<run>/ (also `latest`)
# holds table.txt, results.tsv, the serial console and, for each failed scenario, its logs.
#
# --cargo-tier runs the cargo integration tests that touch the kernel and the IKE daemons
# (TEST: the name of a tests/*.rs binary, or NAME:F1,F2... to run only its tests whose names
# contain F1 or F2...; default E2E_CARGO_TESTS below) in the guest instead:
# built on the host (cargo test --no-run), copied into the results share, each run as one row
# of the table with OVS_TEST_TIME_SCALE=E2E_CARGO_SCALE (default 4: TCG is slow) and
# --test-threads=E2E_CARGO_THREADS (default 2). Each test binary prints the kernel ESP probe's
# result (tests/common/kernel.rs); the table repeats it, so the log says which path ran.
#
# Environment: E2E_BIN (monitor binary; default the newer of target/release and target/debug),
# E2E_TIMEOUT (seconds per scenario, default 900: the multi-node ones need over 600 under
# load; the mesh gets twice that, see scenario_limit), E2E_SMP / E2E_MEM (guest size).
# Exit status: 0 when every scenario passed, 1 when one failed, 2 when the harness could not run.
set -uo pipefail
# The cargo tier: every integration test binary whose tests create network namespaces and
# run the monitor's kernel or IKE path there
# (libreswan_pluto in two rows, Libreswan 4 and 5, each within E2E_TIMEOUT under TCG).
E2E_CARGO_TESTS="xfrm_kernel xfrm_families xfrm_idle xfrm_netlink xfrm_events diagnose_xfrm strongswan_vici strongswan_vici_cases strongswan_vici_certs diagnose_vici strongswan_stroke_netns strongswan_stroke_certs diagnose_strongswan libreswan_pluto:v4_ libreswan_pluto:v5_"
# The body is one function so that bash has parsed all of it before running any of it.
main() {
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=$repo/target/e2e
export E2E_CACHE=$cache

die() { echo "e2e: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (netns, kernel modules in the guest, 9p shares)"

missing=""
for c in qemu-system-x86_64 busybox cpio depmod modprobe apt-get dpkg tcpdump ping nft openssl \
    python3 nsenter unshare ovsdb-server ovs-vswitchd ovs-vsctl ovs-appctl ipsec swanctl certutil pk12util; do
    command -v "$c" > /dev/null || missing="$missing $c"
done
[ -x /opt/lsw/ipsec ] || missing="$missing /opt/lsw/ipsec(tests/deps/libreswan.sh)"
[ -z "$missing" ] || die "missing on the host:$missing
  install them with tests/install-deps.sh (tests/deps/e2e.packages and the backends' lists)"

. "$here/scenarios.sh"
cargo_tier=""
if [ "${1:-}" = --cargo-tier ]; then
    cargo_tier=1
    shift
    if [ $# -eq 0 ]; then set -- $E2E_CARGO_TESTS; fi
    for s in "$@"; do
        [ -f "$repo/tests/${s%%:*}.rs" ] || die "unknown test binary '$s' (tests/${s%%:*}.rs does not exist)"
    done
else
    if [ $# -eq 0 ]; then set -- $E2E_ALL_SCENARIOS; fi
    for s in "$@"; do
        declare -F "scenario_${s//-/_}" > /dev/null || die "unknown scenario '$s' (known: $E2E_ALL_SCENARIOS)"
    done
fi

# The test binaries run the monitor cargo builds with them (its path is compiled in).
if [ -n "$cargo_tier" ]; then
    cargo_build "$cache/cargo.$$" "$@" || die "cannot build the test binaries"
    export E2E_BIN=$repo/target/debug/ovs-monitor-ipsec
fi
bin=${E2E_BIN:-}
if [ -z "$bin" ]; then
    for b in "$repo/target/release/ovs-monitor-ipsec" "$repo/target/debug/ovs-monitor-ipsec"; do
        [ -x "$b" ] && { [ -z "$bin" ] || [ "$b" -nt "$bin" ]; } && bin=$b
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || die "no monitor binary: run cargo build (or set E2E_BIN)"
newer=$(find "$repo/src" -newer "$bin" -name '*.rs' -print -quit)
[ -z "$newer" ] || echo "e2e: WARNING: $bin is older than $newer; rebuild to test the current source" >&2

t0=$(date +%s)
release=$("$here/prepare.sh") || die "guest preparation failed"
t_prep=$(($(date +%s) - t0))

run_id=$(date +%Y%m%d-%H%M%S)-$$
out=$cache/results/$run_id
mkdir -p "$out"
ln -sfn "$run_id" "$cache/results/latest"
export E2E_TIMEOUT=${E2E_TIMEOUT:-900}
# The guest runs a copy of the scripts: editing tests/e2e during a run changes nothing in it.
mkdir -p "$out/scripts" && cp "$here"/*.sh "$here"/*.py "$out/scripts/"
# And of the binary: a build during the run (cargo replaces target/*/ovs-monitor-ipsec) must
# not change the monitor that nodes started later run.
cp "$bin" "$out/ovs-monitor-ipsec" || die "cannot copy $bin"
cargo_env=""
if [ -n "$cargo_tier" ]; then
    mv "$cache/cargo.$$" "$out/cargo" || die "cannot move the test binaries"
    cargo_env="export E2E_CARGO_DIR='$repo' OVS_TEST_TIME_SCALE='${E2E_CARGO_SCALE:-4}' E2E_CARGO_THREADS='${E2E_CARGO_THREADS:-2}'"
fi
cat > "$out/boot.sh" <<EOF
export E2E_BIN=/e2e-out/ovs-monitor-ipsec E2E_SCENARIOS='$*' E2E_TIMEOUT='$E2E_TIMEOUT'
export E2E_MODULES='$cache/kernel/lib/modules' E2E_PKI='$cache/pki'
$cargo_env
exec /bin/bash /e2e-out/scripts/guest.sh
EOF

echo "e2e: kernel $release, binary $bin, scenarios: $*, results: $out (prepared in ${t_prep}s)"
# The guest powers itself off; the outer timeout only guards against a hung guest.
boot_limit=120
for s in "$@"; do boot_limit=$((boot_limit + $(scenario_limit "$s"))); done
timeout --kill-after=10 "$boot_limit" qemu-system-x86_64 -accel tcg -cpu max \
    -smp "${E2E_SMP:-2}" -m "${E2E_MEM:-2048}" -nographic -no-reboot -nodefaults -serial stdio \
    -kernel "$cache/kernel/boot/vmlinuz-$release" -initrd "$cache/initrd.gz" \
    -append "console=ttyS0 panic=-1 rdinit=/init quiet" \
    -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \
    -fsdev "local,id=o,path=$out,security_model=none" -device virtio-9p-pci,fsdev=o,mount_tag=e2eout \
    < /dev/null > "$out/serial.log" 2>&1
qemu_rc=$?
wall=$(($(date +%s) - t0))
# The copies of the test binaries (about 1 GB in a debug build) served only the guest.
rm -rf "$out/cargo"

# A scenario the guest never reported (hang, crash, timeout) counts as failed.
for s in "$@"; do
    grep -q "^$s	" "$out/results.tsv" 2> /dev/null || printf '%s\tFAIL\t-\tno result from the guest (qemu exit %s)\n' "$s" "$qemu_rc" >> "$out/results.tsv"
done
{
    printf '%-48s %-6s %8s  %s\n' SCENARIO RESULT SECONDS DETAIL
    while IFS=$'\t' read -r s r secs why; do printf '%-48s %-6s %8s  %s\n' "$s" "$r" "$secs" "$why"; done < "$out/results.tsv"
    [ -z "$cargo_tier" ] || sort -u "$out"/*/probe.txt 2> /dev/null
    echo "wall time ${wall}s (guest preparation ${t_prep}s), qemu exit $qemu_rc, binary $bin"
} > "$out/table.txt"
cat "$out/table.txt"
# show_logs SCENARIO: what a CI log needs to debug a failure without the artifacts: the reason,
# the scenario's steps, and per node its state and the tails of the monitor and IKE daemon logs.
show_logs() {
    local d=$out/$1 n f
    if [ -n "$cargo_tier" ]; then
        echo "===== $1: the failed tests' output (all of it in $d/trace.txt)"
        sed -n '/^failures:$/,$p' "$d/trace.txt" | tail -n 200
        return
    fi
    echo "===== $1: $(cat "$d/failure.txt" 2> /dev/null || echo 'no failure.txt (see serial.log)')"
    grep '^T+' "$d/trace.txt" 2> /dev/null
    for n in left right n3 n4; do
        [ -d "$d/$n" ] || continue
        echo "----- $1 $n: state (keys redacted)"
        cat "$d/$n/state.txt"
        for f in mon.log mon.stderr pluto.log charon.log; do
            [ -s "$d/$n/$f" ] && { echo "----- $1 $n: last lines of $f"; tail -n 40 "$d/$n/$f"; }
        done
    done
}
if grep -q '	FAIL	' "$out/results.tsv"; then
    for s in "$@"; do grep -q "^$s	FAIL" "$out/results.tsv" && show_logs "$s"; done
    echo "e2e: failures; all logs under $out/<scenario>/ and $out/serial.log"
    exit 1
fi
exit 0
}
# cargo_build DIR TEST...: builds the test binaries TEST (FILTER parts ignored) (and the monitor they run) and copies
# each to DIR/TEST, so that a build on the host during the run changes nothing in the guest.
# They still run the monitor from target/debug (its path is compiled into them).
cargo_build() {
    local dir=$1 list
    shift
    set -- $(printf '%s\n' "${@%%:*}" | sort -u)
    mkdir -p "$dir"
    list=$(cd "$repo" && PATH="$HOME/.cargo/bin:$PATH" cargo test --locked --no-run \
        --message-format=json $(printf -- '--test %s ' "$@")) || return 1
    echo "$list" | python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
' "$dir" || return 1
    for s in "$@"; do [ -x "$dir/$s" ] || { echo "e2e: no test binary for $s" >&2; return 1; }; done
}
main "$@"
