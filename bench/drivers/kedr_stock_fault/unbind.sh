# Unbind the device at 00:04.0 from its stock driver, so its remove() runs in this
# boot (the runner unloads only the driver under test, here kedr_stock_fault).
a=0000:00:04.0
p=/sys/bus/pci/devices/$a
drv=$(basename "$(readlink $p/driver)")
echo $a > /sys/bus/pci/drivers/$drv/unbind && echo "unbound from $drv"
