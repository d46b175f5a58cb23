#!/usr/bin/env bash
# usage: tests/bench/xfrm-guest.sh [SIZES]        (as root; SIZES default 1000,10000)
#
# The static-key cold start with real SAs: the host kernel has no esp4, so `compare.py --modes
# xfrm` here measures policies only (SA adds are refused). This runs the same benchmark inside
# the e2e QEMU guest, whose Debian kernel has esp4/esp6 and AES-GCM, and prints its table:
# ours (`--ike-daemon=none`, cold start to every SA and policy installed) against `ip -batch`
# of the same SA and policy adds, plus +1/modify/-1 and peak RSS.
#
# It reuses the e2e harness unchanged: tests/e2e/prepare.sh (cached kernel and initrd) and the
# guest's PID 1, tests/e2e/guest.sh (mounts, modules, one scenario under a timeout). The
# harness has no hook for a script of ours, so the boot script written here defines the
# scenario `xfrm-bench` itself and exports it to guest.sh's scenario shell. The QEMU command
# line repeats run.sh's; a hook in run.sh (an E2E_GUEST_SOURCE file the guest sources before
# its scenarios) would make this script ten lines shorter.
#
# Environment: E2E_BIN (default target/release/ovs-monitor-ipsec), E2E_SMP / E2E_MEM (guest
# size, default 2 vCPUs and 4096 MB), XFRM_BENCH_TIMEOUT (seconds, default 5400),
# XFRM_BENCH_NO_FLOOR=1 (skip the ip -batch floor: 2036 s at N=10000 under TCG; the cold ratio
# is then not measured and must be quoted from an earlier run), XFRM_BENCH_LOG=1 (keep the
# monitor's debug log of each size in the results directory, as xfrm-N.log).
# TCG emulation makes every absolute time several times slower than on hardware; compare
# ours with the floor measured in the same guest, not with host figures.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
sizes=${1:-1000,10000}
export E2E_CACHE=$repo/target/e2e

die() { echo "xfrm-guest: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root"
bin=${E2E_BIN:-$repo/target/release/ovs-monitor-ipsec}
[ -x "$bin" ] || die "no $bin: cargo build --release (or set E2E_BIN)"
for c in qemu-system-x86_64 python3 ovsdb-server ovs-vsctl ip nft; do
    command -v "$c" > /dev/null || die "missing $c: see docs/e2e.md for the packages"
done

release=$("$repo/tests/e2e/prepare.sh") || die "guest preparation failed"
out=$E2E_CACHE/xfrm-bench/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$out"
timeout=${XFRM_BENCH_TIMEOUT:-5400}
floor_arg=""
[ "${XFRM_BENCH_NO_FLOOR:-0}" = 1 ] && floor_arg=--no-floor
log_dir=""
[ "${XFRM_BENCH_LOG:-0}" = 1 ] && log_dir=/e2e-out
# The guest mounts its own /tmp: hand the binary and guest.sh's scripts over through the results share.
cp "$bin" "$out/ovs-monitor-ipsec"
mkdir -p "$out/scripts" && cp "$repo"/tests/e2e/*.sh "$repo"/tests/e2e/*.py "$out/scripts/"
# boot.sh runs under the initrd's POSIX sh; the scenario needs bash (export -f).
echo "exec /bin/bash /e2e-out/boot.bash" > "$out/boot.sh"
cat > "$out/boot.bash" << EOF
export E2E_REPO='$repo' E2E_BIN=/e2e-out/ovs-monitor-ipsec E2E_SCENARIOS=xfrm-bench E2E_TIMEOUT='$timeout'
export E2E_MODULES='$E2E_CACHE/kernel/lib/modules' XFRM_BENCH_LOG='$log_dir'
scenario_xfrm_bench() {
    python3 '$here/compare.py' --ours "\$E2E_BIN" --modes xfrm --sizes '$sizes' $floor_arg | tee /e2e-out/table.md
}
export -f scenario_xfrm_bench
exec /bin/bash /e2e-out/scripts/guest.sh
EOF

echo "xfrm-guest: kernel $release, binary $bin, sizes $sizes, results $out"
timeout --kill-after=10 $((timeout + 180)) qemu-system-x86_64 -accel tcg -cpu max \
    -smp "${E2E_SMP:-2}" -m "${E2E_MEM:-4096}" -nographic -no-reboot -nodefaults -serial stdio \
    -kernel "$E2E_CACHE/kernel/boot/vmlinuz-$release" -initrd "$E2E_CACHE/initrd.gz" \
    -append "console=ttyS0 panic=-1 rdinit=/init quiet" \
    -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \
    -fsdev "local,id=o,path=$out,security_model=none" -device virtio-9p-pci,fsdev=o,mount_tag=e2eout \
    < /dev/null > "$out/serial.log" 2>&1 || true

grep -q '	PASS	' "$out/results.tsv" 2> /dev/null ||
    die "the guest run failed: $(cat "$out/results.tsv" 2> /dev/null) (see $out/serial.log, $out/xfrm-bench/trace.txt)"
cat "$out/table.md"
