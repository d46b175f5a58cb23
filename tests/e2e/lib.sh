# Guest-side building blocks of the e2e scenarios (sourced; bash). Modelled on OVS's
# tests/system-ipsec.at: nodes are network namespaces, "left" and "right" (plus n3, n4 in the
# multi-node scenarios), each attached by a veth to one Linux bridge in the guest's own
# namespace (the underlay, as OVS's br0): node N has 192.0.2.N and fd01::N (left is 1, right
# 2). Each has its own ovsdb-server, ovs-vswitchd on the kernel datapath, a bridge br-ipsec
# carrying the overlay address 198.51.100.N, the IKE daemon its backend needs, and our monitor.
#
# Each node also has a private mount namespace, held by an "anchor" process: its own /run (two
# charons or plutos would otherwise share pid files and sockets) and an overlay on /etc, so the
# strongSwan backends write /etc/ipsec.conf, /etc/strongswan.d/ovs.conf and restart charon
# exactly as in production, without seeing the other node's files. Every command of a node runs
# through `nx`, inside both namespaces.
#
# Nodes outlive a scenario: setting them up (two OVS, two daemons, two monitors) is most of a
# scenario's time under TCG, so consecutive scenarios of one backend ("kind") share them. A
# scenario that passes has removed its tunnel and checked that nothing of it is left in the
# kernel; one that fails is followed by a teardown (guest.sh), so the next starts afresh.

E2E_WORK=/tmp/e2e
PSK=swordfish
# ipv4 or ipv6: the underlay family of the scenario's tunnel (the overlay is always IPv4).
E2E_FAMILY=${E2E_FAMILY:-ipv4}

# The node's working directory (OVS_RUNDIR, logs, databases).
bdir() { echo "$E2E_WORK/$1"; }
# node_index NODE: left is 1, right 2, nN is N; the last byte of each of its addresses.
node_index() {
    case "$1" in left) echo 1 ;; right) echo 2 ;; *) echo "${1#n}" ;; esac
}
underlay_ip() {
    case "$E2E_FAMILY" in
        ipv4) echo "192.0.2.$(node_index "$1")" ;;
        ipv6) echo "fd01::$(node_index "$1")" ;;
    esac
}
overlay_ip() { echo "198.51.100.$(node_index "$1")"; }
peer_of() { [ "$1" = left ] && echo right || echo left; }
# ul_dev NODE: the node's underlay interface.
ul_dev() {
    case "$1" in left) echo vl ;; right) echo vr ;; *) echo "v$(node_index "$1")" ;; esac
}
# port_to NODE PEER: the name of NODE's tunnel port to PEER: "tun" between left and right (the
# two-node scenarios), "tunJ" (J = the peer's index) otherwise.
port_to() {
    case "$1/$2" in left/right | right/left) echo tun ;; *) echo "tun$(node_index "$2")" ;; esac
}
# all_nodes: the nodes set up now (left and right when none is).
all_nodes() { cat "$E2E_WORK/nodes" 2> /dev/null || echo left right; }
t() { echo "T+$(cut -d' ' -f1 /proc/uptime)s $*"; }

# nx SIDE CMD...: runs CMD in the node's network and mount namespaces with its OVS directories.
nx() {
    local b
    b=$(bdir "$1")
    shift
    nsenter -t "$(cat "$b/anchor.pid")" -m -n -- env OVS_RUNDIR="$b" OVS_LOGDIR="$b" OVS_DBDIR="$b" "$@"
}

# vsctl SIDE ARGS...: ovs-vsctl on the node's database. Changes to tunnels and certificates
# pass --no-wait: nothing here needs ovs-vswitchd to have applied them (the checks poll what
# they need), and waiting for it costs seconds per call under TCG.
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
    for s in $(all_nodes); do collect_logs "$s"; done
    exit 1
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every half second. The limit is wall time
# and generous: under TCG on a loaded host one poll (ovs-vsctl, ping) can itself take seconds.
wait_until() {
    local what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" > /dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.5
    done
}

