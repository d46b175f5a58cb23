# The e2e scenarios (sourced by run.sh for their names, and in the guest with lib.sh to run them).
# A scenario is a function scenario_<name with - as _>; its name starts with the backend ("kind")
# whose nodes it needs: static (--ike-daemon=none), libreswan, stroke (strongSwan legacy) or vici.
# It ends through `fail` on the first broken expectation, and on success leaves the nodes with
# no tunnel for the next scenario of the same kind.
#
# Two families of scenarios:
# - the matrix of OVS's system-ipsec.at, KIND-TYPE-FAMILY-AUTH (gre/geneve/vxlan × ipv4/ipv6 ×
#   psk/self/ca): tunnel up, ESP both ways, ping 3/3, the log lines OVS greps, removal;
# - behaviours under load: restarts under a running ping, the cleartext guard, key rotation,
#   a non-default dst_port;
# - the other cases of system-ipsec.at, for Libreswan: local_ip, the file layouts
#   (--root-ipsec-conf, --use-default-crypto), the reconciliation interval, established
#   connections surviving a third node, a certificate update while the monitor is down, and a
#   (scaled-down) full mesh.

PSK_NEXT=tunafish

E2E_ALL_SCENARIOS=""
E2E_KINDS="static libreswan stroke vici"

# matrix KIND TYPES FAMILIES AUTHS: defines scenario_KIND_TYPE_FAMILY_AUTH for each combination.
matrix() {
    local k=$1 p f a
    for p in $2; do for f in $3; do for a in $4; do
        eval "scenario_${k}_${p}_${f}_${a}() { cell $k $p $f $a; }"
        E2E_ALL_SCENARIOS="$E2E_ALL_SCENARIOS $k-$p-$f-$a"
    done; done; done
}

# extra NAME: a hand-written scenario_NAME below, listed after the matrix of its kind.
extra() { E2E_ALL_SCENARIOS="$E2E_ALL_SCENARIOS $1"; }

# Static keys are PSK-only. OVS's kernel datapath carries GRE over IPv4 only (its gre port type
# has no IPv6 underlay; that is ip6gre, which the monitor does not handle).
matrix static "geneve vxlan gre" ipv4 psk
matrix static "geneve vxlan" ipv6 psk
extra static-rotation
extra static-monitor-sigkill
extra static-cleartext-drop
extra static-dst-port
extra static-node-reboot
extra static-readd
extra static-mtu
matrix libreswan "geneve vxlan gre" ipv4 "psk self ca"
matrix libreswan "geneve vxlan" ipv6 "psk self ca"
extra libreswan-monitor-restart
extra libreswan-ike-restart
extra libreswan-gre-ike-restart
extra libreswan-dst-port
# The other cases of OVS's system-ipsec.at (its case numbers in docs/e2e.md).
E2E_ALL_SCENARIOS="$E2E_ALL_SCENARIOS libreswan-geneve-ipv4-localip-psk libreswan-vxlan-ipv6-localip-psk"
scenario_libreswan_geneve_ipv4_localip_psk() { cell libreswan geneve ipv4 psk localip; }
scenario_libreswan_vxlan_ipv6_localip_psk() { cell libreswan vxlan ipv6 psk localip; }
E2E_ALL_SCENARIOS="$E2E_ALL_SCENARIOS libreswan-geneve-ipv4-custom-conf libreswan-geneve-ipv4-default-crypto"
E2E_ALL_SCENARIOS="$E2E_ALL_SCENARIOS libreswan-geneve-ipv4-custom-conf-default-crypto"
scenario_libreswan_geneve_ipv4_custom_conf() { cell libreswan geneve ipv4 psk custom; }
scenario_libreswan_geneve_ipv4_default_crypto() { cell libreswan geneve ipv4 psk default-crypto; }
scenario_libreswan_geneve_ipv4_custom_conf_default_crypto() { cell libreswan geneve ipv4 psk custom-default-crypto; }
extra libreswan-reconcile-interval-ipv4
extra libreswan-reconcile-interval-ipv6
extra libreswan-established-survive-ipv4
extra libreswan-established-survive-ipv6
extra libreswan-cert-update
extra libreswan-mesh
matrix stroke "geneve vxlan gre" ipv4 "psk self ca"
matrix stroke "geneve vxlan" ipv6 "psk self ca"
extra stroke-monitor-restart
extra stroke-ike-restart
matrix vici "geneve vxlan gre" ipv4 "psk self ca"
matrix vici "geneve vxlan" ipv6 "psk self ca"
extra vici-monitor-restart
extra vici-ike-restart
# The observability scenarios (diagnose and the XFRM notifications on a broken kernel state).
. "$(dirname "${BASH_SOURCE[0]}")/observe.sh"

# e2e_run NAME: runs one scenario with its results directory.
e2e_run() {
    export E2E_OUT=/e2e-out/$1
    mkdir -p "$E2E_OUT"
    t "scenario $1, monitor $E2E_BIN"
    "scenario_${1//-/_}"
    t "PASS"
}

# scenario_limit NAME: the seconds NAME may take (E2E_TIMEOUT). The mesh gets twice that: four
# nodes to set up and 24 certificate-authenticated connections to converge, with every pluto
# sharing the guest's two vCPUs (it was cut off at 938 s with a load average of 9 on the host,
# its first pairs up, in run 20261122-140431-21535).
scenario_limit() {
    case "$1" in
        libreswan-mesh) echo $((2 * E2E_TIMEOUT)) ;;
        *) echo "$E2E_TIMEOUT" ;;
    esac
}

# kind_of NAME: the backend a scenario needs (the first word of its name).
kind_of() { echo "${1%%-*}"; }

default_port() {
    case "$1" in geneve) echo 6081 ;; vxlan) echo 4789 ;; gre) echo 0 ;; esac
}

# ---- nodes, one function per kind -------------------------------------------------------

# Static keys (--ike-daemon=none): no IKE daemon. A removed tunnel's SAs stay for the rekey grace
# (default 60 s, like a rotated-out inbound SA); 20 s keeps removal quick and still covers the
# few seconds between the two nodes' promotions in static-rotation.
node_static() {
    node_up "$1"
    monitor_up "$1" --ike-daemon=none --static-rekey-grace=20
}

# A charon drop-in that logs to the node's directory (flush_line: otherwise empty until exit).
charon_log_conf() {
    local s=$1
    nx "$s" sh -c "printf 'charon {\n filelog {\n  e2e {\n   path = %s/charon.log\n   flush_line = yes\n   default = 1\n   ike = 2\n   knl = 2\n  }\n }\n}\n' '$(bdir "$s")' > /etc/strongswan.d/zz-e2e-log.conf"
}

# strongSwan legacy mode, as on Debian: the monitor writes /etc/ipsec.conf and restarts
# starter/charon itself at start-up; SAs come up on demand (auto=route), so the first overlay
# packets trigger the negotiation.
node_stroke() {
    node_up "$1"
    charon_log_conf "$1"
    monitor_up "$1" --ike-daemon=strongswan --strongswan-mode=stroke
}

