# Runs in the guest while kedr_cycleleak is loaded.
set -e
echo hello > /dev/kedr_cycleleak
echo again > /dev/kedr_cycleleak