# on_both FUNCTION ARGS...: runs FUNCTION left ARGS and FUNCTION right ARGS at once (node set-up
# is mostly waiting under TCG); a failure in either has already kept the logs, so only exit here.
on_both() {
    local f=$1
    shift
    "$f" left "$@" &
    local l=$!
    "$f" right "$@" &
    local r=$! ok=0
    wait "$l" || ok=1
    wait "$r" || ok=1
    [ $ok -eq 0 ] || exit 1
}

# The underlay bridge, in the guest's own namespace (no multicast snooping: nothing answers
# MLD queries there, and IPv6 neighbour discovery must reach every node).
E2E_BRIDGE=e2e-ul

pair_up() {
    rm -rf "$E2E_WORK" && mkdir -p "$E2E_WORK"
    ip link add "$E2E_BRIDGE" type bridge mcast_snooping 0 && ip link set "$E2E_BRIDGE" up ||
        fail "cannot create the underlay bridge"
    link_node left
    link_node right
}

# link_node NODE: the node's namespace, attached to the underlay bridge, with its addresses.
link_node() {
    local s=$1 i d gw
    i=$(node_index "$s")
    d=$(ul_dev "$s")
    ip netns add "$s" || fail "cannot create the namespace $s"
    echo "$s" >> "$E2E_WORK/nodes"
    ip link add "$d" type veth peer name "e2e-ul$i" && ip link set "$d" netns "$s" &&
        ip link set "e2e-ul$i" master "$E2E_BRIDGE" up || fail "$s: cannot attach it to the underlay"
    ip -n "$s" addr add "192.0.2.$i/24" dev "$d" && ip -n "$s" addr add "fd01::$i/64" dev "$d" nodad &&
        ip -n "$s" link set lo up && ip -n "$s" link set "$d" up || fail "$s: cannot address the underlay"
    # Libreswan's %defaultroute(6) needs a default route to identify the local address.
    gw=1
    [ "$i" = 1 ] && gw=2
    ip -n "$s" route add default via "192.0.2.$gw" && ip -n "$s" -6 route add default via "fd01::$gw" ||
        fail "$s: cannot add the default routes"
}

# nodes_alive: every node's anchor and monitor are running.
nodes_alive() {
    local s b
    for s in $(all_nodes); do
        b=$(bdir "$s")
        kill -0 "$(cat "$b/anchor.pid" 2> /dev/null)" 2> /dev/null || return 1
        kill -0 "$(cat "$b/mon.pid" 2> /dev/null)" 2> /dev/null || return 1
    done
}

# nodes_for KIND: makes sure both nodes run the backend KIND (node_KIND in scenarios.sh),
# reusing the nodes of the previous scenario when it was of the same kind.
nodes_for() {
    if [ "$(cat "$E2E_WORK/kind" 2> /dev/null)" = "$1" ] && nodes_alive; then
        t "reusing the $1 nodes"
        return 0
    fi
    teardown
    pair_up
    echo "$1" > "$E2E_WORK/kind"
    on_both "node_$1"
}

# node_add NODE: one more node (n3, n4...) of the current kind, on the same underlay.
node_add() {
    link_node "$1"
    "node_$(cat "$E2E_WORK/kind")" "$1"
}

# node_remove NODE: stops everything NODE started and removes it, so the nodes left are again
# those the next scenario of the kind expects.
node_remove() {
    node_kill "$1"
    sed -i "/^$1\$/d" "$E2E_WORK/nodes"
    t "$1: node removed"
}

