# Guest-side building blocks of the e2e scenarios (sourced; bash). Modelled on OVS's
# tests/system-ipsec.at: two nodes, "left" (192.0.2.1) and "right" (192.0.2.2), are network
# namespaces joined by a veth pair (the underlay); each has its own ovsdb-server, ovs-vswitchd
# on the kernel datapath, a bridge br-ipsec carrying the overlay address 198.51.100.1 or .2,
# the IKE daemon its backend needs, and our monitor.
#
# Each node also has a private mount namespace, held by an "anchor" process: its own /run (two
# charons or plutos would otherwise share pid files and sockets) and an overlay on /etc, so the
# strongSwan backends write /etc/ipsec.conf, /etc/strongswan.d/ovs.conf and restart charon
# exactly as in production, without seeing the other node's files. Every command of a node runs
# through `nx`, inside both namespaces.

E2E_WORK=/tmp/e2e
PSK=swordfish

# The node's working directory (OVS_RUNDIR, logs, databases).
bdir() { echo "$E2E_WORK/$1"; }
underlay_ip() { [ "$1" = left ] && echo 192.0.2.1 || echo 192.0.2.2; }
overlay_ip() { [ "$1" = left ] && echo 198.51.100.1 || echo 198.51.100.2; }
peer_of() { [ "$1" = left ] && echo right || echo left; }
t() { echo "T+$(cut -d' ' -f1 /proc/uptime)s $*"; }

# nx SIDE CMD...: runs CMD in the node's network and mount namespaces with its OVS directories.
nx() {
    local b
    b=$(bdir "$1")
    shift
    nsenter -t "$(cat "$b/anchor.pid")" -m -n -- env OVS_RUNDIR="$b" OVS_LOGDIR="$b" OVS_DBDIR="$b" "$@"
}

vsctl() {
    local s=$1
    shift
    ovs-vsctl --db=unix:"$(bdir "$s")/db.sock" --timeout=60 "$@"
}

