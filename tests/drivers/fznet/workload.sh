# Runs in the guest while kedr_fznet is loaded: what its users do (up, down; no ioctl).
set -e
ip link set kedrfz0 up
ip link set kedrfz0 down
