# Unbind the device at 00:04.0 from its stock driver and bind it again, so its probe
# runs with the fault armed (it was probed at boot, before kedr_stock_fault loaded).
a=0000:00:04.0
p=/sys/bus/pci/devices/$a
drv=$(basename "$(readlink $p/driver)")
echo $a > /sys/bus/pci/drivers/$drv/unbind && echo "unbound from $drv"
echo $a > /sys/bus/pci/drivers/$drv/bind && echo "bound again" || echo "the probe failed"
