#!/bin/sh
# /init of the e2e initrd (busybox). Mounts the host's / read-only over virtio-9p with a tmpfs
# overlay on top, so every binary installed on the host exists in the guest without building a
# root filesystem; mounts the read-write results share at /e2e-out, and hands over to the
# boot script the host wrote there (which knows the repository path and the scenarios).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "E2E-INITRD: $*"; poweroff -f; }
for m in $(cat /modlist); do insmod "$m" || echo "E2E-INITRD: insmod $m failed"; done
# cache=loose: the guest keeps what it read of the host (which does not change during a run) in
# its page cache; without it every exec of ip, ovs-vsctl or nft reads its binary and libraries
# over 9p again, the main cost of a scenario under TCG. A larger msize means fewer round trips.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host ||
    fail "9p mount of the host root failed"
mount -t tmpfs tmpfs /rw && mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay failed"
mkdir -p /newroot/e2e-out
mount -t 9p -o trans=virtio,version=9p2000.L e2eout /newroot/e2e-out || fail "9p mount of the results share failed"
echo "E2E-INITRD: switching root at $(cat /proc/uptime)"
exec switch_root /newroot /bin/sh /e2e-out/boot.sh