# strongSwan over VICI: charon runs before the monitor (which never restarts it in this mode).
node_vici() {
    node_up "$1"
    charon_log_conf "$1"
    nx "$1" ipsec start > "$(bdir "$1")/starter.out" 2>&1 || fail "$1: ipsec start"
    wait_until 60 "$1: charon's VICI socket" nx "$1" test -S /run/charon.vici
    monitor_up "$1" --ike-daemon=strongswan --strongswan-mode=vici
}

# Libreswan 4.10 unpacked in /opt/lsw (it conflicts with strongSwan's packages): pluto runs with
# the node's files below --root-prefix, as in OVS's system-ipsec.at.
lsw_root() { echo "$(bdir "$1")/root"; }

pluto_start() {
    local s=$1 r
    r=$(lsw_root "$s")
    rm -f "$r/run/pluto/pluto.ctl" "$r/run/pluto/pluto.pid"
    nx "$s" /opt/lsw/ipsec pluto --config "$r/etc/ipsec.conf" --ipsecdir "$r/etc" \
        --nssdir "$r/etc/ipsec.d" --logfile "$(bdir "$s")/pluto.log" --secretsfile "$r/etc/ipsec.secrets" \
        --rundir "$r/run/pluto" || fail "$s: pluto did not start"
    wait_until 60 "$s: pluto's control socket" test -S "$r/run/pluto/pluto.ctl"
}

node_libreswan() {
    local s=$1 r
    node_up "$s"
    r=$(lsw_root "$s")
    mkdir -p "$r/etc/ipsec.d" "$r/usr/sbin" "$r/run/pluto"
    printf '#!/bin/sh\nexec /opt/lsw/ipsec "$@"\n' > "$r/usr/sbin/ipsec"
    chmod 755 "$r/usr/sbin/ipsec"
    : > "$r/etc/ipsec.conf"
    : > "$r/etc/ipsec.secrets"
    /opt/lsw/ipsec initnss --nssdir "$r/etc/ipsec.d" > /dev/null || fail "$s: initnss"
    pluto_start "$s"
    lsw_monitor "$s"
}

# lsw_monitor SIDE [LAYOUT_ARGS...]: the monitor on the node's Libreswan files. LAYOUT_ARGS
# (default --ipsec-conf=/etc/ipsec.conf: the monitor owns the root config) choose the layout.
lsw_monitor() {
    local s=$1 r
    shift
    r=$(lsw_root "$s")
    [ $# -gt 0 ] || set -- --ipsec-conf=/etc/ipsec.conf
    monitor_up "$s" --ike-daemon=libreswan --no-restart-ike-daemon --root-prefix="$r" \
        --ipsec-d=/etc/ipsec.d --ipsec-secrets=/etc/ipsec.secrets --ipsec-ctl=/run/pluto/pluto.ctl "$@"
}

# lsw SIDE ARGS...: the node's `ipsec` on its pluto (`ipsec status`, `ipsec auto --delete`...).
lsw() {
    local s=$1 r
    shift
    r=$(lsw_root "$s")
    nx "$s" /opt/lsw/ipsec "$@" --ctlsocket "$r/run/pluto/pluto.ctl"
}

# ike_stop SIDE / ike_start SIDE: the node's IKE daemon, stopped cleanly and started as an
# administrator (or systemd) would.
ike_stop() {
    case "$(cat "$E2E_WORK/kind")" in
        libreswan) nx "$1" /opt/lsw/ipsec whack --shutdown --ctlsocket "$(lsw_root "$1")/run/pluto/pluto.ctl" ;;
        *) nx "$1" ipsec stop ;;
    esac > /dev/null 2>&1 || fail "$1: cannot stop the IKE daemon"
    t "$1: IKE daemon stopped"
}
ike_start() {
    case "$(cat "$E2E_WORK/kind")" in
        libreswan) pluto_start "$1" ;;
        *) nx "$1" ipsec start > /dev/null 2>&1 || fail "$1: ipsec start" ;;
    esac
    t "$1: IKE daemon started"
}

# ---- tunnels ------------------------------------------------------------------------------

# tunnels_add TYPE AUTH [OPTION=VALUE...]: "tun" on both nodes. With static keys, local_ip is
# required and the script plays the CMS: it copies each node's external_ids:ipsec-generation
# into the peer's options:ipsec_peer_generation (only then can a node derive the peer's key).
has_generation() { [ -n "$(ext_id "$1" ipsec-generation "${2:-tun}")" ]; }

