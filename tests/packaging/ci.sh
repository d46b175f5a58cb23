#!/usr/bin/env bash
# CI for packaging: build the .deb (offline, with the network unshared) and the RPM from a
# clean copy of the tree, lint the .deb, install it, verify the installed unit, and run the
# installed binaries. One release build serves both packages (same tree, same target dir).
# Needs root (apt-get, unshare, dpkg). Leaves the machine as it found it except for the
# packages it installs to build and to satisfy the .deb's dependencies.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
start=$SECONDS
step() { printf '\n=== packaging: %s (%ss)\n' "$*" "$((SECONDS - start))"; }
fail() { echo "packaging: FAILED: $*" >&2; exit 1; }

step "build tools"
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -q -y -o DPkg::Lock::Timeout=600 "$@"; }
if ! command -v dh >/dev/null || ! command -v lintian >/dev/null || ! command -v rpmbuild >/dev/null ||
    ! command -v cpio >/dev/null; then
    apt_get update
    apt_get install --no-install-recommends cpio debhelper dpkg-dev fakeroot lintian rpm
fi

work="$(mktemp -d /tmp/ovs-monitor-ipsec-pkg.XXXXXX)"
trap 'rm -rf "$work"' EXIT
src="$work/ovs-monitor-ipsec"
mkdir -p "$src"
step "clean copy of the tree in $src"
# Tracked and new (not ignored) files: what a clean checkout of this tree would hold.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    tar --null --files-from=- --create --file=-) | tar --extract --file=- --directory="$src"
export CARGO_TARGET_DIR="$work/target"

step "fetch crates (the only step that may use the network)"
(cd "$src" && cargo fetch --locked)

step "dpkg-buildpackage with the network unshared"
(cd "$src" && unshare --net -- dpkg-buildpackage -us -uc -b) > "$work/deb-build.log" 2>&1 ||
    { tail -40 "$work/deb-build.log"; fail "dpkg-buildpackage"; }
deb="$(ls "$work"/ovs-monitor-ipsec_*.deb)"
dpkg-deb -c "$deb" | tee "$work/deb-contents"
for path in ./usr/sbin/ovs-monitor-ipsec ./usr/sbin/ovs-monitor-ipsec-ctl \
    ./usr/share/openvswitch/scripts/ovs-monitor-ipsec ./lib/systemd/system/openvswitch-ipsec.service \
    ./etc/default/openvswitch-ipsec ./usr/share/man/man8/ovs-monitor-ipsec.8.gz \
    ./usr/share/openvswitch/ipsec/templates/README ./etc/openvswitch/ipsec/templates/README \
    ./usr/share/doc/ovs-monitor-ipsec/howto.md; do
    grep -q " $path" "$work/deb-contents" || fail "$path is not in the .deb"
done
dpkg-deb -f "$deb" Provides Conflicts Replaces Depends

step "lintian"
lintian --fail-on error,warning --display-info "$deb"

step "rpmbuild (reuses the release build)"
# dpkg-buildpackage exported Debian's C build flags; the C code in ring depends on them, so
# the same flags here let cargo reuse everything it built for the .deb.
(cd "$src" && eval "$(dpkg-buildflags --export=sh)" && rpmbuild -bb --build-in-place --nodeps \
    --define "_topdir $work/rpmbuild" rpm/ovs-monitor-ipsec.spec) > "$work/rpm-build.log" 2>&1 ||
    { tail -40 "$work/rpm-build.log"; fail "rpmbuild"; }
rpm="$(ls "$work"/rpmbuild/RPMS/*/ovs-monitor-ipsec-*.rpm)"
rpm -qlp "$rpm"
rpm -qp --provides --requires --conflicts --obsoletes "$rpm" > "$work/rpm-relations"
grep -E 'openvswitch|libreswan' "$work/rpm-relations"
mkdir "$work/rpmroot"
(cd "$work/rpmroot" && rpm2cpio "$rpm" | cpio -id --quiet)
grep -qx 'Environment=IKE_DAEMON=libreswan' "$work/rpmroot/usr/lib/systemd/system/openvswitch-ipsec.service" ||
    fail "the RPM unit does not default to Libreswan"
cmp "$work/rpmroot/usr/sbin/ovs-monitor-ipsec" "$src/debian/ovs-monitor-ipsec/usr/sbin/ovs-monitor-ipsec" >/dev/null 2>&1 ||
    echo "note: the RPM binary differs from the .deb one (the .deb's is stripped)"

step "install the .deb"
apt_get install --no-install-recommends "$deb"
ovs-monitor-ipsec --version
ovs-monitor-ipsec --help
ovs-monitor-ipsec-ctl --version
/usr/share/openvswitch/scripts/ovs-monitor-ipsec --version
man -w ovs-monitor-ipsec >/dev/null

step "systemd-analyze verify the installed unit"
systemd-analyze verify /lib/systemd/system/openvswitch-ipsec.service
# The RPM's variant, against the same installed binaries (its OVS unit is named differently).
sed 's/Requires=openvswitch.service/Requires=openvswitch-switch.service/; s/After=openvswitch.service/After=openvswitch-switch.service/; s/PartOf=openvswitch.service/PartOf=openvswitch-switch.service/' \
    "$work/rpmroot/usr/lib/systemd/system/openvswitch-ipsec.service" > "$work/openvswitch-ipsec.service"
systemd-analyze verify "$work/openvswitch-ipsec.service"

step "remove the .deb"
apt_get purge ovs-monitor-ipsec
step "done in $((SECONDS - start)) s"
