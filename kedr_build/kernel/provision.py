"""Provision a pinned kernel from Debian's archive into the cache.

``apt-get download`` fetches the exact packages named by the description,
``dpkg-deb -x`` unpacks them into a private root, and two fix-ups make the tree
usable from there: the headers Makefile includes the "-common" tree by an
absolute /usr/src path (rewritten to the cache), and ``depmod -b`` writes the
modules.dep that ``modprobe --show-depends`` needs (Debian generates it at
install time, the package does not ship it). Nothing touches the host's /boot
or /lib/modules. The result is built in a temporary directory and renamed into
place, so an interrupted download never looks provisioned. Before that,
:func:`check_tree` makes sure the packages are one kernel (image, modules and
headers of the description's release). On first use, the uncompressed
``boot/vmlinux-<release>`` is extracted for QEMU's faster PVH boot
(:mod:`kedr_build.kernel.vmlinux`).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kedr_build.kernel import hosttools, vmlinux
from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.filelock import locked
from kedr_build.kernel.descriptions import (DEFAULT_KERNEL, KernelDescription, ProvisionedKernel,
                                            kernelrelease, cache_dir, describe)

STAMP = ".kedr-provisioned"


def kernel_root(desc: KernelDescription, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "kernels" / desc.name


def is_provisioned(desc: KernelDescription, cache: Path | None = None) -> bool:
    return (kernel_root(desc, cache) / STAMP).is_file()


def layout(desc: KernelDescription, root: Path | None = None) -> ProvisionedKernel:
    """Where the kernel's files are (or will be) once provisioned; nothing is fetched."""
    root = root or kernel_root(desc)
    rel = desc.release
    vmlinux = root / "boot" / f"vmlinux-{rel}"
    return ProvisionedKernel(
        description=desc,
        release=rel,
        kdir=root / "usr/src" / f"linux-headers-{rel}",
        vmlinuz=root / "boot" / f"vmlinuz-{rel}",
        modules_dir=root / "lib/modules" / rel,
        root=root,
        vmlinux=vmlinux if vmlinux.is_file() else None,
    )


def ensure(name: str = DEFAULT_KERNEL, cache: Path | None = None,
           log: bool = True) -> ProvisionedKernel:
    """Return the pinned kernel, downloading it first if the cache lacks it."""
    return ensure_description(describe(name), cache, log)


def ensure_description(desc: KernelDescription, cache: Path | None = None,
                       log: bool = True) -> ProvisionedKernel:
    root = kernel_root(desc, cache)
    if (root / STAMP).is_file():
        return _with_vmlinux(layout(desc, root), log)
    # Two processes provisioning the same kernel (the xdist workers of one test
    # session) would each rename a tree over the other's: the second waits, then
    # finds it provisioned.
    with locked(root.parent / f".{desc.name}.lock"):
        if (root / STAMP).is_file():
            return _with_vmlinux(layout(desc, root), log)
        return _provision(desc, root, log)


def _provision(desc: KernelDescription, root: Path, log: bool) -> ProvisionedKernel:
    hosttools.require(["apt-get", "dpkg-deb", "depmod"])
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{desc.name}.", dir=root.parent) as tmp:
        tmpdir = Path(tmp)
        debs = tmpdir / "debs"
        debs.mkdir()
        new_root = tmpdir / "root"
        new_root.mkdir()
        if log:
            print(f"kedr-build: provisioning kernel {desc.name} ({desc.summary}) into {root}",
                  file=sys.stderr, flush=True)
        _download(desc, debs, log)
        for deb in sorted(debs.glob("*.deb")):
            if log:
                print(f"kedr-build:   unpacking {deb.name}", file=sys.stderr, flush=True)
            _run(["dpkg-deb", "-x", str(deb), str(new_root)], f"unpacking {deb.name}")
        check_tree(desc, new_root)
        _fix_headers_makefile(desc, new_root)
        if log:
            print("kedr-build:   depmod (modules.dep for in-tree dependencies)",
                  file=sys.stderr, flush=True)
        _run(["depmod", "-b", str(new_root), desc.release], "depmod")
        (new_root / STAMP).write_text(f"{desc.name} {desc.release}\n")
        if root.exists():
            shutil.rmtree(root)
        new_root.rename(root)
    # The fixed-up Makefile points into the temporary dir we renamed; fix again.
    _fix_headers_makefile(desc, root)
    return _with_vmlinux(layout(desc, root), log)