# static_relay [A B]: the CMS's relay between A and B (default left and right), repeated while a
# node publishes a new generation. A node that already created these very SAs (the same tunnel
# removed and added again with the same PSK) draws a new generation for that tunnel instead of
# re-creating them with a fresh replay window (docs/static-keying.md), and a CMS relays that as
# it relays a reboot's.
# peer_gen_is A B: A's tunnel to B holds the generation B's tunnel to A publishes.
peer_gen_is() {
    [ "$(vsctl "$1" --if-exists get interface "$(port_to "$1" "$2")" options:ipsec_peer_generation 2> /dev/null | tr -d '"')" = \
        "$(ext_id "$2" ipsec-generation "$(port_to "$2" "$1")")" ]
}
relay_current() { peer_gen_is "$1" "$2" && peer_gen_is "$2" "$1"; }
relay_settled() { ! relay_current "$1" "$2" || pair_is_up "$1" "$2"; }
# relay_to A B: copies B's published generation into A's options:ipsec_peer_generation.
relay_to() {
    vsctl "$1" --no-wait set interface "$(port_to "$1" "$2")" \
        options:ipsec_peer_generation="$(ext_id "$2" ipsec-generation "$(port_to "$2" "$1")")" ||
        fail "$1: set the peer generation of $2"
}
static_relay() {
    local a=${1:-left} b=${2:-right} i
    for i in 1 2 3 4; do
        relay_to "$a" "$b"
        relay_to "$b" "$a"
        wait_until 120 "$a and $b up or a new generation to relay" relay_settled "$a" "$b"
        relay_current "$a" "$b" && return 0
        t "a node drew a new generation: relaying it"
    done
    fail "the nodes' generations keep changing"
}

tunnels_add() {
    local s gen
    if [ "$(cat "$E2E_WORK/kind")" != static ] && [ "${E2E_LOCAL_IP:-}" = yes ]; then
        for s in left right; do tunnel_add "$s" "$@" local_ip="$(underlay_ip "$s")"; done
    elif [ "$(cat "$E2E_WORK/kind")" = static ]; then
        for s in left right; do tunnel_add "$s" "$@" local_ip="$(underlay_ip "$s")"; done
        for s in left right; do wait_until 60 "$s to publish external_ids:ipsec-generation" has_generation "$s"; done
        static_relay
    else
        for s in left right; do tunnel_add "$s" "$@"; done
    fi
}

# cell KIND TYPE FAMILY AUTH [VARIANT]: one case of the system-ipsec.at matrix; a VARIANT
# (variant_setup below) sets local_ip or another Libreswan file layout and checks its files.
cell() {
    local kind=$1 type=$2 auth=$4 variant=${5:-} s ml mr
    export E2E_FAMILY=$3
    nodes_for "$kind"
    for s in left right; do pki_config "$s" "$auth"; done
    [ -z "$variant" ] || variant_setup "$variant"
    ml=$(log_mark left)
    mr=$(log_mark right)
    tunnels_add "$type" "$auth"
    wait_converged
    assert_esp_ping "$type" "$(default_port "$type")"
    assert_diagnose_healthy
    [ -z "$variant" ] || variant_check "$variant" "$type"
    expect_log left "$ml" "tun appeared"
    expect_log right "$mr" "tun appeared"
    if [ "$kind" = libreswan ]; then
        expect_log left "$ml" "Connections for all(1) configured tunnels are Up."
        expect_log right "$mr" "Connections for all(1) configured tunnels are Up."
    fi
    # OVS prints these at exit for the record; so do we (they are not failures by themselves).
    log_since left "$ml" | grep -E 'Timed out|outdated|defunct|went down' | sed 's/^/left log: /'
    tunnel_remove
    expect_log left "$ml" "tun disappeared"
    [ -z "$variant" ] || variant_setup default
}

# ---- behaviours ---------------------------------------------------------------------------

# One geneve/IPv4/PSK tunnel, up and checked, for the scenarios below.
geneve_up() { psk_up "$1" geneve "${@:2}"; }

# psk_up NAME TYPE [OPTIONS...]: NAME's nodes with a TYPE tunnel between left and right (PSK).
psk_up() {
    export E2E_FAMILY=ipv4
    nodes_for "$(kind_of "$1")"
    local s
    for s in left right; do pki_config "$s" psk; done
    tunnels_add "$2" psk "${@:3}"
}

# monitor_restart_under_ping NAME [RESTART_ARGS...]: SIGKILL of the left monitor and a restart
# while a ping runs: no echo request lost, and both nodes keep exactly the SAs they had (the new
# monitor adopts what it finds; OVS's system-ipsec.at asserts unchanged SAs the same way).
monitor_restart_under_ping() {
    local name=$1 before_l before_r m
    shift
    geneve_up "$name"
    wait_converged
    before_l=$(spis left)
    before_r=$(spis right)
    t "SAs before: left [$(echo $before_l)], right [$(echo $before_r)]"
    ping_start left restart
    ping_wait_more restart 5
    m=$(log_mark left)
    monitor_kill left
    monitor_restart left "$@"
    expect_log left "$m" "tun appeared"
    wait_until 120 "ipsec-state=up on both nodes after the restart" both_up
    ping_wait_more restart 10
    ping_stop restart
    [ "$(spis left)" = "$before_l" ] || fail "left SAs changed across the monitor restart: [$(echo $before_l)] -> [$(echo $(spis left))]"
    [ "$(spis right)" = "$before_r" ] || fail "right SAs changed across the monitor restart: [$(echo $before_r)] -> [$(echo $(spis right))]"
    assert_esp_ping geneve 6081
    tunnel_remove
}

scenario_static_monitor_sigkill() { monitor_restart_under_ping static-monitor-sigkill; }
scenario_libreswan_monitor_restart() { monitor_restart_under_ping libreswan-monitor-restart; }
# In strongSwan legacy mode the monitor restarts starter/charon when it starts, which drops
# every SA; an operator restarting only the monitor passes --no-restart-ike-daemon.
scenario_stroke_monitor_restart() { monitor_restart_under_ping stroke-monitor-restart --no-restart-ike-daemon; }
scenario_vici_monitor_restart() { monitor_restart_under_ping vici-monitor-restart --no-restart-ike-daemon; }

# ike_restart NAME [TYPE]: the left node's IKE daemon stops: its status must leave `up`; it
# starts again: the tunnel (geneve unless TYPE) comes back (the monitor reloads what the new
# daemon lacks) and is `up`, with ESP both ways and ping 3/3.
ike_restart() {
    local type=${2:-geneve}
    psk_up "$1" "$type"
    wait_converged
    local m
    m=$(log_mark right)
    ike_stop left
    wait_until 120 "left ipsec-state to leave up while its IKE daemon is down" state_is_not left up
    t "left ipsec-state with the IKE daemon down: $(ext_id left ipsec-state)"
    ike_start left
    wait_converged
    # What right did meanwhile (for GRE, right waits for left: "waiting for the peer").
    log_since right "$m" | grep -F -e 'went down' -e 'Bringing up' -e 'Starting ipsec' |
        cut -d'|' -f5- | sed 's/^/right: /' | while read -r l; do t "$l"; done
    assert_esp_ping "$type" "$(default_port "$type")"
    tunnel_remove
}

scenario_libreswan_ike_restart() { ike_restart libreswan-ike-restart; }
# GRE is one conn on both ends: while left's pluto is down, right's conn goes down; right (the
# higher address) must leave the restart to left instead of starting it too (both starting it
# leaves pluto 4.10 with two half Child SAs: up on both nodes, every packet dropped).
scenario_libreswan_gre_ike_restart() { ike_restart libreswan-gre-ike-restart gre; }
scenario_stroke_ike_restart() { ike_restart stroke-ike-restart; }
scenario_vici_ike_restart() { ike_restart vici-ike-restart; }

# out_spi SIDE: the SPI in the template of the node's outbound policy (the SA it sends with).
out_spi() {
    ip -n "$1" xfrm policy | awk '$1 == "src" { p = 0 } /dir out/ { p = 1 }
        p { for (i = 1; i < NF; i++) if ($i == "spi") print $(i + 1) }'
}
rotation_is() { [ "$(ext_id left ipsec-rotation)" = "$1" ] && [ "$(ext_id right ipsec-rotation)" = "$1" ]; }
spis_moved() { [ "$(out_spi left)" != "$1" ] && [ "$(out_spi right)" != "$2" ] && both_up; }

# Two-phase rotation driven as a CMS would (docs/static-keying.md) under a running ping: no
# echo request lost, new outbound SPIs, and the ESP on the wire uses them.
scenario_static_rotation() {
    local s old_l old_r new_l
    geneve_up static-rotation
    wait_converged
    old_l=$(out_spi left)
    old_r=$(out_spi right)
    t "outbound SPIs before: left $old_l, right $old_r"
    ping_start left rotation
    ping_wait_more rotation 5
    for s in left right; do vsctl "$s" --no-wait set interface tun options:ipsec_psk_next="$PSK_NEXT" || fail "$s: set psk_next"; done
    wait_until 120 "external_ids:ipsec-rotation=ready on both nodes" rotation_is ready
    t "rotation ready on both nodes"
    ping_wait_more rotation 5
    for s in left right; do
        vsctl "$s" --no-wait set interface tun options:psk="$PSK_NEXT" -- remove interface tun options ipsec_psk_next ||
            fail "$s: promote psk_next"
    done
    wait_until 120 "new outbound SPIs on both nodes" spis_moved "$old_l" "$old_r"
    wait_until 120 "external_ids:ipsec-rotation to be cleared" rotation_is ""
    new_l=$(out_spi left)
    t "outbound SPIs after: left $new_l, right $(out_spi right)"
    ping_wait_more rotation 10
    ping_stop rotation
    assert_esp_ping geneve 6081
    grep -q "$(underlay_ip left) > $(underlay_ip right): ESP(spi=$new_l," "$E2E_OUT/tcpdump-underlay.txt" ||
        fail "the ESP from left does not use the new SPI $new_l"
    tunnel_remove
}

# e2e_table SIDE RULES: a table "inet e2e" of counting chains on the node (not the monitor's).
# nft_count SIDE CHAIN: the packets counted by the chain's (first) counter.
e2e_table() { printf 'table inet e2e {\n%s\n}\n' "$2" | nx "$1" nft -f - || fail "$1: cannot add the e2e nft table"; }
nft_count() { nx "$1" nft list chain inet e2e "$2" | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -n 1; }
count_at_least() { [ "$(nft_count "$1" "$2")" -ge "$3" ]; }

# Cleartext udp to the geneve port from the peer's underlay address, sent around the peer's
# XFRM (raw socket): it reaches the left node (counted before the guard) and is dropped by the
# monitor's guard (nothing counted after it); the tunnel still works. The same datagrams to an
# unguarded port (6999) are counted after the guard: the counting itself works.
scenario_static_cleartext_drop() {
    geneve_up static-cleartext-drop
    wait_converged
    local sel="ip saddr 192.0.2.2 ip daddr 192.0.2.1 meta ipsec missing udp dport"
    e2e_table left "chain arrived { type filter hook prerouting priority -400; $sel 6081 counter; }
        chain delivered { type filter hook input priority 0; $sel 6081 counter; }
        chain control { type filter hook input priority 0; $sel 6999 counter; }"
    local port
    for port in 6081 6999; do
        ip netns exec right python3 ./cleartext.py 192.0.2.2 192.0.2.1 "$port" 5 ||
            fail "cannot send the cleartext datagrams"
    done
    wait_until 30 "the 5 cleartext datagrams to reach the left node" count_at_least left arrived 5
    wait_until 30 "the 5 datagrams to the unguarded port to be delivered" count_at_least left control 5
    local passed
    passed=$(nft_count left delivered)
    t "cleartext: $(nft_count left arrived) arrived, $passed passed the guard, $(nft_count left control) delivered to udp/6999"
    [ "$passed" -eq 0 ] || fail "$passed cleartext datagrams from the peer passed the guard"
    assert_esp_ping geneve 6081
    nx left nft delete table inet e2e
    tunnel_remove
}

# dst_port NAME: geneve on port 6090 instead of 6081: the policies select 6090, ESP flows, no
# udp/6090 in clear on the wire, and the left node receives udp/6090 only from inside ESP.
dst_port() {
    geneve_up "$1" dst_port=6090
    wait_converged
    e2e_table left "chain inner { type filter hook input priority 0;
        udp dport 6090 meta ipsec exists counter; udp dport 6090 meta ipsec missing counter; }"
    assert_esp_ping geneve 6090
    local pol decrypted clear
    pol=$(ip -n left xfrm policy)
    echo "$pol" | grep -q 'dport 6090' || fail "no left policy selects udp/6090"
    echo "$pol" | grep -q 'dport 6081' && fail "a left policy still selects udp/6081"
    decrypted=$(nft_count left inner)
    clear=$(nx left nft list chain inet e2e inner | sed -n 's/.*missing counter packets \([0-9]*\).*/\1/p')
    t "udp/6090 on the left node: $decrypted from inside ESP, $clear in clear"
    [ "$decrypted" -ge 3 ] || fail "only $decrypted udp/6090 packets came out of ESP"
    [ "$clear" -eq 0 ] || fail "$clear udp/6090 packets arrived in clear"
    nx left nft delete table inet e2e
    tunnel_remove
}