# fail MESSAGE: records why the scenario failed, keeps both nodes' logs, and ends the scenario.
fail() {
    t "FAIL: $*"
    echo "$*" >> "$E2E_OUT/failure.txt"
    local s
    for s in left right; do collect_logs "$s"; done
    exit 1
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every half second. The limit is wall time:
# under TCG one poll (ovs-vsctl, ping) can itself take seconds.
wait_until() {
    local what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" > /dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.5
    done
}

# on_both FUNCTION: runs FUNCTION left and FUNCTION right at once (node set-up is mostly
# waiting under TCG); a failure in either has already kept the logs, so only exit here.
on_both() {
    "$1" left &
    local l=$!
    "$1" right &
    local r=$! ok=0
    wait "$l" || ok=1
    wait "$r" || ok=1
    [ $ok -eq 0 ] || exit 1
}

pair_up() {
    rm -rf "$E2E_WORK" && mkdir -p "$E2E_WORK"
    ip netns add left && ip netns add right || fail "cannot create the namespaces"
    ip link add vl type veth peer name vr
    ip link set vl netns left && ip link set vr netns right
    ip -n left addr add 192.0.2.1/24 dev vl && ip -n right addr add 192.0.2.2/24 dev vr
    local s
    for s in left right; do
        ip -n "$s" link set lo up
        ip netns exec "$s" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    done
    ip -n left link set vl up && ip -n right link set vr up
    # Libreswan's %defaultroute needs a default route to identify the local address.
    ip -n left route add default via 192.0.2.2 && ip -n right route add default via 192.0.2.1
}

# node_up SIDE: the anchor (private /run and /etc), ovsdb-server, ovs-vswitchd and br-ipsec.
node_up() {
    local s=$1 b
    b=$(bdir "$s")
    mkdir -p "$b/etc-ovl"
    ip netns exec "$s" unshare -m --propagation private sh -c "
        mount -t tmpfs tmpfs /run && mkdir -p /run/openvswitch &&
        mount -t tmpfs tmpfs $b/etc-ovl && mkdir $b/etc-ovl/u $b/etc-ovl/w &&
        mount -t overlay overlay -o lowerdir=/etc,upperdir=$b/etc-ovl/u,workdir=$b/etc-ovl/w /etc &&
        echo \$\$ > $b/anchor.pid.new && mv $b/anchor.pid.new $b/anchor.pid && exec sleep 100000" \
        > "$b/anchor.log" 2>&1 &
    wait_until 10 "the $s anchor" test -s "$b/anchor.pid"
    nx "$s" ovsdb-tool create "$b/conf.db" /usr/share/openvswitch/vswitch.ovsschema || fail "$s: ovsdb-tool create"
    nx "$s" ovsdb-server "$b/conf.db" --remote=punix:"$b/db.sock" --pidfile="$b/ovsdb-server.pid" \
        --unixctl="$b/ovsdb-server.ctl" --log-file="$b/ovsdb-server.log" --detach --no-chdir ||
        fail "$s: ovsdb-server did not start"
    vsctl "$s" --no-wait init || fail "$s: ovs-vsctl init"
    nx "$s" ovs-vswitchd unix:"$b/db.sock" --pidfile="$b/vswitchd.pid" --unixctl="$b/vswitchd.ctl" \
        --log-file="$b/vswitchd.log" --detach --no-chdir || fail "$s: ovs-vswitchd did not start"
    vsctl "$s" add-br br-ipsec || fail "$s: add-br"
    ip -n "$s" addr add "$(overlay_ip "$s")/24" dev br-ipsec && ip -n "$s" link set br-ipsec up ||
        fail "$s: br-ipsec has no overlay address"
}

# monitor_up SIDE ARGS...: our monitor, detached once its first pass is applied.
monitor_up() {
    local s=$1 b
    shift
    b=$(bdir "$s")
    nx "$s" "$E2E_BIN" unix:"$b/db.sock" "$@" --unixctl="$b/mon.ctl" --log-file="$b/mon.log" \
        -vfile:dbg --pidfile="$b/mon.pid" --detach --no-chdir > "$b/mon.stderr" 2>&1 ||
        fail "$s: the monitor did not start: $(tail -n 3 "$b/mon.stderr")"
}

# tunnel_add SIDE TYPE [OPTION=VALUE...]: the PSK tunnel "tun" to the other node.
tunnel_add() {
    local s=$1 type=$2 o opts=()
    shift 2
    for o in "$@"; do opts+=("options:$o"); done
    vsctl "$s" add-port br-ipsec tun -- set interface tun type="$type" \
        options:remote_ip="$(underlay_ip "$(peer_of "$s")")" options:psk="$PSK" "${opts[@]}" ||
        fail "$s: add-port tun"
}

# ext_id SIDE KEY: the tunnel's external_ids:KEY, unquoted ("" when absent).
ext_id() {
    vsctl "$1" --if-exists get interface tun "external_ids:$2" 2> /dev/null | tr -d '"'
}

state_is() { [ "$(ext_id "$1" ipsec-state)" = "$2" ]; }

both_up() { state_is left up && state_is right up; }

# Traffic triggers the IKE daemons' on-demand (trap) SAs, so every poll pings first, in both
# directions (strongSwan legacy mode negotiates nothing until a packet hits a trap policy).
overlay_ping_ok() { ip netns exec "$1" ping -c 1 -W 1 "$(overlay_ip "$(peer_of "$1")")"; }
converged() {
    local ok=0
    overlay_ping_ok left || ok=1
    overlay_ping_ok right || ok=1
    [ $ok -eq 0 ] && both_up
}

wait_converged() {
    wait_until "${1:-120}" "ipsec-state=up on both nodes and a first overlay ping" converged
    t "converged: left $(ext_id left ipsec-state), right $(ext_id right ipsec-state)"
}

# assert_esp_ping PORT: ping 3/3 over the overlay while tcpdump watches the underlay; the
# tunnel's packets must appear as ESP in both directions and never as cleartext UDP to PORT.
assert_esp_ping() {
    local port=$1 cap=$E2E_OUT/tcpdump-underlay.txt
    ip netns exec left tcpdump -nn -l -U -i vl "esp or udp port $port" > "$cap" 2> "$cap.err" &
    local td=$!
    wait_until 15 "tcpdump to start" grep -q 'listening on' "$cap.err"
    local res
    res=$(ip netns exec left ping -c 3 -i 0.3 -W 2 "$(overlay_ip right)" | grep 'packets transmitted')
    sleep 1
    kill "$td" 2> /dev/null
    wait "$td" 2> /dev/null
    t "ping: $res"
    local fwd rev clear
    fwd=$(grep -c 'IP 192.0.2.1 > 192.0.2.2: ESP' "$cap")
    rev=$(grep -c 'IP 192.0.2.2 > 192.0.2.1: ESP' "$cap")
    # tcpdump ends its output with an empty line when killed.
    clear=$(grep -v -e 'ESP' -e '^$' -c "$cap")
    t "underlay: $fwd ESP left->right, $rev ESP right->left, $clear cleartext on udp/$port"
    case "$res" in *" 3 received"*) ;; *) fail "overlay ping not 3/3: $res" ;; esac
    [ "$fwd" -ge 3 ] && [ "$rev" -ge 3 ] || fail "ESP not seen both ways on the underlay ($fwd/$rev)"
    [ "$clear" -eq 0 ] || fail "$clear cleartext tunnel packets on the underlay"
    both_up || fail "ipsec-state not up after the ping: left $(ext_id left ipsec-state), right $(ext_id right ipsec-state)"
}

