# The device pack's hotplug step on a stock disk driver, by hand: disk I/O over and
# over in the background, hot-unplug the controller ($KEDR_UNPLUG_ID, else ahci) at
# 00:04.0 and plug it in again, stop the I/O; if the background I/O has not ended 30 s
# later, the kernel's list of blocked tasks (sysrq w) says where it waits.
id=${KEDR_UNPLUG_ID:-ahci}
pci=/sys/bus/pci/devices/0000:00:04.0
disk() { for u in $(find $pci/ -name uevent 2>/dev/null); do
  grep -q '^DEVTYPE=disk' $u && sed -n 's/^DEVNAME=//p' $u && return; done; }
dev=$(disk); echo "disk: $dev"
dd if=/dev/urandom of=/tmp/in bs=4096 count=16 2>/dev/null
rm -f /tmp/stop /tmp/runs
( while [ ! -e /tmp/stop ]; do d=$(disk)
    [ -n "$d" ] && dd if=/tmp/in of=/dev/$d bs=4096 count=16 conv=fsync 2>/dev/null
    echo >> /tmp/runs; sleep 0.1; done ) &
bg=$!
sleep 0.5
kedr-device unplug $id 30
i=0; while [ -e $pci ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
kedr-device plug $id
sleep 5
echo "after the re-plug: disk $(disk), driver $(basename "$(readlink $pci/driver)")"
touch /tmp/stop
( sleep 30; echo "background I/O still running after 30 s"; echo w > /proc/sysrq-trigger ) &
watch=$!
wait $bg; echo "background I/O ended after $(wc -l < /tmp/runs) runs"
kill $watch 2>/dev/null
dmesg | tail -n 60
