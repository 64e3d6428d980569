# Runs in the guest while kedr_racefree is loaded: open and close it (one at a time).
set -e
exec 3< /dev/kedr_racefree
exec 3<&-
