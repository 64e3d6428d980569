# Format a RAM disk (brd) with FAT, write a file and a directory, remount, read back.
set -e
# A step that fails (a fault injected by a sweep) still leaves nothing mounted,
# so vfat can be unloaded: the exit status stays the failed step's.
trap 'umount /mnt 2>/dev/null || true' EXIT
modprobe brd rd_nr=1 rd_size=8192
mkdosfs /dev/ram0 >/dev/null
mkdir -p /mnt
mount -t vfat /dev/ram0 /mnt
echo "kedr was here" > /mnt/note.txt
mkdir /mnt/dir
ls -l /mnt
umount /mnt
mount -t vfat /dev/ram0 /mnt
cat /mnt/note.txt
umount /mnt
