# Hot-unplug the attached device (its QEMU id is $KEDR_UNPLUG_ID, else the first
# catalog name with '-' as '_') from its stock driver, waiting up to 90 s for the
# guest to release it instead of the device pack's 15 s, and say how long it took;
# the kernel's messages since the unplug show what remove() and the eject did.
id=${KEDR_UNPLUG_ID:-intel_hda}
ls /sys/bus/pci/devices/ | tr '\n' ' '; echo
for d in /sys/bus/pci/devices/*; do [ -e $d/driver ] && echo "${d##*/} $(basename $(readlink $d/driver))"; done
n=$(dmesg | wc -l)
t0=$(cut -d' ' -f1 /proc/uptime)
kedr-device unplug $id 90; rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "unplug of $id: status $rc, from $t0 to $t1 s of uptime"
dmesg | tail -n +$((n + 1))
ls /sys/bus/pci/devices/ | tr '\n' ' '; echo
kedr-device plug $id; sleep 5; dmesg | tail -n 20
