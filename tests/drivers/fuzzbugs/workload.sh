# Runs in the guest while kedr_fuzzbugs is loaded: what its users do (no ioctl).
set -e
echo hello > /dev/kedr_fz_copy
cat /dev/kedr_fz_copy
echo hello > /dev/kedr_fz_rare