scenario_static_dst_port() { dst_port static-dst-port; }

# static-mtu: the inner MTU tunnels/show reports is exact. Geneve/IPv4 with AES-GCM over the
# 1500-byte underlay: 1500 - 20 (IP) - 8 (ESP) - 8 (IV) - 16 (ICV) = 1448 (a multiple of 4),
# - 2 (trailer) = 1446, - 8 (UDP) - 8 (Geneve) - 14 (Ethernet) = 1416. A DF ping of 1416 bytes
# passes through the encrypted tunnel; one byte more does not.
scenario_static_mtu() {
    geneve_up static-mtu
    wait_converged
    assert_esp_ping geneve 6081
    local mtu peer
    mtu=$(ovs-appctl -t "$(bdir left)/mon.ctl" tunnels/show --json |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["tunnels"][0]["inner_mtu"])')
    t "tunnels/show: inner MTU $mtu"
    [ "$mtu" = 1416 ] || fail "inner MTU $mtu, expected 1416 for geneve/IPv4 over 1500 bytes"
    peer=$(overlay_ip right)
    ip netns exec left ping -M do -c 3 -i 0.3 -W 2 -s $((mtu - 28)) "$peer" ||
        fail "a DF ping of the reported inner MTU ($mtu bytes) did not pass"
    if ip netns exec left ping -M do -c 3 -i 0.3 -W 2 -s $((mtu - 27)) "$peer"; then
        fail "a DF ping of $((mtu + 1)) bytes passed: the reported inner MTU is not the largest"
    fi
    t "DF ping of $mtu bytes passes, $((mtu + 1)) does not"
    tunnel_remove
}

# static_reboot SIDE: the node reboots, as far as the monitor can tell (docs/static-keying.md,
# "Generation, restarts and reboots"). The monitor dies without cleanup (kill -9); the kernel
# loses every SA, policy and nftables table (flushed here); the run directory, a tmpfs, loses the
# monitor's generation and retiring files. The design reads no boot id: a missing generation
# file is what a reboot looks like. The node's OVS keeps running: its database survives a real
# reboot on disk, and the monitor reads nothing else.
static_reboot() {
    local s=$1 b
    b=$(bdir "$s")
    monitor_kill "$s"
    ip -n "$s" xfrm state flush && ip -n "$s" xfrm policy flush || fail "$s: cannot flush XFRM"
    nx "$s" nft delete table inet ovs_ipsec || fail "$s: cannot remove the nftables guard"
    rm -f "$b/ovs-monitor-ipsec.generation" "$b/ovs-monitor-ipsec.retiring"
    monitor_restart "$s"
    t "$s: rebooted (monitor killed, XFRM and nftables flushed, run files removed, monitor started)"
}

# sa_keys SIDE DIR: "SPI KEY" of each SA the node sends with (out) or receives with (in); keys
# stay in variables, never printed.
sa_keys() {
    ip -n "$1" xfrm state | awk -v me="$(underlay_ip "$1")" -v dir="$2" '$1 == "src" { o = (($2 == me) == (dir == "out")) }
        o && $1 == "proto" { spi = $4 } o && $1 == "aead" { print spi, $3 }' | sort
}
# reused A B: how many SPIs or keys the two "SPI KEY" lists share (counted, never printed).
reused() {
    printf '%s\n%s\n' "$1" "$2" | awk 'NF { s[$1]++; k[$2]++ }
        END { n = 0; for (x in s) if (s[x] > 1) n++; for (x in k) if (k[x] > 1) n++; print n }'
}
generation_is_not() { local g; g=$(ext_id "$1" ipsec-generation); [ -n "$g" ] && [ "$g" != "$2" ]; }
has_sas() { [ -n "$(sa_keys "$1" in)" ] && [ -n "$(sa_keys "$1" out)" ]; }
error_has() { ext_id "$1" ipsec-error | grep -qF -- "$2"; }
# Only traffic shows the peer's key: each poll sends one (dropped) echo request from SIDE.
unknown_spi_reported() {
    local from=left to=right
    [ "$1" = left ] && from=right to=left
    overlay_ping_ok "$from"
    error_has "$1" "$2"
}

