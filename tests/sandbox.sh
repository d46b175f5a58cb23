#!/usr/bin/env bash
# Sandbox demo: a private ovsdb-server, tunnels created with the real ovs-vsctl, the monitor,
# then `ovs-appctl tunnels/show`, the status the monitor wrote to OVSDB and its Prometheus
# metrics (`metrics/show`, and a scrape of --metrics with curl), then `diagnose` of the
# invalid tunnel (the layer that failed, why, and the fix). Touches nothing outside a temporary
# directory.
# Usage: sudo tests/sandbox.sh        (IKE_DAEMON=strongswan|libreswan|none, default strongswan)
#        KEEP=1 sudo tests/sandbox.sh (leave it running and print how to use it)
# The monitor runs with --dry-run: it validates, versions, plans and reports, but touches no IKE
# daemon and no kernel state of this machine. The backends' own tests run real daemons in
# network namespaces (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
tests/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --quiet --bins
BIN=$PWD/target/debug

D=$(mktemp -d /tmp/ovs-ipsec-sandbox.XXXXXX)
export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D OVS_SYSCONFDIR=$D
stop() {
    [ -n "${KEEP:-}" ] && return
    ovs-appctl -t ovs-monitor-ipsec exit --no-cleanup >/dev/null 2>&1 || true
    [ -f "$D/ovsdb-server.pid" ] && kill "$(cat "$D/ovsdb-server.pid")" 2>/dev/null || true
}
trap stop EXIT
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --pidfile="$D/ovsdb-server.pid" \
    --unixctl="$D/ovsdb-server.ctl" --log-file="$D/ovsdb-server.log" --detach --no-chdir
vsctl() { ovs-vsctl --db="unix:$D/db.sock" --no-wait "$@"; }
vsctl init
vsctl add-br br-ipsec

say "ovs-monitor-ipsec unix:$D/db.sock --ike-daemon=${IKE_DAEMON:-strongswan} --dry-run --metrics=unix:$D/metrics.sock --detach ..."
"$BIN/ovs-monitor-ipsec" "unix:$D/db.sock" --ike-daemon="${IKE_DAEMON:-strongswan}" --dry-run \
    --root-prefix="$D/root" --no-restart-ike-daemon --pidfile --log-file --detach --no-chdir \
    --metrics="unix:$D/metrics.sock"

say "ovs-vsctl add-port br-ipsec gnv0 -- set interface gnv0 type=geneve options:remote_ip=192.0.2.2 options:psk=swordfish"
vsctl add-port br-ipsec gnv0 -- set interface gnv0 type=geneve \
    options:remote_ip=192.0.2.2 options:psk=swordfish
say "ovs-vsctl add-port br-ipsec vx0 -- set interface vx0 type=vxlan options:remote_ip=192.0.2.3 options:local_ip=192.0.2.1 options:dst_port=4790 options:psk='a \"quoted\" secret'"
vsctl add-port br-ipsec vx0 -- set interface vx0 type=vxlan options:remote_ip=192.0.2.3 \
    options:local_ip=192.0.2.1 options:dst_port=4790 'options:psk="a \"quoted\" secret"'
say "ovs-vsctl add-port br-ipsec bad0 -- set interface bad0 type=gre options:remote_ip=flow options:psk=x"
vsctl add-port br-ipsec bad0 -- set interface bad0 type=gre options:remote_ip=flow options:psk=x

# Wait until the monitor has written the status of all three tunnels.
for _ in $(seq 50); do
    [ "$(vsctl --bare --columns=external_ids list Interface | grep -c ipsec-state)" -ge 3 ] && break
    sleep 0.1
done

say "ovs-appctl -t ovs-monitor-ipsec tunnels/show"
ovs-appctl -t ovs-monitor-ipsec tunnels/show
say "ovs-vsctl --columns=name,external_ids list Interface"
vsctl --columns=name,external_ids list Interface
say "ovs-vsctl get Open_vSwitch . external_ids"
vsctl get Open_vSwitch . external_ids
say "ovs-appctl -t ovs-monitor-ipsec metrics/show | grep -E '^ovs_ipsec_(tunnels|tunnel_up|monitor_info)'"
ovs-appctl -t ovs-monitor-ipsec metrics/show | grep -E '^ovs_ipsec_(tunnels|tunnel_up|monitor_info)'
say "curl -s --unix-socket $D/metrics.sock http://localhost/metrics | promtool check metrics"
curl -s --unix-socket "$D/metrics.sock" http://localhost/metrics | promtool check metrics \
    && echo "promtool: the exposition is valid"
say "ovs-appctl -t ovs-monitor-ipsec diagnose bad0"
ovs-appctl -t ovs-monitor-ipsec diagnose bad0
say "grep -v DBG $D/ovs-monitor-ipsec.log"
grep -v '|DBG|' "$D/ovs-monitor-ipsec.log" || true

if [ -n "${KEEP:-}" ]; then
    cat <<EOT

The sandbox keeps running in $D. Try:
  export OVS_RUNDIR=$D
  ovs-vsctl --db=unix:$D/db.sock --no-wait set interface gnv0 options:remote_ip=192.0.2.9
  ovs-appctl -t ovs-monitor-ipsec tunnels/show
  ovs-appctl -t ovs-monitor-ipsec metrics/show
  ovs-appctl -t ovs-monitor-ipsec diagnose gnv0 --json
  curl -s --unix-socket $D/metrics.sock http://localhost/metrics
  ovs-appctl -t ovs-monitor-ipsec exit        # removes what the monitor created
EOT
fi
