# Observability scenarios (sourced by scenarios.sh; on demand, not in ci.sh): what the monitor
# reports when the kernel's IPsec state is broken under a working tunnel, on a kernel with ESP.
#   static-no-inbound-traffic  the peer drops the ESP it receives: `diagnose --json` on the
#                              sending node reports no-inbound-traffic, the tunnel still up
#   KIND-policy-delete         the tunnel's outbound policy, or its busiest outbound ESP SA,
#   KIND-sa-delete             deleted by hand (`ip xfrm ... delete`), several times: the
#                              monitor's log line (the XFRM notification path) and how long it
#                              took, then the ping over ESP works again (and how long that took)

extra static-no-inbound-traffic
for k in $E2E_KINDS; do
    extra "$k-policy-delete"
    extra "$k-sa-delete"
    eval "scenario_${k}_policy_delete() { xfrm_delete $k-policy-delete policy; }"
    eval "scenario_${k}_sa_delete() { xfrm_delete $k-sa-delete sa; }"
done

# no_inbound_traffic NAME: a geneve tunnel up; right's input hook drops ESP (table inet
# e2e_esp) while left pings; left's `diagnose tun --json` has no-inbound-traffic, left is still
# `up`; without the rule, diagnose finds traffic both ways again on both nodes.
no_inbound_traffic() {
    local d=$E2E_OUT/diagnose-dropped
    geneve_up "$1"
    wait_converged
    assert_esp_ping geneve 6081
    printf 'table inet e2e_esp {\n chain in { type filter hook input priority -10; meta l4proto esp counter drop; }\n}\n' |
        nx right nft -f - || fail "right: cannot add the ESP drop rule"
    t "right: inbound ESP dropped"
    ping_start left dropped
    sleep 1
    ovs-appctl -t "$(bdir left)/mon.ctl" diagnose tun --json > "$d.json" 2>&1 || fail "left: diagnose --json: $(cat "$d.json")"
    ovs-appctl -t "$(bdir left)/mon.ctl" diagnose tun > "$d.txt" 2>&1 || fail "left: diagnose: $(cat "$d.txt")"
    # Every echo request is lost (the replies are dropped): no ping_stop, which counts losses.
    kill -INT "$(cat "$E2E_WORK/ping-dropped.pid")" 2> /dev/null
    wait "$(cat "$E2E_WORK/ping-dropped.pid")" 2> /dev/null
    sed 's/^/left diagnose, ESP dropped by right: /' "$d.txt"
    t "right: $(nx right nft list chain inet e2e_esp in | grep -o 'packets [0-9]*') of ESP dropped"
    grep -q '"code":"no-inbound-traffic"' "$d.json" || fail "left: diagnose --json has no no-inbound-traffic: $(cat "$d.json")"
    state_is left up || fail "left: ipsec-state is $(ext_id left ipsec-state), not up, with only ESP dropped"
    nx right nft delete table inet e2e_esp || fail "right: cannot remove the ESP drop rule"
    wait_converged 120
    assert_diagnose_healthy
    tunnel_remove
}
scenario_static_no_inbound_traffic() { no_inbound_traffic static-no-inbound-traffic; }

# XFRM_ROUNDS deletions of each kind per scenario.
XFRM_ROUNDS=3