# OVS 3.1.0 (Debian 12's) sizes its upcall handler threads from a CPU count it reads only once
# its monotonic clock has passed 10 s. An ovs-vswitchd started earlier in the guest's life (the
# first scenario of a quickly booted guest) starts with no handler: its kernel datapath loses
# every upcall for good (dpctl/show "lost" = "missed", no flow is ever installed, the overlay
# stays dark however correct the SAs), even after it later starts handlers. So no node's
# ovs-vswitchd starts before the clock has passed 12 s, and node_up fails at once if one still
# started without handlers (its log says "n-handler-threads to 0").
ovs_clock_ok() { [ "$(cut -d. -f1 /proc/uptime)" -ge 12 ]; }

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
    wait_until 60 "the $s anchor" test -s "$b/anchor.pid"
    nx "$s" ovsdb-tool create "$b/conf.db" /usr/share/openvswitch/vswitch.ovsschema || fail "$s: ovsdb-tool create"
    nx "$s" ovsdb-server "$b/conf.db" --remote=punix:"$b/db.sock" --pidfile="$b/ovsdb-server.pid" \
        --unixctl="$b/ovsdb-server.ctl" --log-file="$b/ovsdb-server.log" --detach --no-chdir ||
        fail "$s: ovsdb-server did not start"
    vsctl "$s" --no-wait init || fail "$s: ovs-vsctl init"
    wait_until 30 "the guest's clock to pass 12 s (see ovs_clock_ok)" ovs_clock_ok
    nx "$s" ovs-vswitchd unix:"$b/db.sock" --pidfile="$b/vswitchd.pid" --unixctl="$b/vswitchd.ctl" \
        --log-file="$b/vswitchd.log" --detach --no-chdir || fail "$s: ovs-vswitchd did not start"
    vsctl "$s" add-br br-ipsec || fail "$s: add-br"
    ! grep -q 'n-handler-threads to 0' "$b/vswitchd.log" ||
        fail "$s: ovs-vswitchd started without upcall handler threads (its datapath would drop every packet)"
    ip -n "$s" addr add "$(overlay_ip "$s")/24" dev br-ipsec && ip -n "$s" link set br-ipsec up ||
        fail "$s: br-ipsec has no overlay address"
    t "$s: node up"
}

# monitor_up SIDE ARGS...: our monitor, detached once its first pass is applied. The arguments
# are kept for monitor_restart.
monitor_up() {
    local s=$1 b
    shift
    b=$(bdir "$s")
    printf '%q ' "$@" > "$b/mon.args"
    nx "$s" "$E2E_BIN" unix:"$b/db.sock" "$@" --unixctl="$b/mon.ctl" --log-file="$b/mon.log" \
        -vfile:dbg --pidfile="$b/mon.pid" --detach --no-chdir >> "$b/mon.stderr" 2>&1 ||
        fail "$s: the monitor did not start: $(tail -n 3 "$b/mon.stderr")"
    t "$s: monitor up"
}

# monitor_kill SIDE: SIGKILL, as a crash or an OOM kill would; waits until it is gone.
monitor_kill() {
    local b pid
    b=$(bdir "$1")
    pid=$(cat "$b/mon.pid")
    kill -9 "$pid" || fail "$1: cannot kill the monitor"
    wait_until 30 "$1: the killed monitor to exit" sh -c "! kill -0 $pid"
    t "$1: monitor killed"
}

# monitor_restart SIDE [EXTRA_ARGS...]: starts the monitor again with its original arguments.
monitor_restart() {
    local s=$1 b
    shift
    b=$(bdir "$s")
    eval "local args=($(cat "$b/mon.args"))"
    monitor_up "$s" "${args[@]}" "$@"
    printf '%q ' "${args[@]}" > "$b/mon.args"
}

# log_mark SIDE: the monitor log's current length; log_since SIDE MARK prints what came after.
log_mark() { wc -l < "$(bdir "$1")/mon.log"; }
log_since() { tail -n +"$(($2 + 1))" "$(bdir "$1")/mon.log"; }

# expect_log SIDE MARK TEXT: the monitor logged TEXT (a fixed string) after MARK. These are
# the lines OVS's system-ipsec.at greps; waits, since a line may follow the state change.
log_has() { log_since "$1" "$2" | grep -qF -- "$3"; }
expect_log() {
    wait_until 60 "$1: the monitor to log \"$3\"" log_has "$@"
}

