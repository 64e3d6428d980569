"""Render load.sh / unload.sh for a patched driver and its replacement module.

``load.sh`` (POSIX sh, busybox too) refuses to run on a kernel other than the
one the modules were built for (vermagic's release against ``uname -r``),
modprobes the in-tree modules the driver depends on, inserts the replacement
module, then the patched driver(s), passing its own arguments to the last
driver. A failed step unloads what the script loaded, shows the kernel's last
words (dmesg) and exits 1. ``unload.sh`` undoes it in reverse, unloading only
the in-tree modules ``load.sh`` itself loaded (recorded in a state file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedr_build.atomic import write_atomic
from kedr_build.errors import KedrError
from kedr_build.ko.module import ModuleRef, load_order
from kedr_build.resources import template_env


@dataclass(frozen=True)
class ModuleFile:
    path: str      # relative to the scripts' directory
    name: str      # module name (as in /sys/module)


@dataclass(frozen=True)
class LoadPlan:
    release: str                    # the kernel release the modules are built for
    replacement: ModuleFile
    drivers: tuple[ModuleFile, ...]  # load order; load.sh's arguments go to the last
    intree: tuple[str, ...] = ()    # in-tree modules to modprobe first


@dataclass(frozen=True)
class LoadScripts:
    load: str
    unload: str


def plan_for(replacement_ko: Path, driver_kos: Sequence[Path], script_dir: Path) -> LoadPlan:
    """Read names, vermagic and dependencies from the built modules.

    The drivers are loaded in :func:`~kedr_build.ko.module.load_order`; the in-tree
    modules to load first are their ``depends=`` that are neither the replacement
    module nor one of the drivers.
    """
    if not driver_kos:
        raise KedrError("load script: no patched driver to load")
    replacement = ModuleRef.read(replacement_ko)
    drivers, intree = load_order(ModuleRef.read(ko) for ko in driver_kos)
    releases = {}
    for ref in (replacement, *drivers):
        if ref.release is None:
            raise KedrError(f"{ref.path}: .modinfo lacks vermagic=")
        releases[ref.path] = ref.release
    if len(set(releases.values())) != 1:
        listing = ", ".join(f"{ko.name}: {rel}" for ko, rel in releases.items())
        raise KedrError(f"load script: the modules are built for different kernels ({listing})")

    def file(ref: ModuleRef) -> ModuleFile:
        return ModuleFile(path=os.path.relpath(ref.path, script_dir), name=ref.name)

    return LoadPlan(release=releases[replacement.path], replacement=file(replacement),
                    drivers=tuple(file(d) for d in drivers),
                    intree=tuple(d for d in intree if d != replacement.name))


def render(plan: LoadPlan) -> LoadScripts:
    env = template_env()
    context: dict[str, Any] = {"release": plan.release, "replacement": plan.replacement,
                               "drivers": plan.drivers, "intree": plan.intree}
    return LoadScripts(load=env.get_template("load.sh.j2").render(context),
                       unload=env.get_template("unload.sh.j2").render(context))


def write(plan: LoadPlan, script_dir: Path) -> tuple[Path, Path]:
    """Write load.sh and unload.sh (mode 755) into script_dir."""
    scripts = render(plan)
    script_dir.mkdir(parents=True, exist_ok=True)
    paths = (script_dir / "load.sh", script_dir / "unload.sh")
    for path, text in zip(paths, (scripts.load, scripts.unload)):
        write_atomic(path, text.encode(), mode=0o755)
    return paths