# A reboot of the left node. Every key binds both ends' generations (docs/static-keying.md), so
# the left node's new generation changes the keys of both directions: it sends and receives with
# SPIs and keys it never used (no nonce reuse; nothing recorded before can be replayed into its
# fresh replay windows). Each node drops what it cannot decrypt and says why until the CMS relays
# the new generation to the right node, and nothing crosses the underlay in clear meanwhile; then
# both directions use the new keys.
scenario_static_node_reboot() {
    local gen_before out_before in_before spis_right right_spi keys_after new_spi right_new cap td res fwd nclear n
    geneve_up static-node-reboot
    wait_converged
    gen_before=$(ext_id left ipsec-generation)
    out_before=$(sa_keys left out)
    in_before=$(sa_keys left in)
    spis_right=$(spis right)
    right_spi=$(out_spi right)
    t "before: left generation $gen_before, left sends with SPI $(echo $out_before | cut -d' ' -f1), right with $right_spi"
    [ -n "$out_before" ] && [ -n "$in_before" ] || fail "left has no inbound or outbound SA before the reboot"
    static_reboot left
    wait_until 120 "left to publish a new external_ids:ipsec-generation" generation_is_not left "$gen_before"
    wait_until 120 "left to install its SAs under the new generation" has_sas left
    keys_after=$(sa_keys left out)
    new_spi=$(echo $keys_after | cut -d' ' -f1)
    t "after: left generation $(ext_id left ipsec-generation), left sends with SPI $new_spi"
    n=$(reused "$out_before" "$keys_after")
    [ "$n" -eq 0 ] || fail "left reuses $n outbound SPI(s) or key(s) of its previous generation"
    n=$(reused "$in_before" "$(sa_keys left in)")
    [ "$n" -eq 0 ] || fail "left re-created $n inbound SA(s) with a key of before: replay would be accepted"
    [ "$(out_spi left)" = "$new_spi" ] || fail "left's out policy uses SPI $(out_spi left), not its new SA $new_spi"

    # The right node has not learned the new generation: it keeps its SAs, drops left's ESP
    # (no SA for that SPI), says why, and no tunnel packet goes in clear. The left node drops
    # the right node's ESP (old keys) and says why too.
    wait_until 120 "right to report the unknown SPI $new_spi" unknown_spi_reported right "$new_spi"
    t "right: $(ext_id right ipsec-state): $(ext_id right ipsec-error)"
    state_is right down || fail "right is $(ext_id right ipsec-state) while left's key is unknown to it"
    error_has right ipsec_peer_generation || fail "right's ipsec-error does not say what to relay"
    [ "$(spis right)" = "$spis_right" ] || fail "right changed its SAs before learning the new generation"
    wait_until 120 "left to report the right node's SPI $right_spi as unknown" unknown_spi_reported left "$right_spi"
    t "left: $(ext_id left ipsec-state): $(ext_id left ipsec-error)"
    cap=$E2E_OUT/tcpdump-unrelayed.txt
    ip netns exec left tcpdump -nn -l -U -i vl "ip proto 50 or udp port 6081" > "$cap" 2> "$cap.err" &
    td=$!
    wait_until 30 "tcpdump to start" grep -q 'listening on' "$cap.err"
    res=$(ip netns exec left ping -c 3 -i 0.3 -W 2 "$(overlay_ip right)" | grep 'packets transmitted')
    sleep 1
    kill "$td" 2> /dev/null
    wait "$td" 2> /dev/null
    fwd=$(grep -c "IP 192.0.2.1 > 192.0.2.2: ESP(spi=$new_spi," "$cap")
    nclear=$(grep -v -e 'ESP' -e '^$' -c "$cap")
    t "unrelayed: ping $res; underlay: $fwd ESP left->right with the new SPI, $nclear in clear"
    case "$res" in *" 0 received"*) ;; *) fail "the overlay ping got through before the relay: $res" ;; esac
    [ "$fwd" -ge 3 ] || fail "left's echo requests did not leave as ESP with SPI $new_spi ($fwd)"
    [ "$nclear" -eq 0 ] || fail "$nclear tunnel packets in clear on the underlay before the relay"

    # The CMS relays left's generation to right (docs/static-keying.md): the tunnel comes back,
    # and the right node sends with a new key too.
    vsctl right --no-wait set interface tun options:ipsec_peer_generation="$(ext_id left ipsec-generation)" ||
        fail "right: relay the new generation"
    wait_converged 120
    right_new=$(out_spi right)
    t "relayed: right sends with SPI $right_new (was $right_spi)"
    [ "$right_new" != "$right_spi" ] || fail "right still sends with SPI $right_spi after learning the new generation"
    assert_esp_ping geneve 6081
    grep -q "192.0.2.1 > 192.0.2.2: ESP(spi=$new_spi," "$E2E_OUT/tcpdump-underlay.txt" ||
        fail "the ESP from left does not use the new SPI $new_spi"
    grep -q "192.0.2.2 > 192.0.2.1: ESP(spi=$right_new," "$E2E_OUT/tcpdump-underlay.txt" ||
        fail "the ESP from right does not use its new SPI $right_new"
    tunnel_remove
}
# static_to_n3 [OPTION=VALUE...]: left's tunnel to n3 (tun3), geneve with the PSK and local_ip.
static_to_n3() {
    tunnel_to left n3 geneve psk local_ip="$(underlay_ip left)" "$@"
}
# pair_spis A B: the node A's SAs between A and B (src dst spi lines).
pair_spis() { spis "$1" | awk -v a="$(underlay_ip "$1")" -v b="$(underlay_ip "$2")" '($1 == a && $2 == b) || ($1 == b && $2 == a)'; }
gen_of() { ext_id "$1" ipsec-generation "$(port_to "$1" "$2")"; }
tun3_gen_is_not() { local g; g=$(gen_of left n3); [ -n "$g" ] && [ "$g" != "$1" ]; }
no_sa_to_n3() { [ -z "$(pair_spis left n3)" ] && ! ip -n left xfrm policy | grep -q "$(underlay_ip n3)"; }
# unknown_spi_from SIDE PEER: PEER pings SIDE once (dropped), then SIDE's tunnel to PEER is down
# and names the relay.
unknown_spi_from() {
    overlay_ping_ok "$2" "$1"
    [ "$(ext_id "$1" ipsec-state "$(port_to "$1" "$2")")" = down ] &&
        ext_id "$1" ipsec-error "$(port_to "$1" "$2")" | grep -qF ipsec_peer_generation
}