# pki_config SIDE AUTH [DIR]: the node's certificate settings in Open_vSwitch other_config
# (psk: none; self: own certificate and key; ca: also the CA): DIR/SIDE-cert.pem,
# DIR/SIDE-privkey.pem, DIR/cacert.pem, by default the files prepare.sh made for AUTH.
pki_config() {
    local s=$1 auth=$2 d=${3:-$E2E_PKI/$2}
    vsctl "$s" --no-wait remove Open_vSwitch . other_config certificate private_key ca_cert || fail "$s: clear pki"
    case "$auth" in
        psk) ;;
        self) vsctl "$s" --no-wait set Open_vSwitch . other_config:certificate="$d/$s-cert.pem" \
            other_config:private_key="$d/$s-privkey.pem" || fail "$s: set pki" ;;
        ca) vsctl "$s" --no-wait set Open_vSwitch . other_config:certificate="$d/$s-cert.pem" \
            other_config:private_key="$d/$s-privkey.pem" other_config:ca_cert="$d/cacert.pem" ||
            fail "$s: set pki" ;;
        *) fail "unknown auth $auth" ;;
    esac
}

# tunnel_add SIDE TYPE AUTH [OPTION=VALUE...]: the tunnel "tun" to the other node of the pair.
tunnel_add() {
    local s=$1
    shift
    tunnel_to "$s" "$(peer_of "$s")" "$@"
}

# tunnel_to NODE PEER TYPE AUTH [OPTION=VALUE...]: NODE's tunnel to PEER (port_to), authenticated
# by the PSK, the peer's self-signed certificate (remote_cert) or the CA (remote_name = its CN).
tunnel_to() {
    local s=$1 peer=$2 type=$3 auth=$4 o opts=() port
    shift 4
    port=$(port_to "$s" "$peer")
    case "$auth" in
        psk) opts+=(options:psk="$PSK") ;;
        self) opts+=(options:remote_cert="$E2E_PKI/self/$peer-cert.pem") ;;
        ca) opts+=(options:remote_name="$peer") ;;
    esac
    for o in "$@"; do opts+=("options:$o"); done
    vsctl "$s" --no-wait add-port br-ipsec "$port" -- set interface "$port" type="$type" \
        options:remote_ip="$(underlay_ip "$peer")" "${opts[@]}" || fail "$s: add-port $port"
}

# ext_id SIDE KEY [PORT]: the tunnel's external_ids:KEY, unquoted ("" when absent).
ext_id() {
    vsctl "$1" --if-exists get interface "${3:-tun}" "external_ids:$2" 2> /dev/null | tr -d '"'
}

state_is() { [ "$(ext_id "$1" ipsec-state)" = "$2" ]; }
state_is_not() { ! state_is "$1" "$2"; }

both_up() { state_is left up && state_is right up; }
# pair_is_up A B: both ends of the tunnel between A and B report ipsec-state=up.
pair_is_up() {
    [ "$(ext_id "$1" ipsec-state "$(port_to "$1" "$2")")" = up ] &&
        [ "$(ext_id "$2" ipsec-state "$(port_to "$2" "$1")")" = up ]
}

# Traffic triggers the IKE daemons' on-demand (trap) SAs, so every poll pings first, in both
# directions (strongSwan legacy mode negotiates nothing until a packet hits a trap policy).
overlay_ping_ok() { ip netns exec "$1" ping -c 1 -W 1 "$(overlay_ip "${2:-$(peer_of "$1")}")"; }
# converged [A B]: a ping each way between A and B (default left and right) and both ends up.
converged() {
    local a=${1:-left} b=${2:-right} ok=0
    overlay_ping_ok "$a" "$b" || ok=1
    overlay_ping_ok "$b" "$a" || ok=1
    [ $ok -eq 0 ] && pair_is_up "$a" "$b"
}

# wait_converged [SECONDS [A B]]
wait_converged() {
    local a=${2:-left} b=${3:-right}
    wait_until "${1:-300}" "ipsec-state=up on $a and $b and a first overlay ping" converged "$a" "$b"
    t "converged: $a and $b up"
}

