#!/bin/bash
# PID 1 of the guest after switch_root. Mounts what a normal init would, loads the modules the
# scenarios need, runs each scenario in its own bash under a timeout (so a hung scenario cannot
# take the run with it), tears the nodes down after a failure, appends one line to results.tsv,
# and powers off. Everything it writes for the host goes to /e2e-out (the 9p results share).
# In the cargo tier (E2E_CARGO_DIR set, run.sh --cargo-tier) each "scenario" is a cargo test
# binary in /e2e-out/cargo, run from the repository as cargo would, with its probe line kept.
# The body is one function so that bash has parsed all of it before running any of it (bash
# reads a script as it goes).
main() {
    export PATH=/usr/sbin:/usr/bin:/sbin:/bin
    out=/e2e-out
    mount -t proc proc /proc 2> /dev/null
    mount -t sysfs sys /sys 2> /dev/null
    mount -t devtmpfs dev /dev 2> /dev/null
    mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
    mount -t tmpfs tmpfs /run && mkdir -p /run/netns /run/openvswitch
    mount -t tmpfs tmpfs /tmp
    # /lib is a symlink to usr/lib on Debian: bind the unpacked modules where modprobe looks.
    mkdir -p /usr/lib/modules && mount --bind "$E2E_MODULES" /usr/lib/modules
    ip link set lo up

    up() { cut -d' ' -f1 /proc/uptime; }
    echo "E2E-GUEST: userspace at $(up)s, kernel $(uname -r)"
    # One modprobe for all (each process start is slow under TCG); it reports each failure.
    modprobe -a xfrm_user esp4 esp6 openvswitch geneve vxlan veth gcm aesni_intel seqiv echainiv \
        nf_tables nft_xfrm 2>> "$out/modprobe.log" || echo "E2E-GUEST: modprobe failed: $(cat "$out/modprobe.log")"
    echo "E2E-GUEST: modules loaded at $(up)s"

    cd /e2e-out/scripts || { echo "E2E-GUEST: no scripts in /e2e-out"; poweroff -f; }
    . ./scenarios.sh
    for s in $E2E_SCENARIOS; do
        mkdir -p "$out/$s"
        start=$(up)
        limit=$(scenario_limit "$s")
        echo "E2E-GUEST: scenario $s at ${start}s"
        if [ -n "${E2E_CARGO_DIR:-}" ]; then
            # NAME or NAME:F1,F2... (only NAME's tests whose names contain one of them).
            filter=()
            [ "${s#*:}" = "$s" ] || IFS=, read -ra filter <<< "${s#*:}"
            (cd "$E2E_CARGO_DIR" && timeout --kill-after=5 "$limit" "$out/cargo/${s%%:*}" \
                --test-threads="$E2E_CARGO_THREADS" "${filter[@]}") > "$out/$s/trace.txt" 2>&1
            rc=$?
            grep -o -m1 'kernel ESP probe:.*' "$out/$s/trace.txt" > "$out/$s/probe.txt"
            [ $rc -eq 0 ] || echo "exit $rc: $(grep '^test .* FAILED$' "$out/$s/trace.txt" | tr '\n' ' ')" \
                > "$out/$s/failure.txt"
        else
            timeout --kill-after=5 "$limit" bash -c '. ./lib.sh && . ./scenarios.sh && e2e_run "$1"' _ "$s" \
                > "$out/$s/trace.txt" 2>&1
            rc=$?
        fi
        # A scenario killed by the timeout could not keep its logs itself. After a failure the
        # next scenario starts from fresh nodes; after a success it may reuse them (lib.sh).
        [ $rc -eq 124 ] && [ -z "${E2E_CARGO_DIR:-}" ] && E2E_OUT=$out/$s bash -c '. ./lib.sh && collect_logs left; collect_logs right'
        [ $rc -eq 0 ] || bash -c '. ./lib.sh && teardown' >> "$out/$s/trace.txt" 2>&1
        secs=$(awk -v a="$start" -v b="$(up)" 'BEGIN{printf "%.0f", b-a}')
        if [ $rc -eq 0 ]; then
            printf '%s\tPASS\t%s\t\n' "$s" "$secs" >> "$out/results.tsv"
        else
            why=$(tail -n 1 "$out/$s/failure.txt" 2> /dev/null)
            [ $rc -eq 124 ] && why="timed out after ${limit}s; $why"
            printf '%s\tFAIL\t%s\t%s\n' "$s" "$secs" "${why:-exit $rc}" >> "$out/results.tsv"
        fi
        echo "E2E-GUEST: scenario $s rc=$rc in ${secs}s"
    done
    bash -c '. ./lib.sh && teardown' > /dev/null 2>&1
    echo "E2E-GUEST: done at $(up)s"
    sync
    poweroff -f
}
main
