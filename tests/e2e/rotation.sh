# The CA rotation scenarios (sourced by scenarios.sh): KIND-ca-rotation for each IKE mode
# (stroke, vici, libreswan).
#
# Two nodes with certificates from CA1 (prepare.sh's `ca`) and a geneve tunnel authenticated
# by the CA (remote_name) go through the rotation of docs/howto.md ("Rotate the CA"), every
# file replaced as that section says (a new file renamed over the old one, same paths):
#   1. both trust CA1 and CA2 (other_config:ca_cert becomes a bundle of the two);
#   2. left is re-issued by CA2 (new certificate and key, prepare.sh's `ca2`);
#   3. right is re-issued by CA2;
#   4. both trust CA2 only.
# A `ping -i 0.2` over the overlay runs throughout and must lose nothing to the rotation's steps;
# what it loses while a forced re-authentication replaces the SAs is counted apart and reported.
# After each step, once the changed nodes' monitors have handed the new credentials to their
# IKE daemon: both nodes still show ipsec-state=up and both hold exactly the kernel SAs (src,
# dst, SPI) they had before the step (loading credentials tore nothing down); then a
# re-authentication is forced, which must succeed with each node's daemon naming the CA that
# now vouches for the peer (the new credentials are really in use). How a re-authentication is
# forced differs per mode (rot_reauth): VICI and Libreswan re-authenticate make-before-break
# and must keep ipsec-state=up throughout; stroke (`ipsec down` + `stroke up-nb`) takes the SAs
# down first, so there ipsec-state may leave `up` until the new SAs are installed: such
# samples are counted apart like the pings. The figures (pings sent and lost, the SPIs around
# each step, the daemons' log lines naming the CA) go to rotation.txt in the scenario's
# directory.

extra stroke-ca-rotation
extra vici-ca-rotation
extra libreswan-ca-rotation

# rot_put SRC DST: DST gets SRC's content the way the howto says: a new file renamed over it.
rot_put() { cp "$1" "$2.tmp" && mv "$2.tmp" "$2" || fail "cannot write $2"; }

# rot_dir SIDE: the node's certificate, key and CA bundle during the rotation.
rot_dir() { echo "$E2E_WORK/rotation/$1"; }

# rot_record TEXT: a line of the scenario's figures (also in the trace).
rot_record() {
    t "$*"
    echo "$*" >> "$E2E_OUT/rotation.txt"
}

# ---- per IKE mode: the proof that the monitor handed over the credentials, and re-auth -----

# rot_cred_line KIND: what the monitor logs when it hands a changed credential to the daemon.
rot_cred_line() {
    case "$1" in
        vici) echo 'load (certificate|private key|CA certificate) ' ;;
        stroke) echo 'reloading StrongSwan credentials and connections|Refreshing StrongSwan configuration' ;;
        libreswan) echo '(Importing|Removing) certificate .* (into|from) the NSS database' ;;
    esac
}

# rot_applied SIDE MARK: since MARK the monitor logged a credential change and then the end
# of a pass that applied actions (the line pass.rs logs after the backend's apply).
rot_applied() {
    log_since "$1" "$2" | awk -v re="$(rot_cred_line "$(cat "$E2E_WORK/kind")")" '
        $0 ~ re { seen = 1 } seen && /actions planned, [0-9]+ applied/ { ok = 1 } END { exit !ok }'
}

# rot_vouched_lines SIDE CA: the lines of the node's IKE daemon log saying it accepted a peer
# certificate issued by CA (prepare.sh names them e2e-ca and e2e-ca2): charon's "using trusted
# ca certificate", pluto's "established IKE SA; authenticated peer ... issued by CA" (4.10).
# rot_vouched SIDE CA: how many there are.
rot_vouched_lines() {
    case "$(cat "$E2E_WORK/kind")" in
        vici | stroke) grep "using trusted ca certificate \"CN=e2e-$2\"" "$(bdir "$1")/charon.log" ;;
        libreswan) grep 'established IKE SA; authenticated peer' "$(bdir "$1")/pluto.log" |
            grep "issued by CA 'CN=e2e-$2'" ;;
    esac
}
rot_vouched() { rot_vouched_lines "$@" | wc -l; }

# ike_sas SIDE: the node's established IKE SAs: charon's names (VICI: `tun-1`; stroke with the
# unique id: `tun-out-1[3]`).
ike_sas() {
    case "$(cat "$E2E_WORK/kind")" in
        vici) nx "$1" swanctl --list-sas 2> /dev/null | awk -F: '/^[^ ].*ESTABLISHED/ { print $1 }' ;;
        stroke) nx "$1" ipsec statusall 2> /dev/null | awk -F: '/^ *[^ ]+\[[0-9]+\]: ESTABLISHED/ { gsub(/ /, "", $1); print $1 }' ;;
        libreswan) lsw "$1" status 2> /dev/null | awk '/ STATE_V2_ESTABLISHED_IKE_SA / {
            for (i = 1; i <= NF; i++) if ($i ~ /^#[0-9]+:$/) { gsub(/[#:]/, "", $i); print $i; next } }' ;;
    esac | sort -u
}