# clear_filter TYPE PORT: tcpdump's filter for the tunnel's own packets in clear on the underlay.
clear_filter() {
    case "$1" in
        gre) echo "ip proto 47 or ip6 proto 47" ;;
        *) echo "udp port $2" ;;
    esac
}

# assert_esp_ping TYPE PORT [A B]: ping 3/3 from A to B (default left and right) over the overlay
# while tcpdump watches A's underlay; the tunnel's packets must appear as ESP in both directions
# and never in clear (udp to PORT, or GRE).
# sa_packets SIDE DIRECTION: the node's ovs_ipsec_sa_packets_total summed over its tunnels, as
# metrics/show reports it (it reads the kernel's SA counters when it runs); empty when the
# node's monitor does not answer.
sa_packets() {
    local m
    m=$(ovs-appctl -t "$(bdir "$1")/mon.ctl" metrics/show 2> /dev/null) || return 0
    echo "$m" | awk -v d="direction=\"$2\"" \
        '$1 ~ /^ovs_ipsec_sa_packets_total\{/ && index($1, d) { n += $2 } END { print n + 0 }'
}

assert_esp_ping() {
    local a=${3:-left} b=${4:-right} cap=$E2E_OUT/tcpdump-underlay.txt clear
    local in0 out0 in1 out1
    clear=$(clear_filter "$1" "$2")
    in0=$(sa_packets "$a" in)
    out0=$(sa_packets "$a" out)
    ip netns exec "$a" tcpdump -nn -l -U -i "$(ul_dev "$a")" "ip proto 50 or ip6 proto 50 or $clear" > "$cap" 2> "$cap.err" &
    local td=$!
    wait_until 30 "tcpdump to start" grep -q 'listening on' "$cap.err"
    local res
    res=$(ip netns exec "$a" ping -c 3 -i 0.3 -W 2 "$(overlay_ip "$b")" | grep 'packets transmitted')
    sleep 1
    kill "$td" 2> /dev/null
    wait "$td" 2> /dev/null
    t "ping $a -> $b: $res"
    local l r fwd rev nclear
    l=$(underlay_ip "$a")
    r=$(underlay_ip "$b")
    fwd=$(grep -c "IP6\? $l > $r: ESP" "$cap")
    rev=$(grep -c "IP6\? $r > $l: ESP" "$cap")
    # tcpdump ends its output with an empty line when killed.
    nclear=$(grep -v -e 'ESP' -e '^$' -c "$cap")
    t "underlay: $fwd ESP $a->$b, $rev ESP $b->$a, $nclear in clear ($clear)"
    case "$res" in *" 3 received"*) ;; *) fail "overlay ping not 3/3: $res" ;; esac
    [ "$fwd" -ge 3 ] && [ "$rev" -ge 3 ] || fail "ESP not seen both ways on the underlay ($fwd/$rev)"
    [ "$nclear" -eq 0 ] || fail "$nclear tunnel packets in clear on the underlay"
    pair_is_up "$a" "$b" || fail "ipsec-state not up on $a and $b after the ping"
    # The monitor's metrics saw the ping in the kernel's SA counters, both ways.
    in1=$(sa_packets "$a" in)
    out1=$(sa_packets "$a" out)
    t "metrics on $a: ovs_ipsec_sa_packets_total in ${in0:-?} -> ${in1:-?}, out ${out0:-?} -> ${out1:-?}"
    if [ -n "$in0" ] && [ -n "$in1" ]; then
        [ $((in1 - in0)) -ge 3 ] && [ $((out1 - out0)) -ge 3 ] \
            || fail "ovs_ipsec_sa_packets_total did not grow by the ping's 3 packets both ways"
    fi
}

# spis SIDE: the node's XFRM SAs as sorted "src dst spi" lines (which SAs exist, not their keys).
spis() {
    ip -n "$1" xfrm state | awk '$1 == "src" { sd = $2 " " $4 } $1 == "proto" { print sd, $4 }' | sort
}

