#!/usr/bin/env bash
# Prepares the guest once and caches it under target/e2e/: Debian's distribution kernel (resolved
# through linux-image-amd64, never pinned by ABI name), its modules with a depmod index, and a
# busybox initrd that mounts the host's / over 9p. Prints the kernel release on stdout.
#
# Why Debian's kernel: the host kernel has no esp4 and no OVS datapath; a stock distribution kernel
# has every module the scenarios need (openvswitch, geneve, vxlan, esp4, gcm, nf_tables) as files,
# so no kernel is built here. A rerun with the cache in place touches no network.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${E2E_CACHE:?E2E_CACHE must name the cache directory}
mkdir -p "$cache"

if [ ! -s "$cache/kernel.release" ] || [ ! -d "$cache/kernel/lib/modules/$(cat "$cache/kernel.release")" ]; then
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    [ -n "$pkg" ] || { echo "prepare: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    (cd "$tmp" && apt-get download -q "$pkg" >&2)
    rm -rf "$cache/kernel"
    dpkg -x "$tmp"/"$pkg"_*.deb "$cache/kernel"
    rm -rf "$tmp"
    release=${pkg#linux-image-}
    depmod -b "$cache/kernel" "$release"
    echo "$release" > "$cache/kernel.release"
    rm -f "$cache/initrd.gz"
fi
release=$(cat "$cache/kernel.release")

# The initrd depends only on the kernel and on initrd-init.sh: rebuild when either is newer.
if [ ! -s "$cache/initrd.gz" ] || [ "$here/initrd-init.sh" -nt "$cache/initrd.gz" ]; then
    ird=$(mktemp -d "$cache/ird.XXXXXX")
    mkdir -p "$ird"/{bin,proc,sys,dev,host,newroot,rw,mods}
    cp "$(command -v busybox)" "$ird/bin/busybox"
    for a in sh mount mkdir insmod switch_root echo cat poweroff sleep; do ln -s busybox "$ird/bin/$a"; done
    # Only what mounting the host root needs; everything else is loaded by modprobe after switch_root.
    i=0
    for m in virtio_pci 9pnet_virtio 9p overlay; do
        modprobe -d "$cache/kernel" -S "$release" --show-depends "$m"
    done | awk '$1=="insmod" && !seen[$2]++ {print $2}' | while read -r ko; do
        i=$((i + 1))
        f=$(printf '%02d-%s' "$i" "$(basename "$ko")")
        cp "$ko" "$ird/mods/$f"
        echo "/mods/$f" >> "$ird/modlist"
    done
    install -m 755 "$here/initrd-init.sh" "$ird/init"
    (cd "$ird" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$cache/initrd.gz.new")
    mv "$cache/initrd.gz.new" "$cache/initrd.gz"
    rm -rf "$ird"
fi
# Certificates for the self-signed and CA-signed scenarios, made on the host (native speed;
# RSA key generation under TCG takes seconds): pki/self/<node>-{cert,privkey}.pem (CN=<node>,
# self-signed) and pki/ca/{cacert.pem,<node>-cert.pem,<node>-privkey.pem} (signed by one CA),
# for the nodes left, right, n3 and n4; pki/ca2/ is a second CA with new certificates and keys
# for the same names (the certificate update of libreswan-cert-update).
# Test-only keys, valid for ten years; the cache keeps them until this script changes. Each
# certificate has subjectAltName DNS:<CN>: Libreswan 4 matches the peer's ID (@<CN>, from
# remote_name or the certificate) against the SAN only ("contains no subjectAltName extension
# to match ID_FQDN"), as ovs-pki's certificates provide.
if [ ! -s "$cache/pki/ca/right-cert.pem" ] || [ "$here/prepare.sh" -nt "$cache/pki" ]; then
    pki=$(mktemp -d "$cache/pki.XXXXXX")
    mkdir -p "$pki/self"
    ossl() { openssl "$@" 2> /dev/null || { echo "prepare: openssl $1 failed" >&2; exit 1; }; }
    for n in left right n3 n4; do
        ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$n" -addext "subjectAltName=DNS:$n" \
            -keyout "$pki/self/$n-privkey.pem" -out "$pki/self/$n-cert.pem"
    done
    for ca in ca ca2; do
        mkdir -p "$pki/$ca"
        ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=e2e-$ca" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
            -keyout "$pki/$ca/ca-privkey.pem" -out "$pki/$ca/cacert.pem"
        for n in left right n3 n4; do
            ossl req -newkey rsa:2048 -nodes -subj "/CN=$n" -addext "subjectAltName=DNS:$n" \
                -keyout "$pki/$ca/$n-privkey.pem" -out "$pki/$ca/$n.csr"
            ossl x509 -req -days 3650 -in "$pki/$ca/$n.csr" -copy_extensions copy -CA "$pki/$ca/cacert.pem" \
                -CAkey "$pki/$ca/ca-privkey.pem" -set_serial "0x$(openssl rand -hex 8)" -out "$pki/$ca/$n-cert.pem"
        done
    done
    rm -rf "$cache/pki" && mv "$pki" "$cache/pki"
fi
echo "$release"
