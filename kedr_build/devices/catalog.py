"""The device catalog as data: kedr_build/devices/catalog.toml, one table a device.

:func:`lookup` turns ``DEVICES=e1000,nvme`` into typed :class:`Device` entries; an
unknown name is one line listing the known ones (like an unknown KERNEL=).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedr_build.errors import KedrError

CATALOG = Path(__file__).with_name("catalog.toml")


@dataclass(frozen=True)
class KernelModules:
    """The in-tree modules of a device on one pinned kernel."""

    drivers: tuple[str, ...]     # any one of them binds the device
    requires: tuple[str, ...] = ()   # loaded before (controller, bus driver)
    uses: tuple[str, ...] = ()       # the workload needs them too


@dataclass(frozen=True)
class Device:
    name: str
    summary: str
    pci: str                              # vendor:device of the PCI function
    qemu: tuple[str, ...]                 # with {id} {slot} {disk}
    workload: str                         # POSIX sh (the kind's text from [workloads])
    modalias: tuple[str, ...] = ()
    modules: KernelModules = KernelModules(())
    by_kernel: Mapping[str, KernelModules] = field(default_factory=dict)

    def modules_for(self, kernel: str | None) -> KernelModules:
        """The device's in-tree modules on the pinned kernel ``kernel`` (its name)."""
        if kernel is not None and kernel in self.by_kernel:
            return self.by_kernel[kernel]
        return self.modules

    @property
    def qemu_id(self) -> str:
        """QEMU's id of the device: a letter first, letters, digits, '_' after."""
        return self.name.replace("-", "_")

    @property
    def uses_disk(self) -> bool:
        return any("{disk}" in a for a in self.qemu)


def _names(data: Any, where: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise KedrError(f"{where}: must be a list of module names")
    return tuple(data)


def _modules(table: Mapping[str, Any], where: str,
             base: KernelModules | None = None) -> KernelModules:
    def get(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        return _names(table[key], f"{where}.{key}") if key in table else default
    base = base or KernelModules(())
    return KernelModules(drivers=get("drivers", base.drivers),
                         requires=get("requires", base.requires),
                         uses=get("uses", base.uses))


@functools.cache
def load(path: Path = CATALOG) -> dict[str, Device]:
    """Every device of the catalog file, by name (in the file's order)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise KedrError(f"{path}: bad device catalog: {e}") from None
    workloads = data.pop("workloads", {})
    devices: dict[str, Device] = {}
    for name, t in data.items():
        where = f"{path}: [{name}]"
        try:
            kind = t["workload"]
            if kind not in workloads:
                raise KedrError(f"{where}: workload {kind!r} is not in [workloads]")
            mods = _modules(t, where)
            devices[name] = Device(
                name=name, summary=str(t["summary"]), pci=str(t["pci"]).lower(),
                qemu=_names(t["qemu"], f"{where}.qemu"), workload=str(workloads[kind]),
                modalias=_names(t.get("modalias", []), f"{where}.modalias"),
                modules=mods,
                by_kernel={k: _modules(v, f"{where}.kernels.{k}", mods)
                           for k, v in t.get("kernels", {}).items()})
        except (KeyError, TypeError, AttributeError) as e:
            raise KedrError(f"{where}: bad entry ({e!r})") from None
    return devices


def known() -> list[str]:
    return list(load())


def lookup(text: str, var: str = "DEVICES") -> tuple[Device, ...]:
    """``e1000,nvme`` -> the devices, in that order; each name once."""
    catalog = load()
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in catalog:
            raise KedrError(f"{var}={text}: unknown device {n!r}; known: {', '.join(catalog)}")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise KedrError(f"{var}={text}: device {dup!r} given twice")
    return tuple(catalog[n] for n in names)
