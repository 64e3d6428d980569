# Write through a ram disk and read it back (brd allocates a page per 4 KiB written).
set -e
[ -b /dev/ram0 ] || mknod /dev/ram0 b 1 0
dd if=/dev/urandom of=/tmp/data bs=4096 count=64 2>/dev/null
dd if=/tmp/data of=/dev/ram0 bs=4096 conv=fsync 2>/dev/null
dd if=/dev/ram0 of=/tmp/back bs=4096 count=64 2>/dev/null
cmp /tmp/data /tmp/back && echo "ram disk round trip ok"
