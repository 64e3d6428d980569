# Free pages (/proc/vmstat nr_free_pages) around 3 link up/down cycles of the NIC at
# 00:04.0 under its stock driver: the receive ring's pages are taken at each up and,
# if the driver gives them back, returned at each down.
a=/sys/bus/pci/devices/0000:00:04.0
ifc=$(ls $a/net)
free() { awk '/^nr_free_pages/ {print $2}' /proc/vmstat; }
echo "free pages before: $(free)"
for i in 1 2 3; do
  ip link set "$ifc" up || exit 1; sleep 1; echo "free pages after up $i: $(free)"
  ip link set "$ifc" down || exit 1; sleep 1; echo "free pages after down $i: $(free)"
done
