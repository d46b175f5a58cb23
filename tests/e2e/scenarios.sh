# The e2e scenarios (sourced by run.sh for their names, and in the guest with lib.sh to run them).
# A scenario is a function scenario_<name with - as _> that builds both nodes, brings the tunnel
# up and asserts; it ends the scenario through `fail` on the first broken expectation.

E2E_ALL_SCENARIOS="static-geneve stroke-vxlan libreswan-geneve vici-geneve"

# e2e_run NAME: runs one scenario with its results directory.
e2e_run() {
    export E2E_OUT=/e2e-out/$1
    mkdir -p "$E2E_OUT"
    t "scenario $1, monitor $E2E_BIN"
    pair_up
    "scenario_${1//-/_}"
    t "PASS"
}

# Static keys (--ike-daemon=none): no IKE daemon; each node publishes its key generation in
# external_ids:ipsec-generation and the CMS (here, this script) copies it into the peer's
# options:ipsec_peer_generation; only then can each node derive the peer's outbound key.
has_generation() { [ -n "$(ext_id "$1" ipsec-generation)" ]; }

node_static() {
    node_up "$1"
    monitor_up "$1" --ike-daemon=none
    tunnel_add "$1" geneve local_ip="$(underlay_ip "$1")"
    wait_until 60 "$1 to publish external_ids:ipsec-generation" has_generation "$1"
}

scenario_static_geneve() {
    local s gen
    on_both node_static
    for s in left right; do
        gen=$(ext_id "$(peer_of "$s")" ipsec-generation)
        vsctl "$s" set interface tun options:ipsec_peer_generation="$gen" || fail "$s: set peer generation"
    done
    wait_converged 90
    assert_esp_ping 6081
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
    tunnel_add "$1" vxlan
}

scenario_stroke_vxlan() {
    on_both node_stroke
    wait_converged 120
    assert_esp_ping 4789
}

# strongSwan over VICI: charon runs before the monitor (which never restarts it in this mode).
node_vici() {
    node_up "$1"
    charon_log_conf "$1"
    nx "$1" ipsec start > "$(bdir "$1")/starter.out" 2>&1 || fail "$1: ipsec start"
    wait_until 30 "$1: charon's VICI socket" nx "$1" test -S /run/charon.vici
    monitor_up "$1" --ike-daemon=strongswan --strongswan-mode=vici
    tunnel_add "$1" geneve
}

scenario_vici_geneve() {
    on_both node_vici
    wait_converged 120
    assert_esp_ping 6081
}

# Libreswan 4.10 unpacked in /opt/lsw (it conflicts with strongSwan's packages): pluto runs with
# the node's files below --root-prefix, as in OVS's system-ipsec.at.
node_libreswan() {
    local s=$1 b r
    node_up "$s"
    b=$(bdir "$s")
    r=$b/root
    mkdir -p "$r/etc/ipsec.d" "$r/usr/sbin" "$r/run/pluto"
    printf '#!/bin/sh\nexec /opt/lsw/ipsec "$@"\n' > "$r/usr/sbin/ipsec"
    chmod 755 "$r/usr/sbin/ipsec"
    : > "$r/etc/ipsec.conf"
    : > "$r/etc/ipsec.secrets"
    /opt/lsw/ipsec initnss --nssdir "$r/etc/ipsec.d" > /dev/null || fail "$s: initnss"
    nx "$s" /opt/lsw/ipsec pluto --config "$r/etc/ipsec.conf" --ipsecdir "$r/etc" \
        --nssdir "$r/etc/ipsec.d" --logfile "$b/pluto.log" --secretsfile "$r/etc/ipsec.secrets" \
        --rundir "$r/run/pluto" || fail "$s: pluto did not start"
    wait_until 30 "$s: pluto's control socket" test -S "$r/run/pluto/pluto.ctl"
    monitor_up "$s" --ike-daemon=libreswan --no-restart-ike-daemon --root-prefix="$r" \
        --ipsec-conf=/etc/ipsec.conf --ipsec-d=/etc/ipsec.d --ipsec-secrets=/etc/ipsec.secrets \
        --ipsec-ctl=/run/pluto/pluto.ctl
    tunnel_add "$s" geneve
}

scenario_libreswan_geneve() {
    on_both node_libreswan
    wait_converged 120
    assert_esp_ping 6081
}
