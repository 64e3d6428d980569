# Bring up the dummy network device (dummy's init creates dummy0), send it traffic, bring it down.
set -e
ip link set dummy0 up
ip addr add 10.99.0.1/24 dev dummy0
ping -c 3 -W 1 10.99.0.2 >/dev/null 2>&1 || true   # dummy drops what it transmits
echo "dummy0 tx_packets: $(cat /sys/class/net/dummy0/statistics/tx_packets)"
ip link set dummy0 down
