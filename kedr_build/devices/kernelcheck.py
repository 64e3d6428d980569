"""A device's drivers against one kernel's module tree (modules.dep, modules.alias).

Used before a run (a device the kernel has no driver for is one line, not a guest
that silently binds nothing) and by the catalog test against both pinned kernels.
"""

from __future__ import annotations

import fnmatch
import functools
from pathlib import Path

from kedr_build.devices.catalog import Device
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.names import module_name


def _norm(name: str) -> str:
    return name.replace("-", "_")


@functools.cache
def _modules(modules_dir: Path) -> frozenset[str]:
    dep = modules_dir / "modules.dep"
    try:
        text = dep.read_text()
    except OSError as e:
        raise KedrError(f"{dep}: cannot read ({e.strerror})") from None
    return frozenset(module_name(Path(line.split(":", 1)[0])) for line in text.splitlines()
                     if ":" in line)


@functools.cache
def _aliases(modules_dir: Path) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.alias").read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias":
            out.setdefault(_norm(words[2]), []).append(words[1])
    return {m: tuple(p) for m, p in out.items()}


@functools.cache
def _builtin(modules_dir: Path) -> frozenset[str]:
    try:
        text = (modules_dir / "modules.builtin").read_text()
    except FileNotFoundError:
        return frozenset()
    return frozenset(module_name(Path(line)) for line in text.split())


def is_builtin(kernel: ProvisionedKernel, name: str) -> bool:
    """Part of vmlinux on this kernel (virtio_pci is on Debian's 6.12, a module on 6.1):
    read from its modules.builtin, never from its version."""
    return _norm(name) in _builtin(_dir(kernel))


def _dir(kernel: ProvisionedKernel) -> Path:
    if kernel.modules_dir is None:
        raise KedrError(f"kernel {kernel.release}: no module tree (DEVICES= needs the "
                        "kernel's own drivers)")
    return kernel.modules_dir


def has_module(kernel: ProvisionedKernel, name: str) -> bool:
    """A loadable module of the kernel, or built into it."""
    return _norm(name) in _modules(_dir(kernel)) or is_builtin(kernel, name)


def alias_matches(kernel: ProvisionedKernel, module: str, modalias: str) -> bool:
    """Whether ``module``'s modules.alias patterns match ``modalias`` (as kmod's fnmatch)."""
    return any(fnmatch.fnmatchcase(modalias, p)
               for p in _aliases(_dir(kernel)).get(_norm(module), ()))


def kernel_name(kernel: ProvisionedKernel) -> str | None:
    return kernel.description.name if kernel.description is not None else None


def missing(device: Device, kernel: ProvisionedKernel) -> list[str]:
    """The device's in-tree modules this kernel does not have."""
    mods = device.modules_for(kernel_name(kernel))
    return [m for m in (*mods.requires, *mods.drivers, *mods.uses) if not has_module(kernel, m)]


def check(devices: tuple[Device, ...], kernel: ProvisionedKernel, var: str) -> None:
    for d in devices:
        lost = missing(d, kernel)
        if lost:
            raise KedrError(f"{var}: kernel {kernel.release} has no driver for {d.name} "
                            f"(no {', '.join(lost)} in its modules)")