# lsw_whack SIDE ARGS...: `ipsec whack ARGS` on the node's pluto, given up after 60 s.
lsw_whack() {
    local s=$1
    shift
    nx "$s" timeout 60 /opt/lsw/ipsec whack "$@" --ctlsocket "$(lsw_root "$s")/run/pluto/pluto.ctl"
}

# lsw_newest_ikes SIDE: the serials of the IKE SAs pluto marks "newest": one per conn that has
# an established IKE SA (pluto lists an IKE SA under one conn). Not the highest serial: when
# both ends initiated at once, the IKE SA established last is the conn's newest.
lsw_newest_ikes() {
    lsw "$1" status 2> /dev/null | awk '/ STATE_V2_ESTABLISHED_IKE_SA / && /; newest;/ {
        for (i = 1; i <= NF; i++) if ($i ~ /^#[0-9]+:$/) { gsub(/[#:]/, "", $i); print $i; next } }'
}

# lsw_new_ikes SIDE OLD N: the node holds at least N established IKE SAs not among OLD.
lsw_new_ikes() { [ "$(ike_sas "$1" | grep -cvxF -e "${2:-none}")" -ge "$3" ]; }

# lsw_ikes_gone SIDE IKES: pluto lists none of the states IKES (serials) any more, in no state
# (an IKE SA being deleted is listed as STATE_V2_IKE_SA_DELETE until the peer answers).
lsw_ikes_gone() {
    local st sa
    st=$(lsw "$1" status 2> /dev/null) || return 1
    for sa in $2; do
        ! echo "$st" | grep -q "^000 #$sa: " || return 1
    done
}

# lsw_children_over SIDE CONNS IKES: each conn of CONNS has an established Child SA over one
# of the IKE SAs IKES (pluto's serials), as `ipsec status` lists it ("...; IKE SA #N;").
lsw_children_over() {
    local st c
    st=$(lsw "$1" status 2> /dev/null)
    for c in $2; do
        echo "$st" | grep " \"$c\":[0-9]* STATE_V2_ESTABLISHED_CHILD_SA " |
            grep -qE "IKE SA #($(echo $3 | tr ' ' '|'));" || return 1
    done
}

# rot_reauth: forces a re-authentication of the tunnel's IKE SAs, the mode's way:
# - VICI: left re-authenticates every IKE SA it has (`swanctl --rekey --reauth`,
#   make-before-break);
# - stroke (no re-auth command): left takes each IKE SA down (`ipsec down NAME[ID]`) and
#   initiates its outbound connection again (`ipsec stroke up-nb`);
# - Libreswan (an IKEv2 rekey does not authenticate again, and deleting the IKE SA makes both
#   plutos revive the connection at once): left triggers pluto's re-authentication of the
#   newest IKE SA of each conn (`whack --impair event-v2-reauth:N`: a new IKE SA from
#   IKE_SA_INIT on, next to the old one), initiates its connections again over the new IKE SA (new Child SAs next
#   to the old ones), then deletes the old IKE SAs (`whack --deletestate N`) and with them
#   the old Child SAs.
#   With an established IKE SA at hand, neither end initiates a new one when the old goes.
rot_reauth() {
    local sa n=0 conn old new conns
    case "$(cat "$E2E_WORK/kind")" in
        vici)
            for sa in $(ike_sas left); do
                nx left swanctl --rekey --reauth --ike "$sa" > /dev/null || fail "left: swanctl --rekey --reauth --ike $sa"
                n=$((n + 1))
            done
            ;;
        stroke)
            for sa in $(ike_sas left); do
                nx left ipsec down "$sa" > /dev/null || fail "left: ipsec down $sa"
                n=$((n + 1))
            done
            for conn in $(nx left awk '$1 == "conn" && $2 ~ /^tun-out-/ { print $2 }' /etc/ipsec.conf); do
                nx left ipsec stroke up-nb "$conn" > /dev/null || fail "left: ipsec stroke up-nb $conn"
            done
            ;;
        libreswan)
            old=$(ike_sas left)
            conns=$(awk '$1 == "conn" && $2 ~ /^tun-(in|out)-/ { print $2 }' "$(lsw_root left)/etc/ipsec.conf")
            [ -n "$conns" ] || fail "left: no conn of tun in its ipsec.conf"
            # The newest IKE SA of each conn that has one (there may be two when both ends
            # initiated at once): pluto expires another one instead of re-authenticating it
            # ("not re-authenticating stale IKE SA"), and a conn whose IKE SA goes without a newer
            # one is revived, over the new IKE SA, while the peer may do the same: Child SA
            # requests crossing over the new IKE SA. --asynchronous: without it whack did not
            # return (13 minutes, run 20261207-153332-3197) although the new IKE SA was up.
            n=$(echo "$old" | grep -c .)
            local reauth k
            reauth=$(lsw_newest_ikes left)
            k=$(echo "$reauth" | grep -c .)
            [ "$k" -gt 0 ] || fail "left: no IKE SA marked newest in ipsec status"
            for sa in $reauth; do
                lsw_whack left --asynchronous --impair "event-v2-reauth:$sa" > /dev/null 2>&1
            done
            wait_until 120 "left: $k re-authenticated IKE SA(s) next to [$(echo $old)]" lsw_new_ikes left "$old" "$k"
            new=$(ike_sas left | grep -vxF -e "${old:-none}")
            t "left: IKE SA(s) [$(echo $old)] re-authenticated as [$(echo $new)]"
            for conn in $conns; do
                lsw_whack left --initiate --name "$conn" --asynchronous > /dev/null 2>&1
            done
            wait_until 120 "left: Child SAs of [$(echo $conns)] over the new IKE SA(s) [$(echo $new)]" \
                lsw_children_over left "$conns" "$new"
            for sa in $old; do
                lsw_whack left --asynchronous --deletestate "$sa" > /dev/null 2>&1
            done
            # Left forgets an IKE SA once right has answered its Delete: both are rid of it.
            wait_until 120 "left: the old IKE SA(s) [$(echo $old)] deleted" lsw_ikes_gone left "$old"
            ;;
    esac
    [ "$n" -gt 0 ] || fail "no IKE SA to re-authenticate"
    t "re-authentication of $n IKE SA(s) forced"
}