# One tunnel of two removed and added back unchanged (issue #5). Its SAs were created before, so
# re-creating them would restart their sequence numbers and replay windows under the same keys:
# the left node draws a new generation for that tunnel only (docs/static-keying.md). The left
# node's tunnel to the right node keeps its generation, SAs and SPIs (none added or removed on
# either node) and a ping over it runs throughout without a loss; the tunnel to n3 publishes
# its new generation, both of its ends are down naming the relay until the script relays it to
# n3, then it is up with ESP both ways.
scenario_static_readd() {
    local gen_lr gen3 gen_n3 left_lr right_all m
    geneve_up static-readd
    wait_converged
    node_add n3
    pki_config n3 psk
    static_to_n3
    tunnel_to n3 left geneve psk local_ip="$(underlay_ip n3)"
    wait_until 60 "left to publish a generation on tun3" has_generation left tun3
    wait_until 60 "n3 to publish a generation on tun1" has_generation n3 tun1
    static_relay left n3
    wait_converged 300 left n3
    assert_esp_ping geneve 6081 left n3
    gen_lr=$(gen_of left right)
    gen3=$(gen_of left n3)
    gen_n3=$(gen_of n3 left)
    left_lr=$(pair_spis left right)
    right_all=$(spis right)
    t "left generations: to right $gen_lr, to n3 $gen3; left<->right SAs [$(echo $left_lr)]"
    [ -n "$left_lr" ] || fail "left has no SA with right"

    ping_start left readd
    ping_wait_more readd 5
    m=$(log_mark left)
    vsctl left --no-wait del-port br-ipsec tun3 || fail "left: del-port tun3"
    wait_until 120 "left: the SAs and policies of tun3 to be removed" no_sa_to_n3
    t "left: tun3 removed"
    static_to_n3 ipsec_peer_generation="$gen_n3"
    wait_until 120 "left: tun3 to publish a new generation" tun3_gen_is_not "$gen3"
    t "left: tun3 added back, generation $(gen_of left n3) (was $gen3)"
    [ "$(gen_of left right)" = "$gen_lr" ] || fail "left's tunnel to right changed its generation to $(gen_of left right)"

    # n3 has not learned tun3's new generation: each end drops the other's ESP and says why.
    wait_until 120 "n3 to report left's unknown SPI and name the relay" unknown_spi_from n3 left
    t "n3: $(ext_id n3 ipsec-state tun1): $(ext_id n3 ipsec-error tun1)"
    wait_until 120 "left's tun3 to report n3's unknown SPI and name the relay" unknown_spi_from left n3
    t "left tun3: $(ext_id left ipsec-state tun3): $(ext_id left ipsec-error tun3)"
    relay_to n3 left
    wait_converged 120 left n3
    assert_esp_ping geneve 6081 left n3

    ping_wait_more readd 5
    ping_stop readd
    [ "$(pair_spis left right)" = "$left_lr" ] || fail "left's SAs with right changed: [$(echo $left_lr)] -> [$(echo $(pair_spis left right))]"
    [ "$(spis right)" = "$right_all" ] || fail "right's SAs changed: [$(echo $right_all)] -> [$(echo $(spis right))]"
    [ "$(gen_of left right)" = "$gen_lr" ] || fail "left's tunnel to right changed its generation"
    [ "$(gen_of n3 left)" = "$gen_n3" ] || fail "n3 changed its generation"
    log_since left "$m" | grep -F 'drawing a new key generation' | sed 's/^/left log: /'
    log_since left "$m" | grep -qF '|tun: ' && fail "left acted on tun: $(log_since left "$m" | grep -F '|tun: ' | head -n 3)"
    assert_esp_ping geneve 6081
    vsctl left --no-wait del-port br-ipsec tun3 || fail "left: del-port tun3"
    node_remove n3
    tunnel_remove
}
scenario_libreswan_dst_port() { dst_port libreswan-dst-port; }

# ---- the other cases of OVS's system-ipsec.at (Libreswan) ----------------------------------

# lsw_conf SIDE FILE: a file of the node's Libreswan configuration (below --root-prefix).
lsw_conf() { echo "$(lsw_root "$1")/etc/$2"; }
# crypto_lines FILE: how many ike=, ikev2= and esp= lines FILE has.
crypto_lines() { grep -cE '^[[:space:]]*(ike|ikev2|esp)=' "$1"; }
conns_of() { [ "$1" = gre ] && echo 1 || echo 2; }

# lsw_layout LAYOUT: restarts both monitors with a file layout: default (the monitor owns the
# root ipsec.conf), custom (an administrator's root ipsec.conf includes the monitor's
# custom.conf: --ipsec-conf=custom.conf --root-ipsec-conf=ipsec.conf), default-crypto (default
# with --use-default-crypto) or custom-default-crypto. The root config of the custom layouts is
# kept as root.expected: the monitor must never write it.
lsw_layout() {
    local s r args
    for s in left right; do
        r=$(lsw_root "$s")
        monitor_kill "$s"
        rm -f "$r/etc/custom.conf" "$r/etc/root.expected"
        args=(--ipsec-conf=/etc/ipsec.conf)
        case "$1" in
            custom*)
                printf 'config setup\n\tuniqueids=yes\n\ninclude %s\n' "$r/etc/custom.conf" > "$r/etc/ipsec.conf"
                cp "$r/etc/ipsec.conf" "$r/etc/root.expected"
                : > "$r/etc/custom.conf"
                args=(--ipsec-conf=/etc/custom.conf --root-ipsec-conf="$r/etc/ipsec.conf")
                ;;
        esac
        case "$1" in *default-crypto) args+=(--use-default-crypto) ;; esac
        lsw_monitor "$s" "${args[@]}"
    done
    echo "$1" > "$E2E_WORK/layout"
    t "Libreswan file layout: $1"
}

# variant_setup VARIANT: localip (tunnels with options:local_ip), a file layout (lsw_layout), or
# default: back to the nodes' usual set-up (for the next scenario reusing them).
variant_setup() {
    case "$1" in
        localip) export E2E_LOCAL_IP=yes ;;
        default)
            export E2E_LOCAL_IP=no
            if [ "$(cat "$E2E_WORK/layout" 2> /dev/null || echo default)" != default ]; then
                lsw_layout default
            fi
            ;;
        *) lsw_layout "$1" ;;
    esac
}

# variant_check VARIANT TYPE: the files say what the variant asks for (OVS's case 2/8 only pings;
# 10-12 count the lines below); the ESP checks have already passed.
variant_check() {
    local s conf n want
    want=$(conns_of "$2")
    for s in left right; do
        conf=$(lsw_conf "$s" ipsec.conf)
        case "$1" in
            localip)
                n=$(grep -cxE "[[:space:]]*left=$(underlay_ip "$s")" "$conf")
                [ "$n" -eq "$want" ] || fail "$s: $n conns with left=$(underlay_ip "$s") in ipsec.conf, want $want"
                grep -q 'left=%defaultroute' "$conf" && fail "$s: ipsec.conf still uses left=%defaultroute"
                ;;
            default-crypto)
                grep -qx 'conn %default' "$conf" || fail "$s: ipsec.conf has no conn %default"
                n=$(crypto_lines "$conf")
                [ "$n" -eq 0 ] || fail "$s: $n ike/ikev2/esp lines in ipsec.conf with --use-default-crypto"
                ;;
            custom*)
                cmp -s "$conf" "$(lsw_conf "$s" root.expected)" || fail "$s: the monitor changed the root ipsec.conf"
                conf=$(lsw_conf "$s" custom.conf)
                grep -q 'conn %default' "$conf" && fail "$s: custom.conf defines conn %default"
                n=$(crypto_lines "$conf")
                case "$1" in custom) want=$((3 * $(conns_of "$2"))) ;; *) want=0 ;; esac
                [ "$n" -eq "$want" ] || fail "$s: $n ike/ikev2/esp lines in custom.conf, want $want"
                ;;
        esac
    done
    t "$1: the configuration files are as expected"
}

