# Attach a file in tmpfs to a loop device, write through it, read back, detach.
set -e
# A step that fails (a fault injected by a sweep) still leaves the device detached,
# so the module can be unloaded: the exit status stays the failed step's.
trap 'losetup -d /dev/loop0 2>/dev/null || true' EXIT
dd if=/dev/zero of=/tmp/disk.img bs=1024 count=4096 2>/dev/null
losetup /dev/loop0 /tmp/disk.img 2>/dev/null || { mknod /dev/loop0 b 7 0; losetup /dev/loop0 /tmp/disk.img; }
echo "through the loop" | dd of=/dev/loop0 conv=fsync 2>/dev/null
losetup -d /dev/loop0
head -c 16 /tmp/disk.img; echo
