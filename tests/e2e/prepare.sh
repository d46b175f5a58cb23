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
echo "$release"
