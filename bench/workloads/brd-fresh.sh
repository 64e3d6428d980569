# tests/workloads/brd-ramdisk.sh's round trip at another offset each run (0, 64, ...,
# 448 pages, then again), so every run allocates its 64 pages: brd keeps a page once
# written, until it is unloaded, and the same offset again allocates nothing.
set -e
[ -b /dev/ram0 ] || mknod /dev/ram0 b 1 0
n=$(cat /tmp/brd-fresh.runs 2>/dev/null || echo 0)
echo $((n + 1)) > /tmp/brd-fresh.runs
at=$((n % 8 * 64))
dd if=/dev/urandom of=/tmp/data bs=4096 count=64 2>/dev/null
dd if=/tmp/data of=/dev/ram0 bs=4096 seek=$at conv=fsync 2>/dev/null
dd if=/dev/ram0 of=/tmp/back bs=4096 skip=$at count=64 2>/dev/null
cmp /tmp/data /tmp/back && echo "ram disk round trip at page $at ok"
