"""The Python cpio writer, read back by an independent reader (busybox cpio)."""

import subprocess
from pathlib import Path

from kedr_build.vm.initramfs import Initramfs


def test_busybox_cpio_reads_back_what_we_wrote(tmp_path: Path) -> None:
    ramfs = Initramfs()
    ramfs.add_bytes("kedr/job.sh", b"echo hi\n", 0o755)
    ramfs.add_bytes("lib/modules/x/kernel/a.ko", b"\x7fELF" + bytes(range(256)) * 3)
    ramfs.add_symlink("bin/sh", "busybox")
    image = tmp_path / "initrd.cpio"
    ramfs.write(image)
    assert image.stat().st_size % 512 == 0
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["busybox", "cpio", "-i", "-d", "-F", str(image)], cwd=out, check=True,
                   capture_output=True)
    assert (out / "kedr/job.sh").read_bytes() == b"echo hi\n"
    assert (out / "kedr/job.sh").stat().st_mode & 0o777 == 0o755
    assert (out / "lib/modules/x/kernel/a.ko").read_bytes() == b"\x7fELF" + bytes(range(256)) * 3
    assert (out / "bin/sh").readlink() == Path("busybox")


def test_parent_directories_come_first() -> None:
    ramfs = Initramfs()
    ramfs.add_bytes("a/b/c/file", b"x")
    assert ramfs.paths() == ["a", "a/b", "a/b/c", "a/b/c/file"]
