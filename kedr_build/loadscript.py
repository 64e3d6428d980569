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
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .errors import KedrError
from .generate import template_env


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


def modinfo(ko: Path) -> dict[str, str]:
    """The .modinfo key=value pairs of a module (the first value of a repeated key)."""
    from .inspect import inspect_module

    info: dict[str, str] = {}
    for item in inspect_module(ko).modinfo:
        info.setdefault(item.key, item.value)
    return info


def plan_for(replacement_ko: Path, driver_kos: Sequence[Path], script_dir: Path) -> LoadPlan:
    """Read names, vermagic and dependencies from the built modules.

    The in-tree modules to load are the drivers' ``depends=`` that are neither
    the replacement module nor one of the drivers, in order of appearance.
    """
    if not driver_kos:
        raise KedrError("load script: no patched driver to load")
    infos = {ko: modinfo(ko) for ko in (replacement_ko, *driver_kos)}
    releases = {}
    for ko, info in infos.items():
        if "vermagic" not in info or "name" not in info:
            raise KedrError(f"{ko}: .modinfo lacks vermagic= or name=")
        releases[ko] = info["vermagic"].split()[0]
    if len(set(releases.values())) != 1:
        listing = ", ".join(f"{ko.name}: {rel}" for ko, rel in releases.items())
        raise KedrError(f"load script: the modules are built for different kernels ({listing})")

    def file(ko: Path) -> ModuleFile:
        return ModuleFile(path=os.path.relpath(ko, script_dir), name=infos[ko]["name"])

    ours = {infos[ko]["name"] for ko in infos}
    intree: list[str] = []
    for ko in driver_kos:
        for dep in filter(None, infos[ko].get("depends", "").split(",")):
            if dep not in ours and dep not in intree:
                intree.append(dep)
    return LoadPlan(release=releases[replacement_ko], replacement=file(replacement_ko),
                    drivers=tuple(file(ko) for ko in driver_kos), intree=tuple(intree))


def render(plan: LoadPlan) -> LoadScripts:
    env = template_env()
    env.filters["q"] = shlex.quote
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
