#!/usr/bin/env bash
# Unpacks Debian's libreswan into /opt/lsw without installing it (it conflicts with strongSwan),
# links the helper directory pluto hard-codes, and installs a wrapper /opt/lsw/ipsec that the
# real-daemon tests use as `ipsec`. Idempotent.
set -euo pipefail
if [ ! -x /opt/lsw/usr/sbin/ipsec ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -q libreswan)
    dpkg -x "$tmp"/libreswan_*.deb /opt/lsw
fi
# pluto execs /usr/libexec/ipsec/addconn by absolute path.
if [ ! -e /usr/libexec/ipsec ]; then
    mkdir -p /usr/libexec
    ln -s /opt/lsw/usr/libexec/ipsec /usr/libexec/ipsec
fi
cat > /opt/lsw/ipsec.new <<'EOS'
#!/bin/sh
IPSEC_EXECDIR=/opt/lsw/usr/libexec/ipsec IPSEC_SBINDIR=/opt/lsw/usr/sbin exec /opt/lsw/usr/sbin/ipsec "$@"
EOS
chmod 755 /opt/lsw/ipsec.new
mv /opt/lsw/ipsec.new /opt/lsw/ipsec
