"""A labgrid environment whose target ``main`` is a QEMU guest of a pinned kernel,
driven by labgrid's own drivers rather than by our runner: ``QEMUDriver`` boots the
kernel (the image our runner boots) with an initramfs of busybox whose /init
mounts what the QEMU guest's does and then offers a login on the serial console,
``ShellDriver`` logs in there, and ``ShellStrategy`` powers it on (TARGET=labgrid:
does what it does on a lab machine). The guest lives as long as the process that
opened the environment.
"""

from __future__ import annotations

from pathlib import Path

from kedr_build.kernel import hosttools
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.initramfs import Initramfs

PROMPT = "kedr-lab# "
LOGIN = "kedr-lab login: "

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /sbin && ln -s /bin/busybox /sbin/modprobe
export PATH=/bin:/sbin HOME=/root
mkdir -p /proc /sys /dev /tmp /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
cd /root
while true; do
  printf '{LOGIN}'
  read user || sleep 1
  [ "$user" = root ] && PS1='{PROMPT}' sh -i
done
"""


def initramfs(kernel: ProvisionedKernel, workdir: Path) -> Path:
    """The lab machine's initramfs (busybox, /init offering a login on the console)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ramfs = Initramfs()
    ramfs.add_file("bin/busybox", hosttools.static_busybox(), 0o755)
    ramfs.add_bytes("init", INIT.encode(), 0o755)
    ramfs.add_dir(f"lib/modules/{kernel.release}")
    initrd = workdir / "initramfs.cpio"
    ramfs.write(initrd)
    return initrd


def environment(kernel: ProvisionedKernel, workdir: Path, boot_args: str = "") -> Path:
    """Write the guest's initramfs and the environment file into ``workdir``; the
    environment file's path. ``boot_args``: more of the kernel's command line."""
    initrd = initramfs(kernel, workdir)
    qemu = hosttools.require(["qemu-system-x86_64"])["qemu-system-x86_64"]
    cfg = kernel.qemu
    env = workdir / "lab.yaml"
    env.write_text(f"""targets:
  main:
    drivers:
      QEMUDriver:
        qemu_bin: qemu
        machine: pc
        cpu: {cfg.cpu}
        memory: {cfg.memory_mb}M
        kernel: kernel
        extra_args: "-accel tcg,thread=single -smp 1 -nodefaults -initrd {initrd}"
        boot_args: "{" ".join([cfg.cmdline, *boot_args.split()])}"
      ShellDriver:
        prompt: '{PROMPT}'
        login_prompt: '{LOGIN}'
        username: root
        login_timeout: 600
      ShellStrategy: {{}}
tools:
  qemu: {qemu}
images:
  kernel: {kernel.boot_image}
""")
    return env
