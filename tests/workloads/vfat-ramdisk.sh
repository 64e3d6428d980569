# Format a RAM disk (brd) with FAT, write a file and a directory, remount, read back.
set -e
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