# no_xfrm SIDE: the node holds no XFRM state and no policy selecting tunnel traffic (udp or
# gre). The IKE daemons' own policies stay: per-socket IKE bypasses, and pluto's IPv6
# neighbour-discovery bypasses (ipv6-icmp types 135/136).
no_xfrm() { [ -z "$(ip -n "$1" xfrm state)" ] && ! ip -n "$1" xfrm policy | grep -Eq '^src .* proto (udp|gre)'; }

# tunnel_remove: deletes "tun" on both nodes and waits until each backend has removed every SA
# and policy of it from the kernel.
tunnel_remove() {
    local s
    for s in left right; do vsctl "$s" --no-wait del-port br-ipsec tun || fail "$s: del-port tun"; done
    for s in left right; do wait_until 120 "$s: the tunnel's SAs and policies to be removed" no_xfrm "$s"; done
    t "tunnel removed, no SA or policy left"
}

# assert_diagnose_healthy: with an overlay ping running, `diagnose tun` on both nodes (at once:
# each takes seconds under TCG) finds no error and sees ESP packets both ways in its counter
# sample. The replies are printed to the trace and kept (diagnose-SIDE.txt).
diagnose_to() { ovs-appctl -t "$(bdir "$1")/mon.ctl" diagnose tun > "$E2E_OUT/diagnose-$1.txt" 2>&1; }
assert_diagnose_healthy() {
    local s t0=$SECONDS pl pr
    ping_start left diagnose
    ping_wait_more diagnose 3
    diagnose_to left &
    pl=$!
    diagnose_to right &
    pr=$!
    wait "$pl" || fail "left: diagnose: $(cat "$E2E_OUT/diagnose-left.txt")"
    wait "$pr" || fail "right: diagnose: $(cat "$E2E_OUT/diagnose-right.txt")"
    ping_stop diagnose
    for s in left right; do
        sed "s/^/$s diagnose: /" "$E2E_OUT/diagnose-$s.txt"
        ! grep -q '^  error ' "$E2E_OUT/diagnose-$s.txt" || fail "$s: diagnose reports an error"
        grep -Eq '^  ok   traffic +\+[1-9][0-9]* packets out, \+[1-9][0-9]* in' "$E2E_OUT/diagnose-$s.txt" ||
            fail "$s: diagnose did not see traffic both ways"
    done
    t "diagnose on both nodes: no error, traffic both ways ($((SECONDS - t0)) s with the ping)"
}

# A ping over the overlay running in the background (ping -i 0.2), for "0 lost" checks.
# ping_start SIDE NAME; ping_replies NAME; ping_wait_more NAME N; ping_stop NAME.
ping_start() {
    ip netns exec "$1" ping -i 0.2 "$(overlay_ip "$(peer_of "$1")")" > "$E2E_OUT/ping-$2.txt" 2>&1 &
    echo $! > "$E2E_WORK/ping-$2.pid"
}
ping_replies() { grep -c 'bytes from.*icmp_seq=' "$E2E_OUT/ping-$1.txt"; }
ping_has_more() { [ "$(ping_replies "$1")" -ge "$2" ]; }
ping_wait_more() {
    local want=$(($(ping_replies "$1") + $2))
    wait_until 120 "$2 more replies to the running ping" ping_has_more "$1" "$want"
}

# ping_seqs NAME: the icmp_seq of every answered request so far, in order.
ping_seqs() { sed -n '/bytes from/s/.*icmp_seq=\([0-9]*\) .*/\1/p' "$E2E_OUT/ping-$1.txt" | sort -n -u; }
ping_last() { ping_seqs "$1" | tail -n 1; }

