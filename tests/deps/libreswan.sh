#!/usr/bin/env bash
# Unpacks Debian's libreswan into /opt/lsw (bookworm, 4.10) and /opt/lsw5 (trixie, 5.x) without
# installing either (libreswan conflicts with strongSwan, which the strongSwan backend tests
# need on the same machine), links the helper directory pluto hard-codes, and installs the
# wrappers /opt/lsw/ipsec and /opt/lsw5/ipsec that the real-daemon tests use as `ipsec`.
# Idempotent.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x /opt/lsw/usr/sbin/ipsec ]; then
    (cd "$tmp" && apt-get download -q libreswan)
    dpkg -x "$tmp"/libreswan_*.deb /opt/lsw
fi
# pluto execs /usr/libexec/ipsec/addconn by absolute path.
if [ ! -e /usr/libexec/ipsec ]; then
    mkdir -p /usr/libexec
    ln -s /opt/lsw/usr/libexec/ipsec /usr/libexec/ipsec
fi

# Libreswan 5 from trixie, fetched through a private apt state so the host's sources stay
# bookworm's.
if [ ! -x /opt/lsw5/usr/sbin/ipsec ]; then
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/deb"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
        > "$tmp/sources.list"
    apt=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache")
    apt-get "${apt[@]}" update -q
    chmod 755 "$tmp"; chmod 777 "$tmp/deb"   # apt downloads as _apt
    (cd "$tmp/deb" && apt-get "${apt[@]}" download -q libreswan)
    dpkg -x "$tmp"/deb/libreswan_*.deb /opt/lsw5
fi
# trixie's pluto links OpenLDAP 2.6 (libldap.so.2, liblber.so.2), for fetching CRLs over
# ldap:// only; bookworm has 2.5, and trixie's 2.6 needs glibc 2.38. Stand-ins with the same
# versioned symbols, every call failing, let it start (the tests fetch no CRL).
if [ ! -e /opt/lsw5/shim/libldap.so.2 ]; then
    mkdir -p /opt/lsw5/shim
    cat > "$tmp/ldap.c" <<'EOC'
#include <stddef.h>
int ldap_url_parse(const char *u, void **d) { (void)u; (void)d; return -1; }
void ldap_free_urldesc(void *d) { (void)d; }
void *ldap_init(const char *h, int p) { (void)h; (void)p; return NULL; }
int ldap_set_option(void *l, int o, const void *v) { (void)l; (void)o; (void)v; return -1; }
int ldap_simple_bind(void *l, const char *w, const char *c) { (void)l; (void)w; (void)c; return -1; }
int ldap_result(void *l, int i, int a, void *t, void **r) { (void)l; (void)i; (void)a; (void)t; (void)r; return -1; }
int ldap_result2error(void *l, void *r, int f) { (void)l; (void)r; (void)f; return -1; }
char *ldap_err2string(int e) { (void)e; return "LDAP is not available"; }
int ldap_search_st(void *l, const char *b, int s, const char *f, char **a, int o, void *t, void **r) {
    (void)l; (void)b; (void)s; (void)f; (void)a; (void)o; (void)t; (void)r; return -1;
}
void *ldap_first_entry(void *l, void *r) { (void)l; (void)r; return NULL; }
char *ldap_first_attribute(void *l, void *e, void **b) { (void)l; (void)e; (void)b; return NULL; }
void **ldap_get_values_len(void *l, void *e, const char *a) { (void)l; (void)e; (void)a; return NULL; }
void ldap_value_free_len(void **v) { (void)v; }
void ldap_memfree(void *p) { (void)p; }
int ldap_msgfree(void *r) { (void)r; return -1; }
int ldap_unbind_s(void *l) { (void)l; return -1; }
EOC
    echo 'void ber_free(void *b, int f) { (void)b; (void)f; }' > "$tmp/lber.c"
    echo 'OPENLDAP_2.200 { global: *; };' > "$tmp/ver.map"
    for lib in ldap lber; do
        gcc -shared -fPIC -O2 -Wl,--version-script="$tmp/ver.map" -Wl,-soname,lib$lib.so.2 \
            -o /opt/lsw5/shim/lib$lib.so.2 "$tmp/$lib.c"
    done
fi

cat > /opt/lsw/ipsec.new <<'EOS'
#!/bin/sh
IPSEC_EXECDIR=/opt/lsw/usr/libexec/ipsec IPSEC_SBINDIR=/opt/lsw/usr/sbin exec /opt/lsw/usr/sbin/ipsec "$@"
EOS
cat > /opt/lsw5/ipsec.new <<'EOS'
#!/bin/sh
IPSEC_EXECDIR=/opt/lsw5/usr/libexec/ipsec IPSEC_SBINDIR=/opt/lsw5/usr/sbin LD_LIBRARY_PATH=/opt/lsw5/shim exec /opt/lsw5/usr/sbin/ipsec "$@"
EOS
for d in /opt/lsw /opt/lsw5; do
    chmod 755 $d/ipsec.new
    mv $d/ipsec.new $d/ipsec
done