# rot_reauth_keeps_up: the mode's forced re-authentication keeps ipsec-state=up (VICI's and
# Libreswan's are make-before-break); in stroke the watch counts non-up samples within it apart.
rot_reauth_keeps_up() { [ "$(cat "$E2E_WORK/kind")" != stroke ]; }

vouched_more() { [ "$(rot_vouched "$1" "$2")" -gt "$3" ]; }

# rot_watch_start / rot_watch_stop: samples both nodes' ipsec-state about once a second for
# the whole sequence; any sample other than `up` is kept in rotation-states.txt and fails the
# scenario at the end, except, where rot_reauth_keeps_up says no, one taken while a forced
# re-authentication is under way (the file rotation-reauth exists in E2E_WORK): those go to
# rotation-states-reauth.txt and are reported.
rot_watch_start() {
    : > "$E2E_OUT/rotation-states.txt"
    : > "$E2E_OUT/rotation-states-reauth.txt"
    rm -f "$E2E_WORK/rotation-reauth"
    (
        while kill -0 $$ 2> /dev/null; do
            f=$E2E_OUT/rotation-states.txt
            [ -e "$E2E_WORK/rotation-reauth" ] && ! rot_reauth_keeps_up && f=$E2E_OUT/rotation-states-reauth.txt
            l=$(ext_id left ipsec-state)
            r=$(ext_id right ipsec-state)
            [ "$l/$r" = up/up ] || echo "$(t "left $l, right $r")" >> "$f"
            sleep 1
        done
    ) &
    echo $! > "$E2E_WORK/rotation-watch.pid"
}
rot_watch_stop() {
    kill "$(cat "$E2E_WORK/rotation-watch.pid")" 2> /dev/null
    wait "$(cat "$E2E_WORK/rotation-watch.pid")" 2> /dev/null
    [ ! -s "$E2E_OUT/rotation-states.txt" ] ||
        fail "ipsec-state left up during the rotation: $(head -n 3 "$E2E_OUT/rotation-states.txt" | tr '\n' ';')"
    if rot_reauth_keeps_up; then
        rot_record "ipsec-state was up on both nodes at every sample, the forced re-authentications included"
    else
        rot_record "ipsec-state was up on both nodes at every sample of the rotation's steps; $(wc -l < "$E2E_OUT/rotation-states-reauth.txt") sample(s) not up during the forced re-authentications"
    fi
}

# ---- the sequence --------------------------------------------------------------------------

# rot_pki SIDE CERT_CA BUNDLE...: the node's certificate and key become CERT_CA's (ca or ca2)
# and its ca_cert the bundle of the CAs named (in that order).
rot_pki() {
    local s=$1 d ca
    d=$(rot_dir "$s")
    rot_put "$E2E_PKI/$2/$s-privkey.pem" "$d/$s-privkey.pem"
    rot_put "$E2E_PKI/$2/$s-cert.pem" "$d/$s-cert.pem"
    shift 2
    for ca in "$@"; do cat "$E2E_PKI/$ca/cacert.pem"; done > "$d/cacert.pem.new" &&
        mv "$d/cacert.pem.new" "$d/cacert.pem" || fail "$s: cannot write the CA bundle"
}

