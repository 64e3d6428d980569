"""Running it: initramfs, QEMU, the guest runner, console and trace parsing, printing."""
