# Probe the device at 00:04.0 again (unbind from its stock driver, bind) with kprobe
# events on dma_alloc_attrs (its size, then its return value and caller) and
# dma_free_attrs, unbind it again if it bound, and list what was allocated and not
# freed: nothing for a driver whose probe and remove() match (the same run with no
# fault), and with a fault armed in the probe, what its error path left behind.
T=/sys/kernel/tracing
[ -e $T/kprobe_events ] || mount -t tracefs nodev $T
echo 'p:kdma_alloc dma_alloc_attrs size=%si' >> $T/kprobe_events || exit 1
echo 'r:kdma_ret dma_alloc_attrs ret=$retval' >> $T/kprobe_events || exit 1
echo 'p:kdma_free dma_free_attrs size=%si addr=%dx' >> $T/kprobe_events || exit 1
# The last kprobe registered on an address runs first, and the kretprobe above
# replaces the return address kedr_stock_fault reads to find its caller: load
# kedr_stock_fault again, after it.
rmmod kedr_stock_fault && insmod /kedr/modules/kedr_stock_fault.ko || exit 1
a=0000:00:04.0
drv=$(basename "$(readlink /sys/bus/pci/devices/$a/driver)")
echo $a > /sys/bus/pci/drivers/$drv/unbind && echo "unbound from $drv"
echo > $T/trace
echo 1 > $T/events/kprobes/enable
echo $a > /sys/bus/pci/drivers/$drv/bind && echo "bound again" || echo "the probe failed"
sleep 2
[ -e /sys/bus/pci/devices/$a/driver ] && echo $a > /sys/bus/pci/drivers/$drv/unbind &&
  echo "unbound again"
echo 0 > $T/events/kprobes/enable
awk '
  / kdma_alloc: / { for (i = 1; i <= NF; i++) if ($i ~ /^size=/) size[$1] = substr($i, 6) }
  / kdma_ret: /   { ret = $NF; sub(/^ret=/, "", ret)
                    if (ret != "0x0" && ret != "0") { live[ret] = size[$1] " from " $6; n++ } }
  / kdma_free: /  { for (i = 1; i <= NF; i++) if ($i ~ /^addr=/) { a = substr($i, 6)
                    if (a in live) { delete live[a]; f++ } } }
  END { left = 0; for (a in live) { print "not freed: " a " size " live[a]; left++ }
        printf "dma_alloc_attrs: %d returned memory, %d freed, %d not freed\n", n, f, left }
' $T/trace