# rot_step WHAT LEFT_CA RIGHT_CA "LEFT_SPEC" "RIGHT_SPEC": one step of the rotation. A SPEC is
# empty (the node is not changed) or rot_pki's arguments after SIDE; LEFT_CA and RIGHT_CA are
# the CAs that vouch for left's and right's certificates after the step.
rot_step() {
    local what=$1 lca=$2 rca=$3 sl sr s spec m ml mr nl nr from
    sl=$(spis left)
    sr=$(spis right)
    ml=$(log_mark left)
    mr=$(log_mark right)
    for s in left right; do
        [ "$s" = left ] && spec=$4 || spec=$5
        [ -n "$spec" ] || continue
        # shellcheck disable=SC2086
        rot_pki "$s" $spec
    done
    t "step: $what"
    for s in left right; do
        [ "$s" = left ] && { spec=$4; m=$ml; } || { spec=$5; m=$mr; }
        [ -n "$spec" ] || continue
        wait_until 120 "$s: the monitor to hand the new credentials to its IKE daemon" rot_applied "$s" "$m"
    done
    both_up || fail "$what: ipsec-state not up on both nodes after the credentials changed"
    [ "$(spis left)" = "$sl" ] || fail "$what: left's SAs changed: [$(echo $sl)] -> [$(echo $(spis left))]"
    [ "$(spis right)" = "$sr" ] || fail "$what: right's SAs changed: [$(echo $sr)] -> [$(echo $(spis right))]"
    rot_record "$what: SAs unchanged by the credential change: left [$(echo $sl)], right [$(echo $sr)]"
    # left checks right's certificate (issued by RIGHT_CA) and right checks left's.
    nl=$(rot_vouched left "$rca")
    nr=$(rot_vouched right "$lca")
    ping_wait_more rotation 2
    from=$(($(ping_last rotation) + 1))
    touch "$E2E_WORK/rotation-reauth"
    rot_reauth
    wait_until 180 "left: a re-authentication accepting right's certificate from $rca" vouched_more left "$rca" "$nl"
    wait_until 180 "right: a re-authentication accepting left's certificate from $lca" vouched_more right "$lca" "$nr"
    wait_until 120 "ipsec-state=up on both nodes after the re-authentication" both_up
    ping_wait_more rotation 5
    rm -f "$E2E_WORK/rotation-reauth"
    echo "$from-$(ping_last rotation)" >> "$E2E_WORK/rotation-reauth-seqs"
    rot_record "$what: left's $(rot_vouched_lines left "$rca" | tail -n 1)"
    rot_record "$what: right's $(rot_vouched_lines right "$lca" | tail -n 1)"
    rot_record "$what: re-authenticated (left accepted right's certificate from $rca, right left's from $lca) during icmp_seq $from-$(ping_last rotation); SAs now left [$(echo $(spis left))], right [$(echo $(spis right))]"
}

ca_rotation() {
    export E2E_FAMILY=ipv4
    nodes_for "$(kind_of "$1")"
    local s d sent lost
    for s in left right; do
        d=$(rot_dir "$s")
        mkdir -p "$d" || fail "cannot create $d"
        rot_pki "$s" ca ca
        pki_config "$s" ca "$d"
    done
    tunnels_add geneve ca
    wait_converged
    assert_esp_ping geneve 6081
    : > "$E2E_WORK/rotation-reauth-seqs"
    ping_start left rotation
    ping_wait_more rotation 5
    rot_watch_start
    rot_step "1. both trust CA1+CA2" ca ca "ca ca ca2" "ca ca ca2"
    rot_step "2. left re-issued by CA2" ca2 ca "ca2 ca ca2" ""
    rot_step "3. right re-issued by CA2" ca2 ca2 "" "ca2 ca ca2"
    rot_step "4. both trust CA2 only" ca2 ca2 "ca2 ca2" "ca2 ca2"
    ping_wait_more rotation 5
    rot_watch_stop
    # shellcheck disable=SC2046
    ping_stop rotation $(cat "$E2E_WORK/rotation-reauth-seqs")
    read -r sent lost apart < "$E2E_OUT/ping-rotation.result"
    rot_record "$1: pings sent $sent, lost $lost (the rotation's steps), $apart more during the forced re-authentications (icmp_seq $(echo $(cat "$E2E_WORK/rotation-reauth-seqs")))"
    assert_esp_ping geneve 6081
    tunnel_remove
    for s in left right; do pki_config "$s" psk; done
}

scenario_stroke_ca_rotation() { ca_rotation stroke-ca-rotation; }
scenario_vici_ca_rotation() { ca_rotation vici-ca-rotation; }
scenario_libreswan_ca_rotation() { ca_rotation libreswan-ca-rotation; }
