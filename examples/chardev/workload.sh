# Runs in the guest while kedr_chardev is loaded.
set -e
echo "hello from the guest" > /dev/kedr_chardev
got=$(cat /dev/kedr_chardev)
echo "read back: $got"
[ "$got" = "hello from the guest" ]