def _with_vmlinux(kernel: ProvisionedKernel, log: bool) -> ProvisionedKernel:
    """Extract boot/vmlinux-<release> from vmlinuz once, if QEMU can boot it (PVH note).

    Done on first use, also for kernels provisioned before this existed; a marker
    file remembers a kernel that cannot, so the work is not repeated."""
    assert kernel.vmlinuz is not None
    target = kernel.vmlinuz.with_name(f"vmlinux-{kernel.release}")
    unbootable = kernel.vmlinuz.with_name(f".vmlinux-{kernel.release}.unbootable")
    if not target.is_file() and not unbootable.is_file() and kernel.vmlinuz.is_file():
        if log:
            print(f"kedr-build:   extracting {target.name} from {kernel.vmlinuz.name} "
                  "(PVH boot)", file=sys.stderr, flush=True)
        elf = vmlinux.extract(kernel.vmlinuz)
        if elf is not None and vmlinux.has_pvh_entry(elf):
            write_atomic(target, elf)
        else:
            write_atomic(unbootable, b"no PVH entry or unknown compression: boot vmlinuz\n")
    return dataclasses.replace(kernel, vmlinux=target if target.is_file() else None)


def check_tree(desc: KernelDescription, root: Path) -> None:
    """The unpacked packages make one kernel: the image, its modules and the headers
    are all for ``desc.release``. Headers of another build would compile modules the
    image refuses ("disagrees about version of symbol module_layout"); say so here,
    naming what was expected."""
    where = f"kernel {desc.name} ({describe_path(desc)})"
    kdir = root / "usr/src" / f"linux-headers-{desc.release}"
    if not kdir.is_dir():
        found = sorted(p.name.removeprefix("linux-headers-")
                       for p in (root / "usr/src").glob("linux-headers-*")
                       if (p / "Module.symvers").is_file())
        raise KedrError(f"{where}: expected headers for release {desc.release}, the packages "
                        f"hold headers for {', '.join(found) or 'no release'}")
    headers_release = kernelrelease(kdir)
    if headers_release != desc.release:
        raise KedrError(f"{where}: expected headers for release {desc.release}, "
                        f"{kdir.name} says {headers_release or 'nothing'} "
                        "(include/generated/utsrelease.h)")
    images = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if desc.release not in images:
        raise KedrError(f"{where}: expected the image boot/vmlinuz-{desc.release}, the packages "
                        f"hold {', '.join(images) or 'no image'}: headers and image do not match")
    if not (root / "lib/modules" / desc.release / "modules.order").is_file():
        raise KedrError(f"{where}: expected modules in lib/modules/{desc.release}, "
                        "the image package has none")


def describe_path(desc: KernelDescription) -> str:
    return f"kedr_build/kernel/pinned/{desc.name}.toml"


def _download(desc: KernelDescription, dest: Path, log: bool) -> None:
    specs = [p.name if p.newer_ok else f"{p.name}={p.version}" for p in desc.packages]
    if log:
        print(f"kedr-build:   apt-get download {' '.join(specs)}", file=sys.stderr, flush=True)
    proc = subprocess.run(["apt-get", "download", *specs], cwd=dest,
                          stdout=sys.stderr if log else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        reason = next((ln for ln in proc.stderr.splitlines() if ln.startswith("E:")),
                      proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
        raise KedrError(f"kernel {desc.name} ({describe_path(desc)}): expected packages "
                        f"{' '.join(specs)}; apt-get download: {reason} (run 'apt-get update' "
                        "first; they come from Debian bookworm and bookworm-security)")


def _fix_headers_makefile(desc: KernelDescription, root: Path) -> None:
    makefile = root / "usr/src" / f"linux-headers-{desc.release}" / "Makefile"
    if not makefile.is_file():
        raise KedrError(f"{makefile}: missing after unpacking the headers package")
    lines = []
    for line in makefile.read_text().splitlines():
        if line.startswith("include ") and "/usr/src/" in line:
            common = line.split()[-1]
            tail = common[common.index("/usr/src/") + 1:]
            line = f"include {root / tail}"
        lines.append(line)
    write_atomic(makefile, ("\n".join(lines) + "\n").encode())


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise KedrError(f"{what} failed: {proc.stderr.strip().splitlines()[-1:]}")