# ping_stop NAME [FROM-TO...]: stops the ping and fails if any echo request before the last
# answered one went unanswered (a request still in flight when ping is stopped is not a loss),
# except within the icmp_seq ranges given, whose losses are counted apart. ping-NAME.result gets
# "SENT LOST APART": the requests up to the last answered one, how many of them were lost
# outside the ranges, and how many within.
ping_stop() {
    local name=$1 f=$E2E_OUT/ping-$1.txt seqs last missing apart lost
    shift
    kill -INT "$(cat "$E2E_WORK/ping-$name.pid")" 2> /dev/null
    wait "$(cat "$E2E_WORK/ping-$name.pid")" 2> /dev/null
    seqs=$(ping_seqs "$name")
    last=$(echo "$seqs" | tail -n 1)
    last=${last:-0}
    missing=$(echo "$seqs" | awk 'BEGIN{e=1} NF {while (e < $1) print e++; e = $1 + 1}')
    apart=$(echo "$missing" | awk -v r="$*" 'BEGIN{n = split(r, rs, " ")}
        NF { for (i = 1; i <= n; i++) { split(rs[i], b, "-"); if ($1 >= b[1] && $1 <= b[2]) { c++; next } } }
        END { print c + 0 }')
    lost=$(($(echo "$missing" | awk 'NF { c++ } END { print c + 0 }') - apart))
    t "ping $name: $((last - lost - apart)) replies up to icmp_seq=$last, $lost lost${*:+, $apart more within $*}; $(grep 'packets transmitted' "$f")"
    echo "$last $lost $apart" > "$E2E_OUT/ping-$name.result"
    [ "$last" -gt 0 ] && [ "$lost" -eq 0 ] ||
        fail "the running ping lost $lost of $last echo requests${*:+ outside $*} (missing: $(echo $missing))"
}

# collect_logs SIDE: what is needed to debug a failure (keys and PSKs redacted).
collect_logs() {
    local s=$1 b d
    b=$(bdir "$s")
    d=$E2E_OUT/$s
    [ -s "$b/anchor.pid" ] || return 0
    mkdir -p "$d"
    cp "$b"/*.log "$b"/mon.stderr "$d/" 2> /dev/null
    local redact='s/(psk|psk_next|ipsec_psk_next)=("[^"]*"|[^,} ]*)/\1=<redacted>/g; s/(aead|enc|auth|auth-trunc) ([^ ]+) 0x[0-9a-f]+/\1 \2 <redacted>/'
    {
        vsctl "$s" show
        vsctl "$s" list interface tun
        ovs-appctl -t "$b/mon.ctl" tunnels/show
        ip -n "$s" xfrm policy
        ip -n "$s" -s xfrm state
        nx "$s" cat /proc/net/xfrm_stat
        nx "$s" nft list ruleset
        ip -n "$s" -s link
        ip -n "$s" route
        ovs-appctl -t "$b/vswitchd.ctl" dpctl/show -s
        ovs-appctl -t "$b/vswitchd.ctl" dpctl/dump-flows -m
        ovs-appctl -t "$b/mon.ctl" diagnose tun
    } 2>&1 | sed -E "$redact" > "$d/state.txt"
    # Only the running daemon's view (each command is slow under TCG).
    case "$(cat "$E2E_WORK/kind" 2> /dev/null)" in
        stroke) nx "$s" ipsec statusall > "$d/ipsec-statusall.txt" 2>&1 ;;
        vici) nx "$s" swanctl --list-sas > "$d/swanctl-sas.txt" 2>&1 ;;
        libreswan) nx "$s" /opt/lsw/ipsec status --ctlsocket "$b/root/run/pluto/pluto.ctl" > "$d/pluto-status.txt" 2>&1 ;;
    esac
    dmesg | tail -n 50 > "$E2E_OUT/dmesg.txt"
}

# node_kill NODE: stops everything the node started and removes its namespace.
node_kill() {
    local s=$1 b p
    b=$(bdir "$s")
    if [ -s "$b/anchor.pid" ]; then
        nx "$s" ipsec stop > /dev/null 2>&1
        for p in $(ip netns pids "$s" 2> /dev/null); do kill -9 "$p" 2> /dev/null; done
        kill -9 "$(cat "$b/anchor.pid")" 2> /dev/null
    fi
    ip netns del "$s" 2> /dev/null
}

# teardown: stops every node and removes the namespaces and the underlay (safe to repeat).
teardown() {
    local s
    for s in $(all_nodes); do node_kill "$s"; done
    ip link del "$E2E_BRIDGE" 2> /dev/null
    rm -rf "$E2E_WORK"
}