# lsw_totals SIDE: "loaded N, active M" from `ipsec status`.
lsw_totals() { lsw "$1" status | sed -n 's/.*Total IPsec connections: \(loaded [0-9]*, active [0-9]*\).*/\1/p'; }
totals_are() { [ "$(lsw_totals "$1")" = "$2" ]; }
# lsw_serials SIDE: the serial numbers (#N) of the node's IKE and IPsec SAs, ascending, each
# followed by a space (so that a list is a prefix of another only at a number's end).
lsw_serials() { lsw "$1" status | grep -oE '#[0-9]+:' | tr -d '#:' | sort -n -u | tr '\n' ' '; }

# grace_violations SIDE MARK: the monitor's "Bringing up ipsec connection C" and "Connection C
# is defunct" lines (after MARK) that came less than the 15 s reconciliation interval after C
# was started or added (half a second allowed for the log's own timing).
grace_violations() {
    log_since "$1" "$2" | awk -F'|' '
        { split(substr($1, 12, 12), h, ":"); now = h[1] * 3600 + h[2] * 60 + h[3]; n = split($NF, w, " ") }
        $NF ~ /^(Starting|Adding) ipsec connection / { since[w[4]] = now }
        $NF ~ /^Bringing up ipsec connection / && (w[5] in since) && now - since[w[5]] < 14.5 { print }
        $NF ~ /^Connection [^ ]+ is defunct/ && (w[2] in since) && now - since[w[2]] < 14.5 { print }'
}
has_bring_up() { log_since left "$1" | grep -qE 'Bringing up ipsec connection tun-(in|out)-'; }

# OVS cases 13/14: with no peer yet, the left node gets "tun", then five more tunnels that are
# deleted again; the monitor sees each appear and disappear, and these changes do not make it
# act on tun's pending connections before the 15 s interval ("defunct" / "Bringing up" come no
# sooner than 15 s after the connection was started or added, checked on the log's times), but
# eventually it brings one up itself. Then the peer is configured and the tunnel works.
reconcile_interval() {
    export E2E_FAMILY=$1
    nodes_for libreswan
    local s m i bad
    for s in left right; do pki_config "$s" psk; done
    m=$(log_mark left)
    tunnel_add left geneve psk
    expect_log left "$m" "tun appeared"
    for i in 1 2 3 4 5; do
        vsctl left --no-wait add-port br-ipsec "tun-$i" -- set interface "tun-$i" type=geneve \
            options:remote_ip="$(underlay_ip "n10$i")" options:psk="$PSK" || fail "left: add-port tun-$i"
    done
    t "left: tun-1..5 added"
    # Generous: a pass takes 10-30 s under TCG, and the monitor reads OVSDB between passes.
    for i in 1 2 3 4 5; do wait_until 180 "left: the monitor to log \"tun-$i appeared\"" log_has left "$m" "tun-$i appeared"; done
    t "left: tun-1..5 appeared"
    for i in 1 2 3 4 5; do vsctl left --no-wait del-port br-ipsec "tun-$i" || fail "left: del-port tun-$i"; done
    t "left: tun-1..5 deleted"
    for i in 1 2 3 4 5; do wait_until 180 "left: the monitor to log \"tun-$i disappeared\"" log_has left "$m" "tun-$i disappeared"; done
    t "left: tun-1..5 disappeared"
    wait_until 180 "left: the monitor to bring up one of tun's connections itself" has_bring_up "$m"
    log_since left "$m" | grep -E 'defunct|Bringing up' | sed 's/^/left log: /'
    bad=$(grace_violations left "$m")
    [ -z "$bad" ] || fail "acted on a pending connection before the reconciliation interval: $bad"
    tunnel_add right geneve psk
    wait_converged
    assert_esp_ping geneve 6081
    tunnel_remove
}
scenario_libreswan_reconcile_interval_ipv4() { reconcile_interval ipv4; }
scenario_libreswan_reconcile_interval_ipv6() { reconcile_interval ipv6; }

# sa_snapshot: the SA serials and kernel SAs of left and right; pair_settled: the same twice,
# 15 s (the monitor's reconciliation interval) apart.
sa_snapshot() {
    local s
    for s in left right; do
        echo "$s: $(lsw_serials "$s")"
        spis "$s"
    done
}
pair_settled() {
    local a
    a=$(sa_snapshot)
    sleep 15
    [ "$a" = "$(sa_snapshot)" ]
}

# OVS cases 15/16: left and right are up; a third node n3 and a tunnel from left to it are
# added. Left ends with 4 connections, all active, and pings n3 over ESP; right's SAs (pluto's
# serials and the kernel's SPIs) are unchanged and left's old SAs are still there (its serials
# before are a prefix of those after): the new tunnel disturbed no established one.
established_survive() {
    export E2E_FAMILY=$1
    nodes_for libreswan
    local s sl sr xr
    for s in left right; do pki_config "$s" psk; done
    tunnels_add geneve psk
    wait_converged
    assert_esp_ping geneve 6081
    # Under TCG the pair's own start can still be settling here (crossing negotiations, a
    # superseded IKE SA the peer deletes later): that is not the third node's doing.
    wait_until 300 "left and right: their SAs unchanged for 15 s" pair_settled
    sl=$(lsw_serials left)
    sr=$(lsw_serials right)
    xr=$(spis right)
    t "SA serials before: left [$sl], right [$sr]"
    node_add n3
    pki_config n3 psk
    tunnel_to left n3 geneve psk
    tunnel_to n3 left geneve psk
    wait_converged 300 left n3
    wait_until 120 "left: 4 connections loaded, all active" totals_are left "loaded 4, active 4"
    assert_esp_ping geneve 6081 left n3
    t "SA serials after: left [$(lsw_serials left)], right [$(lsw_serials right)]"
    [ "$(lsw_serials right)" = "$sr" ] || fail "right's SAs changed: [$sr] -> [$(lsw_serials right)]"
    [ "$(spis right)" = "$xr" ] || fail "right's kernel SAs changed: [$(echo $xr)] -> [$(echo $(spis right))]"
    case "$(lsw_serials left)" in "$sl"*) ;; *) fail "left's SAs [$sl] are not kept in [$(lsw_serials left)]" ;; esac
    assert_esp_ping geneve 6081
    vsctl left --no-wait del-port br-ipsec "$(port_to left n3)" || fail "left: del-port to n3"
    node_remove n3
    tunnel_remove
}
scenario_libreswan_established_survive_ipv4() { established_survive ipv4; }
scenario_libreswan_established_survive_ipv6() { established_survive ipv6; }

# pem_body: the base64 of the certificates on stdin, on one line (certutil writes CRLF).
pem_body() { tr -d '\r' | grep -v -- '-----' | tr -d '\n'; }
nss_matches() {
    [ "$(nx left certutil -L -d "sql:$(lsw_conf left ipsec.d)" -a -n "$1" 2> /dev/null | pem_body)" = "$(pem_body < "$2")" ]
}

