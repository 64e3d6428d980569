"""Pinned kernels as data: one TOML description per kernel in kedr_build/kernel/pinned/.

A description says which Debian packages make up the kernel and how to boot it
in QEMU; :mod:`kedr_build.kernel.provision` turns it into a :class:`ProvisionedKernel`
(paths inside the cache). Adding a kernel (Debian's 6.12) is adding a file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from kedr_build.errors import KedrError

DEFAULT_KERNEL = "debian-6.1"
_DESCRIPTIONS = Path(__file__).with_name("pinned")


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    newer_ok: bool = False


@dataclass(frozen=True)
class QemuConfig:
    accel: str
    cpu: str
    memory_mb: int
    cmdline: str
    # Guest CPUs. 2 by default: the payloads' locking and per-CPU counters only
    # meet concurrency on SMP (multi-threaded TCG runs vCPUs in parallel).
    cpus: int = 2


@dataclass(frozen=True)
class KernelDescription:
    name: str
    release: str
    arch: str
    summary: str
    packages: tuple[DebPackage, ...]
    qemu: QemuConfig


@dataclass(frozen=True)
class ProvisionedKernel:
    """A kernel whose files are on disk: the build tree and what boots it."""

    description: KernelDescription | None
    release: str
    kdir: Path
    vmlinuz: Path | None = None
    modules_dir: Path | None = None
    root: Path | None = None
    vmlinux: Path | None = None       # uncompressed, with a PVH entry: boots faster

    @property
    def boot_image(self) -> Path | None:
        """What QEMU's -kernel gets: vmlinux when the kernel has a PVH entry, else vmlinuz."""
        return self.vmlinux or self.vmlinuz

    @property
    def symvers(self) -> Path:
        return self.kdir / "Module.symvers"

    @property
    def qemu(self) -> QemuConfig:
        if self.description is None:
            return _DEFAULT_QEMU
        return self.description.qemu


_DEFAULT_QEMU = QemuConfig(accel="tcg,thread=single", cpu="max", memory_mb=512,
                           cmdline="console=ttyS0 panic=-1 rdinit=/init loglevel=7 no_timer_check")


def available() -> list[str]:
    return sorted(p.stem for p in _DESCRIPTIONS.glob("*.toml"))


def by_release(release: str) -> str | None:
    """The pinned kernel with this release (uname -r), if one is."""
    return next((n for n in available() if describe(n).release == release), None)


def describe(name: str = DEFAULT_KERNEL) -> KernelDescription:
    path = _DESCRIPTIONS / f"{name}.toml"
    if not path.is_file():
        raise KedrError(f"unknown kernel {name!r}; known kernels: {', '.join(available())}")
    try:
        data = tomllib.loads(path.read_text())
        q = data["qemu"]
        return KernelDescription(
            name=data["name"],
            release=data["release"],
            arch=data["arch"],
            summary=data["summary"],
            packages=tuple(DebPackage(p["name"], p["version"], bool(p.get("newer_ok", False)))
                           for p in data["packages"]),
            qemu=QemuConfig(accel=q["accel"], cpu=q["cpu"], memory_mb=int(q["memory_mb"]),
                            cmdline=q["cmdline"], cpus=int(q.get("cpus", 2))),
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
        raise KedrError(f"{path}: bad kernel description: {e}") from None


def cache_dir() -> Path:
    """Where pinned kernels live: $KEDR_CACHE, else ~/.cache/kedr-build."""
    env = os.environ.get("KEDR_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "kedr-build"


def from_kdir(kdir: str | os.PathLike[str]) -> ProvisionedKernel:
    """A kernel given by the user as a build tree (KDIR=...)."""
    path = Path(kdir).resolve()
    if not (path / "Makefile").is_file():
        raise KedrError(f"KDIR={kdir}: not a kernel build tree (no Makefile)")
    release = kernelrelease(path)
    if release is None:
        raise KedrError(f"KDIR={kdir}: not a configured kernel build tree "
                        "(no include/config/kernel.release or include/generated/utsrelease.h)")
    # /lib/modules/<rel>/build -> its modules dir; /boot/vmlinuz-<rel> when present.
    modules_dir = path.parent if path.name == "build" and (path.parent / "modules.order").exists() \
        else None
    vmlinuz = Path(f"/boot/vmlinuz-{release}")
    return ProvisionedKernel(description=None, release=release, kdir=path,
                             vmlinuz=vmlinuz if vmlinuz.is_file() else None,
                             modules_dir=modules_dir)


def kernelrelease(kdir: Path) -> str | None:
    # utsrelease.h first: it is what vermagic is made of. Debian's headers carry an
    # upstream "6.1.192" in include/config/kernel.release but UTS_RELEASE "6.1.0-56-amd64".
    uts = kdir / "include/generated/utsrelease.h"
    if uts.is_file():
        m = re.search(r'UTS_RELEASE\s+"([^"]+)"', uts.read_text())
        if m:
            return m.group(1)
    rel = kdir / "include/config/kernel.release"
    if rel.is_file():
        return rel.read_text().strip()
    return None
