# Attach a file in tmpfs to a loop device, write through it, read back, detach.
set -e
dd if=/dev/zero of=/tmp/disk.img bs=1024 count=4096 2>/dev/null
losetup /dev/loop0 /tmp/disk.img 2>/dev/null || { mknod /dev/loop0 b 7 0; losetup /dev/loop0 /tmp/disk.img; }
echo "through the loop" | dd of=/dev/loop0 conv=fsync 2>/dev/null
losetup -d /dev/loop0
head -c 16 /tmp/disk.img; echo