# OVS case 17: CA-signed tunnel up; the left monitor is killed; the CA and every certificate
# and key are replaced in place (same paths: the second CA of prepare.sh); the monitor restarts
# (--no-restart-ike-daemon). It reports all(1) tunnels up, the ping works, no SA changed on
# either node, and left's NSS database holds exactly the new CA and certificate.
scenario_libreswan_cert_update() {
    export E2E_FAMILY=ipv4
    nodes_for libreswan
    local d=$E2E_WORK/pki-update s sl sr m nicks f
    mkdir -p "$d" && cp "$E2E_PKI"/ca/*.pem "$d/" || fail "cannot copy the certificates"
    for s in left right; do
        vsctl "$s" --no-wait set Open_vSwitch . other_config:certificate="$d/$s-cert.pem" \
            other_config:private_key="$d/$s-privkey.pem" other_config:ca_cert="$d/cacert.pem" || fail "$s: set pki"
    done
    tunnels_add geneve ca
    wait_converged
    assert_esp_ping geneve 6081
    sl=$(lsw_serials left)
    sr=$(lsw_serials right)
    t "SA serials before: left [$sl], right [$sr]"
    monitor_kill left
    for f in cacert left-cert left-privkey right-cert right-privkey; do
        cp "$E2E_PKI/ca2/$f.pem" "$d/$f.pem" || fail "cannot replace $f.pem"
    done
    m=$(log_mark left)
    monitor_restart left
    expect_log left "$m" "Connections for all(1) configured tunnels are Up."
    assert_esp_ping geneve 6081
    t "SA serials after: left [$(lsw_serials left)], right [$(lsw_serials right)]"
    [ "$(lsw_serials left)" = "$sl" ] || fail "left's SAs changed: [$sl] -> [$(lsw_serials left)]"
    [ "$(lsw_serials right)" = "$sr" ] || fail "right's SAs changed: [$sr] -> [$(lsw_serials right)]"
    # Peer certificates of earlier self-signed cells on these nodes stay while pluto runs
    # (docs/libreswan.md): only the CA and our own certificate are checked.
    # The CA is one bundle member, `ovs-ca-<id>`: the old CA's nickname (and that of earlier
    # versions, ovs_cert_cacert) must be gone.
    nicks=$(nx left certutil -L -d "sql:$(lsw_conf left ipsec.d)" | awk '$1 ~ /^(ovs-ca-|ovs_cert_cacert|ovs_certkey_)/ { print $1 }' | sort | tr '\n' ' ')
    t "left NSS: $nicks"
    set -- $nicks
    [ $# = 2 ] && [ "${1#ovs-ca-}" != "$1" ] && [ "$2" = ovs_certkey_left ] || fail "left's NSS database holds [$nicks]"
    nss_matches "$1" "$d/cacert.pem" || fail "$1 is not the new CA"
    nss_matches ovs_certkey_left "$d/left-cert.pem" || fail "ovs_certkey_left is not the new certificate"
    tunnel_remove
    for s in left right; do pki_config "$s" psk; done
}

# ---- OVS case 18, scaled down: a full mesh --------------------------------------------------

MESH="left right n3 n4"

has_ofport() { [ "$(vsctl "$1" get interface "$2" ofport 2> /dev/null)" -gt 0 ] 2> /dev/null; }

# mesh_flows NODE: NORMAL switching would loop broadcasts around a full mesh, so each br-ipsec
# gets explicit flows, as OVS's test sets static ones: IPv4 and ARP for a peer's overlay
# address go out of the tunnel to it; whatever comes in from a tunnel goes to the host.
mesh_flows() {
    local s=$1 p port flows=""
    for p in $MESH; do
        [ "$p" != "$s" ] || continue
        port=$(port_to "$s" "$p")
        wait_until 60 "$s: an OpenFlow port number for $port" has_ofport "$s" "$port"
        port=$(vsctl "$s" get interface "$port" ofport)
        flows+="priority=10,in_port=LOCAL,ip,nw_dst=$(overlay_ip "$p"),actions=output:$port
priority=10,in_port=LOCAL,arp,arp_tpa=$(overlay_ip "$p"),actions=output:$port
"
    done
    printf '%spriority=5,actions=LOCAL\n' "$flows" | nx "$s" ovs-ofctl replace-flows br-ipsec - ||
        fail "$s: cannot set the mesh's flows"
}

# lsw_conns SIDE PORT: the names of the connections of PORT that pluto has loaded.
lsw_conns() { lsw "$1" status | grep -oE "\"$2-(in|out)-[0-9]+\"" | tr -d '"' | sort -u; }
mesh_loaded() {
    local s
    for s in $MESH; do totals_are "$s" "loaded 6, active 6" || return 1; done
}

# A full mesh of geneve tunnels with self-signed certificates. OVS runs 20 nodes (380 tunnels);
# under TCG on 2 cores that cannot fit, so 4 nodes (12 tunnels, 24 connections): every node
# logs all(3) tunnels up and has 6 connections loaded and active. Then three connections of
# n3 are deleted behind the monitor's back (`ipsec auto --delete`: the outbound one to left,
# both to right); its monitor notices ("need to reconcile") and loads them again, and every
# pair pings 3/3 over ESP.
scenario_libreswan_mesh() {
    export E2E_FAMILY=ipv4
    nodes_for libreswan
    local a b m c r marks=()
    node_add n3 &
    a=$!
    node_add n4 &
    b=$!
    wait "$a" && wait "$b" || fail "cannot add the mesh's nodes"
    for a in $MESH; do pki_config "$a" self; done
    for a in $MESH; do marks[$(node_index "$a")]=$(log_mark "$a"); done
    for a in $MESH; do for b in $MESH; do
        [ "$a" = "$b" ] || tunnel_to "$a" "$b" geneve self
    done; done
    for a in $MESH; do mesh_flows "$a"; done
    for a in $MESH; do for b in $MESH; do
        [[ "$a" < "$b" ]] && wait_converged 600 "$a" "$b"
    done; done
    for a in $MESH; do expect_log "$a" "${marks[$(node_index "$a")]}" "Connections for all(3) configured tunnels are Up."; done
    wait_until 300 "every node: 6 connections loaded and active" mesh_loaded
    t "mesh up: $(for a in $MESH; do printf '%s [%s] ' "$a" "$(lsw_totals "$a")"; done)"
    m=$(log_mark n3)
    r=$(lsw_conf n3 ipsec.conf)
    for c in $(lsw_conns n3 tun1 | grep -- -out-) $(lsw_conns n3 tun2); do
        nx n3 /opt/lsw/ipsec auto --ctlsocket "$(lsw_root n3)/run/pluto/pluto.ctl" --config "$r" --delete "$c" > /dev/null ||
            fail "n3: ipsec auto --delete $c"
        t "n3: deleted $c by hand"
    done
    wait_until 120 "n3: the monitor to see that it needs to reconcile" log_has n3 "$m" "need to reconcile"
    log_since n3 "$m" | grep -F 'need to reconcile' | sed 's/^/n3 log: /'
    wait_until 300 "every node: 6 connections loaded and active again" mesh_loaded
    for a in $MESH; do for b in $MESH; do
        [[ "$a" < "$b" ]] && assert_esp_ping geneve 6081 "$a" "$b"
    done; done
    for a in n3 n4; do node_remove "$a"; done
    for a in left right; do
        for b in n3 n4; do vsctl "$a" --no-wait del-port br-ipsec "$(port_to "$a" "$b")" || fail "$a: del-port"; done
    done
    tunnel_remove
}