# collect_logs SIDE: what is needed to debug a failure (keys and PSKs redacted).
collect_logs() {
    local s=$1 b d
    b=$(bdir "$s")
    d=$E2E_OUT/$s
    [ -s "$b/anchor.pid" ] || return 0
    mkdir -p "$d"
    cp "$b"/*.log "$b"/mon.stderr "$d/" 2> /dev/null
    local redact='s/(psk|psk_next)=("[^"]*"|[^,} ]*)/\1=<redacted>/g; s/(aead|enc|auth|auth-trunc) ([^ ]+) 0x[0-9a-f]+/\1 \2 <redacted>/'
    {
        vsctl "$s" show
        vsctl "$s" list interface tun
        ovs-appctl -t "$b/mon.ctl" tunnels/show
        ip -n "$s" xfrm policy
        ip -n "$s" xfrm state
        nx "$s" nft list ruleset
        ip -n "$s" -s link
    } 2>&1 | sed -E "$redact" > "$d/state.txt"
    nx "$s" ipsec statusall > "$d/ipsec-statusall.txt" 2>&1
    nx "$s" swanctl --list-sas > "$d/swanctl-sas.txt" 2>&1
    [ -d "$b/root" ] && nx "$s" /opt/lsw/ipsec status --ctlsocket "$b/root/run/pluto/pluto.ctl" > "$d/pluto-status.txt" 2>&1
    dmesg | tail -n 50 > "$E2E_OUT/dmesg.txt"
}

# teardown: stops everything both nodes started and removes the namespaces (safe to repeat).
teardown() {
    local s b p
    for s in left right; do
        b=$(bdir "$s")
        if [ -s "$b/anchor.pid" ]; then
            nx "$s" ipsec stop > /dev/null 2>&1
            for p in $(ip netns pids "$s" 2> /dev/null); do kill -9 "$p" 2> /dev/null; done
            kill -9 "$(cat "$b/anchor.pid")" 2> /dev/null
        fi
        ip netns del "$s" 2> /dev/null
    done
    rm -rf "$E2E_WORK"
}
