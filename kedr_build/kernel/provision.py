"""Provision a pinned kernel from Debian's archive into the cache.

``apt-get download`` fetches the exact packages named by the description,
``dpkg-deb -x`` unpacks them into a private root, and two fix-ups make the tree
usable from there: the headers Makefile includes the "-common" tree by an
absolute /usr/src path (rewritten to the cache), and ``depmod -b`` writes the
modules.dep that ``modprobe --show-depends`` needs (Debian generates it at
install time, the package does not ship it). Nothing touches the host's /boot
or /lib/modules. The result is built in a temporary directory and renamed into
place, so an interrupted download never looks provisioned.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kedr_build.kernel import hosttools
from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, KernelDescription, ProvisionedKernel, cache_dir, describe

STAMP = ".kedr-provisioned"


def kernel_root(desc: KernelDescription, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "kernels" / desc.name


def layout(desc: KernelDescription, root: Path | None = None) -> ProvisionedKernel:
    """Where the kernel's files are (or will be) once provisioned; nothing is fetched."""
    root = root or kernel_root(desc)
    rel = desc.release
    return ProvisionedKernel(
        description=desc,
        release=rel,
        kdir=root / "usr/src" / f"linux-headers-{rel}",
        vmlinuz=root / "boot" / f"vmlinuz-{rel}",
        modules_dir=root / "lib/modules" / rel,
        root=root,
    )


def ensure(name: str = DEFAULT_KERNEL, cache: Path | None = None,
           log: bool = True) -> ProvisionedKernel:
    """Return the pinned kernel, downloading it first if the cache lacks it."""
    desc = describe(name)
    root = kernel_root(desc, cache)
    if (root / STAMP).is_file():
        return layout(desc, root)
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
        _fix_headers_makefile(desc, new_root)
        if log:
            print("kedr-build:   depmod (modules.dep for in-tree dependencies)",
                  file=sys.stderr, flush=True)
        _run(["depmod", "-b", str(new_root), desc.release], "depmod")
        (new_root / STAMP).write_text(f"{desc.name} {desc.release}\n")
        if root.exists():
            shutil.rmtree(root)
        new_root.rename(root)
    kernel = layout(desc, root)
    # The fixed-up Makefile points into the temporary dir we renamed; fix again.
    _fix_headers_makefile(desc, root)
    return kernel


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
        raise KedrError(f"apt-get download for kernel {desc.name}: {reason} "
                        "(run 'apt-get update' first; the packages come from Debian bookworm "
                        "and bookworm-security)")


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