# busiest_out_sa: the SPI of left's SA to right that has carried the most packets (the one the
# ping uses: an IKE tunnel over UDP has a Child SA per direction of the port).
busiest_out_sa() {
    ip -n left -s xfrm state | awk -v s="$(underlay_ip left)" -v d="$(underlay_ip right)" '
        $1 == "src" { mine = ($2 == s && $4 == d); next }
        mine && $1 == "proto" && $2 == "esp" { spi = $4; sub(/\(.*/, "", spi) }
        mine && /lifetime current:/ { cur = 1; next }
        cur { n = $2; sub(/\(packets\)/, "", n); if (n + 0 >= best) { best = n + 0; pick = spi }; cur = 0 }
        END { print pick }'
}

# out_policy_index PORT: the index of left's outbound policy to right selecting udp dport PORT
# (or GRE when PORT is 0).
out_policy_index() {
    local sel="proto udp dport $1"
    [ "$1" != 0 ] || sel="proto gre"
    ip -n left -s xfrm policy | awk -v h="src $(underlay_ip left)/32 dst $(underlay_ip right)/32 $sel" '
        $1 == "src" { mine = (index($0, h) == 1); next }
        mine && $1 == "dir" && $2 == "out" { for (i = 1; i < NF; i++) if ($i == "index") print $(i + 1); mine = 0 }'
}

# log_epoch SIDE MARK TEXT: the time (epoch seconds, ms) of the first monitor log line after
# MARK containing TEXT.
log_epoch() {
    local ts
    ts=$(log_since "$1" "$2" | grep -F -m1 -- "$3" | cut -d'|' -f1)
    date -u -d "$(echo "$ts" | sed 's/T/ /; s/Z$//')" +%s.%3N
}

# ms A B: (B - A) in milliseconds.
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

# stats NAME VALUES...: "NAME min/median/max ms" of the values.
stats() {
    local name=$1
    shift
    printf '%s\n' "$@" | sort -n | awk -v n="$name" '{ v[NR] = $1 } END { printf "%s: min %d, median %d, max %d ms (%d)\n", n, v[1], v[int((NR + 1) / 2)], v[NR], NR }'
}

# delete_round WHAT ID: deletes left's outbound SA (WHAT=sa, ID=spi) or policy (WHAT=policy,
# ID=index) and prints "DETECT RECOVER IP" in ms: from just before `ip` ran to the monitor's log
# line, and to ipsec-state up on both ends with a ping each way ("-" when that did not happen
# within 120 s), and how long `ip` itself ran.
delete_round() {
    local what=$1 id=$2 m t0 t1 t2 line deadline=$((SECONDS + 120))
    m=$(log_mark left)
    case "$what" in
        sa)
            line="spi $id was deleted"
            t0=$(date +%s.%N)
            ip -n left xfrm state delete src "$(underlay_ip left)" dst "$(underlay_ip right)" proto esp spi "$id" ||
                fail "left: ip xfrm state delete spi $id"
            ;;
        policy)
            line="XFRM out policy $(underlay_ip left) -> $(underlay_ip right)"
            t0=$(date +%s.%N)
            ip -n left xfrm policy delete dir out index "$id" || fail "left: ip xfrm policy delete index $id"
            ;;
    esac
    t1=$(date +%s.%N)
    wait_until 30 "left: the monitor to log \"$line\"" log_has left "$m" "$line"
    log_since left "$m" | grep -F -- "$line" | cut -d'|' -f4- | sed 's/^/left log: /' >&2
    # Static keys: the monitor draws a new key generation for the tunnel, which the CMS (here
    # the harness) hands to the peer; the recovery time includes that relay.
    if [ "$what" = sa ] && [ "$(cat "$E2E_WORK/kind")" = static ]; then
        static_relay >&2
    fi
    until converged > /dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.5
    done
    t2=-
    converged > /dev/null 2>&1 && t2=$(ms "$t0" "$(date +%s.%N)")
    echo "$(ms "$t0" "$(log_epoch left "$m" "$line")") $t2 $(ms "$t0" "$t1")"
}

# xfrm_delete NAME WHAT: XFRM_ROUNDS times left's outbound policy for the geneve port
# (WHAT=policy) or its busiest outbound SA (WHAT=sa) is deleted. Each deletion must be noticed
# (log line), and the tunnel must work again (up on both ends, a ping each way, then ESP both
# ways and nothing in clear) within 120 s; a tunnel that does not ends the rounds and fails the
# scenario. Prints the detection and recovery times.
xfrm_delete() {
    local what=$2 i id r d v ipms det=() rec=()
    geneve_up "$1"
    wait_converged
    assert_esp_ping geneve 6081
    for i in $(seq "$XFRM_ROUNDS"); do
        # A pass that changed the tunnel makes its IKE daemon's removals in the next 5 s our
        # own doing (app/xfrm_watch.rs).
        sleep 6
        case "$what" in
            sa) id=$(busiest_out_sa) ;;
            policy) id=$(out_policy_index 6081) ;;
        esac
        [ -n "$id" ] || fail "left: no outbound $what of the tunnel to delete"
        t "left: deleting outbound $what $id"
        r=$(delete_round "$what" "$id") || exit 1
        read -r d v ipms <<< "$r"
        t "left: $what $id deleted (ip ran ${ipms} ms): logged after $d ms, up and ping again after $v ms"
        det+=("$d")
        [ "$v" != - ] || break
        rec+=("$v")
        assert_esp_ping geneve 6081
    done
    t "$(stats "$1: $what deleted -> log line" "${det[@]}")"
    [ ${#rec[@]} -eq 0 ] || t "$(stats "$1: $what deleted -> up and ping" "${rec[@]}")"
    [ "$v" != - ] || fail "the tunnel did not work again within 120 s after its $what was deleted"
    tunnel_remove
}
