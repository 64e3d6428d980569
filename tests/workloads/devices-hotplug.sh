# DEVICES=e1000,nvme,virtio-blk with the driver under test bound to the e1000: asks the host
# for a hot-unplug (the driver's remove() runs) and a re-plug (its probe() runs
# again), checks a request the host refuses and an unplug that times out, unplugs and
# re-plugs the virtio disk, then runs
# the devices' default workloads (ping through the e1000, both disks written and read
# back) before and after a suspend to RAM.
pci=/sys/bus/pci/devices/0000:00:04.0
bound() { [ -e $pci/driver ]; }
# Up to 10 s for the command $1 to succeed (run until it does, not once more).
wait_for() { i=0; until eval "$1"; do [ $i -lt 100 ] || return 1; sleep 0.1; i=$((i + 1)); done; }
bound || { echo "e1000: no driver before the unplug"; exit 1; }
kedr-device unplug e1001 && { echo "an unknown device was unplugged"; exit 1; }
kedr-device unplug e1000 || exit 1
[ ! -e $pci ] || { echo "e1000: still there after the unplug"; exit 1; }
kedr-device plug e1000 || exit 1
wait_for bound || { echo "e1000: not bound after the re-plug"; exit 1; }
echo "e1000: bound again to $(basename "$(readlink $pci/driver)")"
# The guest needs longer than a millisecond to release it: the host says so.
kedr-device unplug e1000 0.001 && { echo "an unplug in 1 ms"; exit 1; }
wait_for '[ ! -e $pci ]' || { echo "e1000: never released"; exit 1; }
# QEMU frees the id once the guest's eject completes, a moment after sysfs forgets it.
wait_for 'kedr-device plug e1000' || exit 1
wait_for bound || { echo "e1000: not bound after the second re-plug"; exit 1; }
# A disk whose -drive QEMU deletes with it (virtio-blk; the nvme keeps its own) comes
# back on the same image: the host adds the drive again before the device.
kedr-device unplug virtio_blk || exit 1
wait_for 'kedr-device plug virtio_blk' || exit 1
sh /kedr/devices.sh || exit 1
# Suspend to RAM (S3), woken by the host through QMP; the devices work after it.
kedr-device suspend || exit 1
sh /kedr/devices.sh
