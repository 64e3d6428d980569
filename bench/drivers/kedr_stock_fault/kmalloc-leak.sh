# Probe the device at 00:04.0 again (unbind from its stock driver, bind) with kprobe
# events on __kmalloc_noprof's return (value and caller) and kfree, unbind it again
# if it bound, and list what a module's code allocated and did not free: nothing
# when probe and remove() match (the same run with no fault), and with a fault armed
# in the probe, what its error path left behind. (6.12's name; 6.1's is __kmalloc.)
T=/sys/kernel/tracing
[ -e $T/kprobe_events ] || mount -t tracefs nodev $T
echo 'r:km_ret __kmalloc_noprof ret=$retval' >> $T/kprobe_events || exit 1
echo 'p:km_free kfree addr=%di' >> $T/kprobe_events || exit 1
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
  / km_ret: / && /\] <- / { ret = $NF; sub(/^ret=/, "", ret)
                  if (ret != "0x0") { live[ret] = $6; n++ } }
  / km_free: /  { a = $NF; sub(/^addr=/, "", a); if (a in live) { delete live[a]; f++ } }
  END { left = 0; for (a in live) { print "not freed: " a " from " live[a]; left++ }
        printf "__kmalloc_noprof from modules: %d returned memory, %d freed, %d not freed\n", n, f, left }
' $T/trace
