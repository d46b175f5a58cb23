#!/bin/sh
# One command for the side-by-side benchmark (see docs/performance.md):
#   tests/bench/compare.sh [--ours-only] [--modes stroke,libreswan,xfrm,vici] [--sizes 1,100,1000,10000]
# Run as root (network namespaces). Installs what the bench needs when it is missing (the
# Python peer `openvswitch-ipsec` and its tools, OVS, charon and swanctl for VICI mode, nft
# for static keys; never libreswan, which conflicts with strongSwan: Libreswan mode runs
# against the bench's stub), builds our release binary, then runs compare.py, which prints
# a markdown table.
set -e
cd "$(dirname "$0")/../.."
PACKAGES="openvswitch-switch openvswitch-common openvswitch-ipsec python3-openvswitch
libnss3-tools strongswan-charon strongswan-swanctl iproute2 nftables"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "compare.sh: installing$missing" >&2
    # Keep the packages' postinst from starting system daemons: the bench runs its own.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
    rm -f /usr/sbin/policy-rc.d
fi
cargo build --release --bin ovs-monitor-ipsec
exec /usr/bin/python3 tests/bench/compare.py "$@"
