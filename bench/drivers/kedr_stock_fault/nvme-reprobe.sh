# nvme probed at boot (modprobe, before kedr_stock_fault armed its kprobe): unbind and
# bind it with the fault armed (the probe fails), then bind it once more. A probe whose
# error path releases its controller frees its instance number (nvme_free_ctrl:
# ida_free), so the next controller is nvme0 again; a leaked one keeps it.
a=0000:00:04.0
echo "controllers at boot: $(ls /sys/class/nvme)"
echo $a > /sys/bus/pci/drivers/nvme/unbind
echo $a > /sys/bus/pci/drivers/nvme/bind && echo "probe with the fault: bound" ||
  echo "probe with the fault: failed"
echo $a > /sys/bus/pci/drivers/nvme/bind || exit 1
i=0; while [ -z "$(ls /sys/class/nvme)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "controllers after a good probe: $(ls /sys/class/nvme)"
